"""Math task families: checking a written solution, and the dataset-backed GSM8K and s1K families.

A math solution verifies when its final answer equals the reference under `math-verify` (the
RLVR outcome reward) and, where it writes equations `a op b = c` between plain numbers, every one
of them is arithmetically true: a lucky final number after wrong working is not an expert trace.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction
from pathlib import Path

from srl_platform.rewards import outcome_reward
from srl_platform.steps import parse_steps
from srl_platform.tasks.verdict import Verdict
from srl_platform.traces import read_gsm8k, read_s1k

_NUMBER = r"\$?(-?\d[\d,]*(?:\.\d+)?)"
_EQUATION = re.compile(r"(?<![\d.,])" + _NUMBER + r"\s*([+\-−×x*÷/])\s*" + _NUMBER + r"\s*=\s*"
                       + _NUMBER)
_OPS = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "−": lambda a, b: a - b,
    "×": lambda a, b: a * b, "x": lambda a, b: a * b, "*": lambda a, b: a * b,
    "÷": lambda a, b: a / b if b else None, "/": lambda a, b: a / b if b else None,
}


def _number(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


def _equal(value: Fraction | None, result: str) -> bool:
    if value is None:
        return False
    decimals = len(result.partition(".")[2])
    if decimals:  # a written decimal is right when it is the value rounded to its digits
        return round(float(value), decimals) == float(result.replace(",", ""))
    return value == _number(result)


def wrong_equation(text: str) -> str | None:
    """The first `a op b = c` in `text` that is false (e.g. `12 × 4 = 46`), else None.

    Only a binary equation is checked: in a chain `2 + 3 + 4 = 9` the `3 + 4 = 9` part is skipped,
    because its left operand is the end of a longer expression.
    """
    for match in _EQUATION.finditer(text):
        if text[: match.start()].rstrip()[-1:] in tuple("+-−×x*÷/("):
            continue
        left, op, right, result = match.groups()
        if not _equal(_OPS[op](_number(left), _number(right)), result):
            return match.group(0)
    return None


def verify_math(solution: str, answer: str) -> Verdict:
    """Final answer checked against `answer` with math-verify, and every written equation true."""
    wrong = wrong_equation(solution)
    if wrong is not None:
        return Verdict(False, "wrong_arithmetic", f"false equation {wrong!r}")
    if not outcome_reward(solution, answer):
        return Verdict(False, "answer_mismatch",
                       f"final answer does not verify against {answer!r} (math-verify)")
    return Verdict(True, None)


def num_steps_bucket(trace: dict, top: int = 6) -> str:
    """Solution length as a weakness dimension: "2" … "5", "6+" (long solutions are the hard ones)."""
    count = len(parse_steps(trace["solution"]))
    return f"{top}+" if count >= top else str(count)


def sample(traces: list[dict], n: int, seed: int, source: Path) -> list[dict]:
    """`n` traces of a dataset, a deterministic sample in (n, seed) that keeps the file's order."""
    if n > len(traces):
        raise ValueError(f"{source}: asked for {n} examples but it has {len(traces)} usable rows")
    chosen = sorted(random.Random(seed).sample(range(len(traces)), n))
    return [traces[i] for i in chosen]


def dataset_examples(reader, source: str | Path):
    """An examples function over a GSM8K- or s1K-format file, read once on first use."""
    path = Path(source).expanduser()
    cache: list[list[dict]] = []

    def examples(n: int, seed: int) -> list[dict]:
        if not cache:
            if not path.is_file():
                raise FileNotFoundError(f"task family source {str(path)!r}: no such file")
            cache.append(reader(path)[0])
        return sample(cache[0], n, seed, path)

    return examples


def gsm8k_examples(source: str | Path):
    return dataset_examples(read_gsm8k, source)


def s1k_examples(source: str | Path):
    return dataset_examples(read_s1k, source)
