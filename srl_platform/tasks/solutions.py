"""Reading a model-written solution into canonical numbered steps.

Models number their steps in many ways (`1. **Title**: …`, `**Step 1: …**`, `### Step 1`,
`Step 1: …`, plain `1. …`). A solution counts as step-formatted when one of these styles numbers
its steps 1..N in order; it is then rewritten as canonical `N. **Title**: body` lines, which is
what every dataset downstream parses.
"""

from __future__ import annotations

import re

from srl_platform.steps import StepParseError, format_step, parse_steps
from srl_platform.traces import parse_attempt_steps

# Untitled headings, tried after the titled styles `parse_attempt_steps` knows.
_PLAIN_STYLES = (
    re.compile(r"[ \t]*Step[ \t]+(\d+)[ \t]*[:.)\-–—][ \t]*(.*)", re.IGNORECASE),
    re.compile(r"[ \t]*(\d+)[.)][ \t]+(.*)"),
)


def _plain_steps(text: str) -> list[tuple[str, str]]:
    lines = text.splitlines()
    for style in _PLAIN_STYLES:
        heads = [(i, m) for i, line in enumerate(lines) if (m := style.fullmatch(line.rstrip()))]
        if heads and [int(m.group(1)) for _, m in heads] == list(range(1, len(heads) + 1)):
            steps = []
            for k, (i, match) in enumerate(heads):
                end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
                steps.append((f"Step {k + 1}", "\n".join([match.group(2), *lines[i + 1 : end]]).strip()))
            return steps
    raise StepParseError("no numbered steps ('1. **Title**: …', 'Step 1: …' or '1. …') found")


def canonical_solution(text: str) -> str:
    """`text` rewritten as canonical numbered steps; StepParseError when it has no step outline.

    Titled outlines win over plain numbered lines, so a numbered list inside a titled step stays
    in its body. The rewrite is read back with `parse_steps` and must keep its step count.
    """
    try:
        _, steps = parse_attempt_steps(text)
    except StepParseError:
        steps = _plain_steps(text)
    canonical = "\n".join(format_step(i, title, body) for i, (title, body) in enumerate(steps, start=1))
    reread = parse_steps(canonical)
    if len(reread) != len(steps):
        raise StepParseError(f"{len(steps)} steps become {len(reread)} when re-read "
                             "(a body line looks like a step heading)")
    return canonical
