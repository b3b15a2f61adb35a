"""SRL decomposition: an expert solution of N numbered steps becomes N step instances.

The canonical step format is one step per numbered line, `N. **Title**: body`; a body may run over
several lines and continues until the next step. Instance k shows the problem and the expert's steps
1..k-1 and asks for step k, whose text as written is the target of the SRL reward.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


class StepParseError(ValueError):
    """A solution that is not a well-formed list of numbered, titled steps."""


@dataclass(frozen=True)
class Step:
    """One expert step: its number, bold title, body, and the step exactly as written."""

    number: int
    title: str
    body: str
    text: str


@dataclass(frozen=True)
class DecomposeStats:
    """What a decomposition produced: `trajectories` parsed, step `instances`, traces `quarantined`."""

    trajectories: int
    instances: int
    quarantined: int


_NUMBERED = re.compile(r"(\d+)\.[ \t]+(.*)")
_TITLED = re.compile(r"\*\*(.+?)\*\*(.*)")
_MAX_VALUE_CHARS = 200


def truncate(value: object, limit: int = _MAX_VALUE_CHARS) -> str:
    """`repr(value)` cut to `limit` characters, for naming a bad value in an error or a quarantine."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_step(number: int, title: str, body: str) -> str:
    """One step in the canonical format, `N. **Title**: body`."""
    title, body = title.strip(), body.strip()
    if not title or "\n" in title or "**" in title:
        raise StepParseError(f"step {number}: title {title!r} must be one line without '**'")
    if not body:
        raise StepParseError(f"step {number} ({title!r}) has an empty body")
    return f"{number}. **{title}**: {body}"


def _is_step_start(line: str, expected: int) -> bool:
    # A bold-titled numbered line always starts a step (so a skipped number is caught); an untitled
    # one only when it carries the next number, so a numbered list inside a body stays body text.
    match = _NUMBERED.fullmatch(line)
    if match is None:
        return False
    return int(match.group(1)) == expected or match.group(2).startswith("**")


def _build_step(lines: list[str], expected: int) -> Step:
    number_text, rest = _NUMBERED.fullmatch(lines[0]).groups()
    number = int(number_text)
    if number != expected:
        raise StepParseError(
            f"steps must be numbered 1..N consecutively: found {number} where {expected} belongs"
        )
    titled = _TITLED.fullmatch(rest.strip())
    if titled is None:
        raise StepParseError(f"step {number} has no **Title**: {lines[0]!r}")
    title = titled.group(1).strip().rstrip(":").strip()
    if not title:
        raise StepParseError(f"step {number} has an empty **Title**: {lines[0]!r}")
    first = titled.group(2).strip()
    body = "\n".join([first.removeprefix(":").strip(), *lines[1:]]).strip()
    if not body:
        raise StepParseError(f"step {number} ({title!r}) has an empty body")
    return Step(number=number, title=title, body=body, text="\n".join(lines).rstrip())


def parse_steps(solution: str) -> list[Step]:
    """The numbered steps of a canonical solution; StepParseError says what is malformed."""
    groups: list[list[str]] = []
    for line in solution.splitlines():
        if _is_step_start(line, len(groups) + 1):
            groups.append([line])
        elif groups:
            groups[-1].append(line)
        elif line.strip():
            raise StepParseError(
                f"text before step 1: {line!r:.80}; a solution starts with '1. **Title**: …'"
            )
    if not groups:
        raise StepParseError("no numbered steps ('1. **Title**: …') found")
    return [_build_step(lines, index) for index, lines in enumerate(groups, start=1)]


def _quarantine(trace: dict, index: int, value: object, reason: str) -> dict:
    record = trace.get("id", index) if isinstance(trace, dict) else index
    return {"record": record, "field": "solution", "value": truncate(value), "reason": reason, "row": trace}


def decompose(
    traces: Iterable[dict], include_next_title: bool = False
) -> tuple[list[dict], list[dict], DecomposeStats]:
    """Step instances of every trace whose solution parses; the others are quarantined with a reason.

    `include_next_title` adds the title of the step to be written to each instance (a hint the
    paper makes optional). `trajectories` counts the traces that produced instances, so
    trajectories + quarantined is the number of traces given.
    """
    instances: list[dict] = []
    quarantined: list[dict] = []
    trajectories = 0
    for index, trace in enumerate(traces):
        solution = trace.get("solution") if isinstance(trace, dict) else None
        if not isinstance(solution, str):
            reason = "solution must be a string of numbered steps"
            quarantined.append(_quarantine(trace, index, solution, reason))
            continue
        try:
            steps = parse_steps(solution)
        except StepParseError as error:
            quarantined.append(_quarantine(trace, index, solution, str(error)))
            continue
        trajectories += 1
        trace_id = str(trace.get("id", index))
        for step in steps:
            instances.append(
                {
                    "id": f"{trace_id}/step{step.number}",
                    "trace_id": trace_id,
                    "step_index": step.number,
                    "num_steps": len(steps),
                    "question": trace.get("question"),
                    "previous_steps": [s.text for s in steps[: step.number - 1]],
                    "next_title": step.title if include_next_title else None,
                    "target": step.text,
                    "answer": trace.get("answer"),
                    "split": trace.get("split"),
                }
            )
    return instances, quarantined, DecomposeStats(trajectories, len(instances), len(quarantined))
