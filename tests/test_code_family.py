"""The code task family: correct built-in problems, canonical traces, code extraction, verification."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from srl_platform.sandbox import SandboxLimits, split_tests
from srl_platform.steps import parse_steps
from srl_platform.tasks.code import (
    DIMENSIONS,
    PROBLEMS,
    SKILLS,
    dims,
    extract_code,
    generate_traces,
    verify,
)
from srl_platform.traces import TRACE_FIELDS
from srl_platform.validation import validate_traces


@pytest.fixture(scope="module")
def traces() -> list[dict]:
    return generate_traces(len(PROBLEMS), seed=0)


def answer_block(code: str) -> str:
    return f"1. **Plan**: Do it.\n2. **Write the function**: Here:\n```python\n{code}\n```"


def test_the_problem_set_covers_every_skill_with_three_to_six_tests() -> None:
    assert Counter(problem.skill for problem in PROBLEMS) == {skill: 6 for skill in SKILLS}
    assert len({problem.entry_point for problem in PROBLEMS}) == len(PROBLEMS)
    for problem in PROBLEMS:
        assert 3 <= len(split_tests(problem.tests)) <= 6, problem.entry_point
        assert 1 <= len(problem.approach) <= 3, problem.entry_point
        assert problem.signature.startswith(f"def {problem.entry_point}("), problem.entry_point


def test_every_reference_solution_verifies_as_its_trace_is_written(traces: list[dict]) -> None:
    # verify() reads the code out of the expert solution itself, so this checks both the
    # reference code against its tests and that the solution carries exactly that code.
    by_entry_point = {problem.entry_point: problem for problem in PROBLEMS}
    for trace in traces:
        problem = by_entry_point[trace["meta"]["entry_point"]]
        assert extract_code(trace["solution"]) == problem.solution
        verdict = verify(trace["solution"], trace["answer"])
        total = trace["meta"]["num_tests"]
        assert (verdict.ok, verdict.reason, verdict.detail) == (True, None, f"{total}/{total} tests passed"), \
            problem.entry_point


def test_a_wrong_solution_fails_with_tests_failed_and_names_the_test() -> None:
    problem = next(p for p in PROBLEMS if p.entry_point == "reverse_words")
    wrong = "def reverse_words(text: str) -> str:\n    return text[::-1]\n"
    verdict = verify(answer_block(wrong), problem.tests)
    assert (verdict.ok, verdict.reason) == (False, "tests_failed")
    assert verdict.detail.startswith('1/4 tests passed; test 1 `assert reverse_words("hello world") == "world hello"`')


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        ("I would reverse the words.", "no_code"),
        ("```bash\necho hi\n```", "no_code"),
        (answer_block("def reverse_words(text):\n    return text.split(("), "syntax"),
        (answer_block("def reverse_words(text):\n    return undefined_name"), "error"),
        (answer_block("def reverse_words(text):\n    while True:\n        pass"), "timeout"),
        (answer_block("def reverse_words(text):\n    return str(bytearray(1 << 30))"), "memory"),
    ],
)
def test_each_failure_has_its_reason(completion: str, reason: str) -> None:
    tests = 'assert reverse_words("a b") == "b a"'
    verdict = verify(completion, tests, SandboxLimits(timeout_s=1.0))
    assert (verdict.ok, verdict.reason) == (False, reason)
    assert verdict.detail


def test_a_broken_tests_block_is_the_references_error() -> None:
    with pytest.raises(ValueError, match="tests do not parse"):
        verify(answer_block("def f():\n    return 1"), "assert f() ==")


def test_same_n_and_seed_give_identical_traces() -> None:
    first = json.dumps(generate_traces(10, seed=3))
    assert first == json.dumps(generate_traces(10, seed=3))
    assert generate_traces(5, seed=3) == generate_traces(10, seed=3)[:5]
    assert [t["id"] for t in generate_traces(10, seed=3)] != [t["id"] for t in generate_traces(10, seed=4)]
    assert generate_traces(0, seed=1) == []


def test_asking_for_more_problems_than_exist_is_refused() -> None:
    with pytest.raises(ValueError, match=f"has {len(PROBLEMS)} built-in problems"):
        generate_traces(len(PROBLEMS) + 1, seed=0)
    with pytest.raises(ValueError, match="n=-1"):
        generate_traces(-1, seed=0)


def test_traces_are_canonical_parse_into_steps_and_validate(traces: list[dict]) -> None:
    assert len({t["id"] for t in traces}) == len(PROBLEMS)
    for trace in traces:
        assert tuple(trace) == TRACE_FIELDS
        assert trace["source"] == "generated:code"
        assert trace["question"].endswith("Write the function.")
        assert f"`def {trace['meta']['entry_point']}(" in trace["question"]
        assert set(trace["meta"]) == {"family", "skill", "num_tests", "entry_point"}
        steps = parse_steps(trace["solution"])
        assert 2 <= len(steps) <= 4
        assert [step.number for step in steps] == list(range(1, len(steps) + 1))
        # The whole code block is the body of the last step, blank lines and indentation kept.
        assert steps[-1].body.endswith(f"```python\n{extract_code(trace['solution'])}\n```")
        assert all("```" not in step.body for step in steps[:-1])
    result = validate_traces(traces)
    assert result.valid == traces and result.quarantine == []


@pytest.mark.parametrize(
    ("completion", "code"),
    [
        ("no code here", None),
        ("```python\nx = 1\n```", "x = 1"),
        ("```\nx = 2\n```", "x = 2"),
        ("```Python3\nx = 3\n```", "x = 3"),
        ("```python\nfirst = 1\n```\nthen\n```python\nsecond = 2\n```", "second = 2"),
        ("```python\nkept = 1\n```\n```bash\nls\n```", "kept = 1"),
        ("```python\nkept = 1\n```\n```python\ncut = 'off mid", "kept = 1"),
        ("```python\nkept = 1\n```\n```python\n\n```", "kept = 1"),
        ("3. **Code**:\n   ```python\n   def f():\n       return 1\n   ```", "def f():\n    return 1"),
        ("```inline``` is not a fence\n```python\nx = 4\n```", "x = 4"),
        ("```python\n```", None),
    ],
)
def test_extract_code_takes_the_last_closed_python_block(completion: str, code: str | None) -> None:
    assert extract_code(completion) == code


def test_dims_bucket_the_number_of_tests() -> None:
    assert DIMENSIONS == ("skill", "num_tests")
    assert dims({"meta": {"skill": "lists", "num_tests": 3}}) == {"skill": "lists", "num_tests": "3"}
    assert dims({"meta": {"skill": "dicts", "num_tests": 4}})["num_tests"] == "4"
    assert dims({"meta": {"skill": "dicts", "num_tests": 6}})["num_tests"] == "5+"
    assert dims({"meta": {}}) == {"skill": "other", "num_tests": "?"}
    assert {dims(t)["num_tests"] for t in generate_traces(len(PROBLEMS), seed=0)} == {"3", "4", "5+"}
