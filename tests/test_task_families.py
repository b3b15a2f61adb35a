"""Task families: the registry, the math verifier, reading model solutions into canonical steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from srl_platform.steps import StepParseError, parse_steps
from srl_platform.tasks import FAMILY_NAMES, get_family
from srl_platform.tasks.arithmetic import classify, generate_traces
from srl_platform.tasks.math import verify_math, wrong_equation
from srl_platform.tasks.solutions import canonical_solution

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("text, wrong", [
    ("3 × 4 = 12 apples, then 12 + 5 = 17", None),
    ("3 × 4 = 13", "3 × 4 = 13"),
    ("48/2 = 24 and 24 - 30 = -6", None),
    ("$5 * 3 = $15", None),
    ("1,200 ÷ 4 = 300", None),
    ("2 + 3 + 4 = 9", None),  # a chain: only whole binary equations are checked
    ("10 / 3 = 3.33", None),  # a decimal is right when rounded to its digits
    ("10 / 3 = 3.4", "10 / 3 = 3.4"),
    ("7 / 0 = 0", "7 / 0 = 0"),
])
def test_wrong_equation(text, wrong) -> None:
    assert wrong_equation(text) == wrong


def test_verify_math_names_the_reason() -> None:
    good = "1. **Add**: 3 + 4 = 7.\n2. **Double**: 7 × 2 = 14. The answer is 14."
    assert verify_math(good, "14").ok
    mismatch = verify_math(good, "15")
    assert (mismatch.ok, mismatch.reason) == (False, "answer_mismatch") and "'15'" in mismatch.detail
    lucky = verify_math("1. **Add**: 3 + 4 = 8.\n2. **Guess**: The answer is 14.", "14")
    assert (lucky.ok, lucky.reason) == (False, "wrong_arithmetic") and "3 + 4 = 8" in lucky.detail


@pytest.mark.parametrize("text, bodies", [
    ("1. **Count**: 3 + 4 = 7\n2. **Answer**: The answer is 7.", ["3 + 4 = 7", "The answer is 7."]),
    ("Let's solve.\nStep 1: 3 + 4 = 7\nStep 2: The answer is 7.", ["3 + 4 = 7", "The answer is 7."]),
    ("1. 3 + 4 = 7\n   so seven\n2) The answer is 7.", ["3 + 4 = 7\n   so seven", "The answer is 7."]),
    ("### Step 1: Count\n3 + 4 = 7\n### Step 2: Answer\n1. seven\n2. done", ["3 + 4 = 7",
                                                                           "1. seven\n2. done"]),
])
def test_canonical_solution_reads_common_step_styles(text, bodies) -> None:
    steps = parse_steps(canonical_solution(text))
    assert [step.body for step in steps] == bodies


@pytest.mark.parametrize("text", ["The answer is 7.", "1. first\n3. third", "1. **T**:\n2. **U**: x"])
def test_canonical_solution_rejects_what_has_no_outline(text) -> None:
    with pytest.raises(StepParseError):
        canonical_solution(text)


def test_arithmetic_classify_reads_the_template_back() -> None:
    traces = generate_traces(300, seed=3)
    assert all(classify(t["question"])["template"] == t["meta"]["template"] for t in traces)
    assert classify("A poem about the sea.") == {"template": "other"}


def test_registry_families_and_their_sources() -> None:
    assert set(FAMILY_NAMES) == {"arithmetic", "code", "gsm8k", "s1k"}
    arithmetic = get_family("arithmetic")
    trace = arithmetic.examples(1, 0)[0]
    assert arithmetic.verify(trace["solution"], trace["answer"]).ok
    assert set(arithmetic.dims(trace)) == set(arithmetic.dimensions)

    gsm8k = get_family("gsm8k", FIXTURES / "gsm8k_sample.jsonl")
    examples = gsm8k.examples(3, 0)
    assert examples == gsm8k.examples(3, 0) and len({t["id"] for t in examples}) == 3
    # GSM8K's own solutions verify against their `####` answers with the family's verifier.
    assert all(gsm8k.verify(t["solution"], t["answer"]).ok for t in examples)
    assert all(gsm8k.dims(t)["num_steps"] in {"1", "2", "3", "4", "5", "6+"} for t in examples)

    s1k = get_family("s1k", FIXTURES / "s1k_sample.jsonl")
    assert s1k.examples(1, 0)[0]["source"] == "s1k-1.1"

    with pytest.raises(ValueError, match="give its path as source"):
        get_family("gsm8k")
    with pytest.raises(ValueError, match="takes no source"):
        get_family("arithmetic", "x.jsonl")
    with pytest.raises(ValueError, match="'poetry' is unknown"):
        get_family("poetry")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        get_family("gsm8k", "missing.jsonl").examples(1, 0)
    with pytest.raises(ValueError, match="asked for 999 examples"):
        gsm8k.examples(999, 0)
