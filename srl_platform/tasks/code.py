"""Write-a-function problems whose answer is a block of assert tests, checked by running them.

A built-in set of small problems in four skills (strings, lists, numbers, dicts), each with a
reference solution and 3-6 tests. A trace's `solution` explains the approach in numbered steps and
gives the complete function in a ```python block inside its last step; its `answer` is the tests,
which is what `verify` runs against the code of a completion (in `srl_platform.sandbox`, under a
time and memory limit).
"""

from __future__ import annotations

import hashlib
import random
import re
import textwrap

from srl_platform.sandbox import DEFAULT_LIMITS, SandboxLimits, run_tests, split_tests
from srl_platform.steps import format_step
from srl_platform.tasks.code_problems import PROBLEMS, Problem
from srl_platform.tasks.verdict import Verdict
from srl_platform.traces import assign_split, normalize_question

FAMILY = "code"
SKILLS = ("strings", "lists", "numbers", "dicts")
DIMENSIONS = ("skill", "num_tests")
"""Weakness dimensions: the kind of data the function works on, and how many tests check it."""
REASONS = ("no_code", "tests_failed", "timeout", "memory", "syntax", "error")
"""`Verdict.reason` values of `verify`; `error` also covers a process killed by a signal."""



def _question(problem: Problem) -> str:
    return f"{problem.description}\n\nSignature: `{problem.signature}`\n\nWrite the function."


def _solution(problem: Problem) -> str:
    """The approach steps, then a last step holding the whole function in a ```python block.

    The code sits inside one step's body: `parse_steps` keeps every line up to the next step
    heading, and no line of a function starts with `N. ` at column 0, so the block stays whole.
    """
    steps = [*problem.approach, ("Write the function",
                                 f"The complete function:\n```python\n{problem.solution}\n```")]
    return "\n".join(format_step(number, title, body) for number, (title, body) in enumerate(steps, start=1))


def generate_traces(
    n: int, seed: int, splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> list[dict]:
    """`n` of the built-in problems as canonical traces, in an order shuffled by `seed`.

    The same (n, seed) gives the same list, and a longer list starts with the shorter one. Splits
    follow a hash of the question text, as in every family.
    """
    if not 0 <= n <= len(PROBLEMS):
        raise ValueError(f"n={n}: the code family has {len(PROBLEMS)} built-in problems; "
                         f"ask for 0 to {len(PROBLEMS)}")
    order = list(range(len(PROBLEMS)))
    random.Random(seed).shuffle(order)
    traces = []
    for problem in (PROBLEMS[index] for index in order[:n]):
        question = _question(problem)
        digest = hashlib.sha256(normalize_question(question).encode("utf-8")).hexdigest()[:16]
        traces.append(
            {
                "id": f"{FAMILY}-{digest}",
                "question": question,
                "solution": _solution(problem),
                "answer": problem.tests,
                "source": f"generated:{FAMILY}",
                "split": assign_split(question, splits),
                "meta": {"family": FAMILY, "skill": problem.skill,
                         "num_tests": len(split_tests(problem.tests)), "entry_point": problem.entry_point},
            }
        )
    return traces


_OPENING_FENCE = re.compile(r"[ \t]*```[ \t]*([^`\s]*)[^`]*")
_CODE_LANGUAGES = ("", "python", "py", "python3")


def extract_code(completion: str) -> str | None:
    """The code of the last fenced ```python (or unlabelled ```) block that is closed and not
    blank, dedented; None when there is none.

    Fences pair up line by line, so a block in another language (```bash) is skipped whole, and
    a block left open at the end (a completion cut off mid-code) does not count.
    """
    found, language, lines = None, None, []
    for line in completion.splitlines():
        if language is None:
            if opening := _OPENING_FENCE.fullmatch(line):
                language, lines = opening.group(1).lower(), []
        elif line.strip() == "```":
            code = textwrap.dedent("\n".join(lines)).strip("\n")
            if language in _CODE_LANGUAGES and code.strip():
                found = code
            language = None
        else:
            lines.append(line)
    return found


_REASON_BY_OUTCOME = {"failed": "tests_failed", "error": "error", "killed": "error",
                      "syntax": "syntax", "timeout": "timeout", "memory": "memory"}


def verify(completion: str, answer: str, limits: SandboxLimits = DEFAULT_LIMITS) -> Verdict:
    """Run the code of `completion` (see `extract_code`) against the tests in `answer`.

    `reason` is one of `REASONS`; `detail` says how many tests passed and which one did not.
    ValueError when `answer` is not a block of test statements: that is the reference's fault.
    """
    total = len(split_tests(answer))
    code = extract_code(completion)
    if code is None:
        return Verdict(False, "no_code", "no closed ```python block in the completion")
    run = run_tests(code, answer, limits)
    if run.passed:
        return Verdict(True, None, f"{total}/{total} tests passed")
    return Verdict(False, _REASON_BY_OUTCOME[run.outcome],
                   f"{run.tests_passed}/{total} tests passed; {run.detail}")


def _tests_bucket(count: int) -> str:
    return "5+" if count >= 5 else str(count)


def dims(trace: dict) -> dict[str, str]:
    """The weakness-dimension values of a generated trace, from its `meta`."""
    meta = trace.get("meta") or {}
    count = meta.get("num_tests")
    return {"skill": str(meta.get("skill", "other")),
            "num_tests": _tests_bucket(count) if isinstance(count, int) else "?"}
