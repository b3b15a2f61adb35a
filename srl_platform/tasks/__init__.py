"""Pluggable task families: where problems come from, how a solution is checked, where models are weak.

A family bundles what the three-model collaboration (`srl_platform.collaboration`) and the
datasets need to know about one kind of task:

- `examples(n, seed)`: canonical expert traces (a generator, or a sample of a dataset file);
  they are both training data and the style examples shown to a proposer model;
- `parse_solution(text)`: a model's solution as canonical numbered steps (StepParseError if not);
- `verify(solution, reference)`: the programmatic verifier, a `Verdict` with a reason;
- `dimensions`, `dims(trace)`, `classify(question)`: the weakness dimensions, their values on a
  labelled trace, and the values readable from a problem's text alone (for proposed problems).

Shipped: `arithmetic` and `code` (generated, no data needed), `gsm8k` and `s1k` (read from a file
in that format, given as `source`; the data is never copied into the repository).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from srl_platform import prompts
from srl_platform.tasks import arithmetic, code
from srl_platform.tasks import math as math_tasks
from srl_platform.tasks.solutions import canonical_solution
from srl_platform.tasks.verdict import Verdict


@dataclass(frozen=True)
class TaskFamily:
    name: str
    description: str
    """What a proposer is asked to write, e.g. "a short math word problem with a whole-number answer"."""
    examples: Callable[[int, int], list[dict]]
    verify: Callable[[str, str], Verdict]
    dimensions: tuple[str, ...]
    dims: Callable[[dict], dict[str, str]]
    classify: Callable[[str], dict[str, str]] = lambda question: {}
    reference_label: str = "Answer"
    """How a proposal names what the verifier checks against: `Answer` (math) or `Tests` (code)."""
    solve_messages: Callable[[str, dict | None], list[dict]] = prompts.solve_messages
    """(question, worked example trace or None) → the solver's chat messages."""
    parse_solution: Callable[[str], str] = canonical_solution


FAMILY_NAMES = ("arithmetic", "code", "gsm8k", "s1k")
VERIFIERS: dict[str, Callable[[str, str], Verdict]] = {
    "arithmetic": math_tasks.verify_math, "code": code.verify,
    "gsm8k": math_tasks.verify_math, "s1k": math_tasks.verify_math,
}
"""Each family's verifier by name, for rows that say which family they belong to."""
GENERATED = ("arithmetic", "code")
"""Families whose examples are generated, so they need no `source`."""


def _steps_dims(trace: dict) -> dict[str, str]:
    return {"num_steps": math_tasks.num_steps_bucket(trace)}


def get_family(name: str, source: str | Path | None = None) -> TaskFamily:
    """The named family; `gsm8k` and `s1k` read their examples from `source` (a local file)."""
    if name not in FAMILY_NAMES:
        raise ValueError(f"task family {name!r} is unknown; use one of {FAMILY_NAMES}")
    if name in GENERATED and source is not None:
        raise ValueError(f"task family {name!r} generates its problems; it takes no source "
                         f"(got {str(source)!r})")
    if name not in GENERATED and source is None:
        raise ValueError(f"task family {name!r} reads its problems from a file: give its path as "
                         "source (e.g. GSM8K's train.jsonl)")
    if name == "arithmetic":
        return TaskFamily(
            name=name,
            description="a short multi-step arithmetic word problem whose answer is a whole number",
            examples=arithmetic.generate_traces, verify=math_tasks.verify_math,
            dimensions=arithmetic.DIMENSIONS, dims=arithmetic.dims, classify=arithmetic.classify)
    if name == "code":
        return TaskFamily(
            name=name,
            description="a small Python function to write, with assert tests that check it",
            examples=code.generate_traces, verify=code.verify, dimensions=code.DIMENSIONS,
            dims=code.dims, reference_label="Tests", solve_messages=prompts.code_solve_messages)
    if name == "gsm8k":
        return TaskFamily(
            name=name,
            description="a grade-school math word problem whose answer is a number",
            examples=math_tasks.gsm8k_examples(source), verify=math_tasks.verify_math,
            dimensions=("num_steps",), dims=_steps_dims)
    return TaskFamily(
        name=name,
        description="a competition-style math problem with a single final answer",
        examples=math_tasks.s1k_examples(source), verify=math_tasks.verify_math,
        dimensions=("num_steps",), dims=_steps_dims)


def generate(family: str, n: int, seed: int) -> list[dict]:
    """`n` traces of a generated family (`arithmetic`, `code`), deterministic in (n, seed)."""
    if family not in GENERATED:
        raise ValueError(f"task family {family!r} does not generate problems; use one of {GENERATED}")
    return get_family(family).examples(n, seed)
