"""The proposer → solver → verifier collaboration, with scripted models for every path a row can take.

The scripted client is a real `ModelClient` whose replies are a function of the conversation, so
each test states exactly what each role said and checks what the collaboration made of it. The
real-model run (SmolLM2 in all three roles) is in tests/assets/test_generation_assets.py.
"""

from __future__ import annotations

from collections import Counter

import pytest

from srl_platform.clients import CallPolicy, Completion, GenerationParams, ModelClient, ModelClientError, Pricing
from srl_platform.collaboration import CollaborationConfig, collaborate, parse_proposal, parse_score
from srl_platform.steps import parse_steps
from srl_platform.tasks import get_family
from srl_platform.weakness import WeaknessProfile


class ScriptedClient(ModelClient):
    """Answers with `script(messages)`; a returned exception is raised as a failed call."""

    def __init__(self, name: str, script) -> None:
        self.model_id, self.script = f"scripted:{name}", script
        self.pricing, self.policy = Pricing(1.0, 2.0), CallPolicy()
        self.calls: list[list[dict]] = []

    def complete(self, messages: list[dict], params: GenerationParams = GenerationParams()) -> Completion:
        self.calls.append(messages)
        text = self.script(messages)
        if isinstance(text, Exception):
            raise ModelClientError(f"{self.model_id}: {text}", attempts=1, cause=text)
        tokens_in, tokens_out = sum(len(m["content"].split()) for m in messages), len(text.split())
        return Completion(text, self.model_id, tokens_in, tokens_out, 0.01,
                          self.pricing.cost(tokens_in, tokens_out), 1, "stop")


SHOPPING = "Ava buys 3 packs of pens that cost $4 each. How many dollars does she spend?"
TRAVEL = "Liam drives at 50 kilometers per hour for 2 hours. How many kilometers does he drive?"
FARM = "A farmer plants 5 rows of apple trees with 6 in each row. How many apple trees are there?"
BOOKS = "Zoe reads 4 books a week for 3 weeks. How many books does she read?"

PROPOSALS = [
    f"Problem: {SHOPPING}\nAnswer: 12",
    "Sure! Here is a nice problem about apples.",
    f"Problem: {SHOPPING}\nAnswer: 12",
    f"Problem: {TRAVEL}\nAnswer: 100",
    f"Problem: {FARM}\nAnswer: 30",
    ConnectionError("proposer endpoint unreachable"),
    f"Problem: {BOOKS}\nAnswer: 12",
]

SOLUTIONS = {
    SHOPPING: ["1. **Cost of the pens**: 3 × 4 = 12 dollars. The answer is 12.", "The answer is 12."],
    TRAVEL: ["1. **Distance**: 50 × 2 = 120 kilometers. The answer is 120.", "The answer is 100."],
    FARM: ["1. **Count**: 5 × 6 = 31. The answer is 30.",
           "Step 1: 5 × 6 = 30 trees.\nStep 2: One dies, 30 - 1 = 29. The answer is 29."],
    BOOKS: ["1. **Books**: 4 × 3 = 12 books.\n2. **Answer**: The answer is 12."],
}


def _run(judge=None, config=CollaborationConfig(proposals=7, solver_attempts=2)):
    proposals = iter(PROPOSALS)
    attempts = Counter()

    def solve(messages):
        question = messages[-1]["content"]
        answers = SOLUTIONS[question]
        attempts[question] += 1
        return answers[(attempts[question] - 1) % len(answers)]

    proposer = ScriptedClient("proposer", lambda messages: next(proposals))
    solver = ScriptedClient("solver", solve)
    result = collaborate(get_family("arithmetic"), proposer, solver, judge=judge, config=config,
                         run="test-run")
    return result, proposer, solver


def test_every_row_is_a_trace_or_a_reject_with_its_reason() -> None:
    result, proposer, solver = _run()
    assert [t["question"] for t in result.traces] == [SHOPPING, BOOKS]
    assert result.stats["reasons"] == {"answer_mismatch": 1, "client_error": 1, "duplicate_problem": 1,
                                       "proposal_unparseable": 1, "step_format": 1}
    assert result.stats["proposals"] == 7 and result.stats["accepted"] == 2
    assert len(result.traces) + len(result.rejects) == 7

    by_reason = {r["reason"]: r for r in result.rejects}
    assert by_reason["proposal_unparseable"]["proposal_text"] == PROPOSALS[1]
    assert by_reason["duplicate_problem"]["question"] == SHOPPING
    assert "unreachable" in by_reason["client_error"]["detail"]
    # Travel: a false equation first, then no steps at all; both attempts are kept with their text.
    travel = by_reason["step_format"]
    assert [a["reason"] for a in travel["attempts"]] == ["wrong_arithmetic", "step_format"]
    assert travel["attempts"][0]["text"] == SOLUTIONS[TRAVEL][0]
    # Farm: the right final number after a false equation, then true steps to another answer.
    # A reject's reason is its last attempt's.
    farm = by_reason["answer_mismatch"]
    assert farm["reference"] == "30"
    assert [a["reason"] for a in farm["attempts"]] == ["wrong_arithmetic", "answer_mismatch"]

    # Only new, parsed problems reach the solver, each solved twice.
    assert len(proposer.calls) == 7
    assert Counter(m[-1]["content"] for m in solver.calls) == {SHOPPING: 2, TRAVEL: 2, FARM: 2, BOOKS: 2}


def test_accepted_traces_are_canonical_and_carry_their_lineage() -> None:
    result, _, _ = _run()
    trace = result.traces[1]
    assert trace["answer"] == "12" and trace["source"] == "generated:arithmetic:collaboration"
    assert [s.title for s in parse_steps(trace["solution"])] == ["Books", "Answer"]
    assert trace["id"].startswith("arithmetic-gen-") and trace["split"] in {"train", "validation", "test"}
    meta = trace["meta"]
    assert meta["num_steps"] == 2 and meta["template"] == "other"  # books are no arithmetic template
    lineage = meta["lineage"]
    assert (lineage["proposer"], lineage["solver"], lineage["run"]) == \
        ("scripted:proposer", "scripted:solver", "test-run")
    assert lineage["verifier"] == "srl_platform.tasks:arithmetic.verify" and lineage["solver_attempt"] == 0
    assert len(lineage["examples"]) == 1 and lineage["examples"][0].startswith("arithmetic-")
    assert set(meta["target"]) == {"template", "num_ops"}
    assert result.traces[0]["meta"]["template"] == "shopping"  # read back from the problem's text


def test_usage_is_accounted_per_role() -> None:
    result, proposer, solver = _run()
    roles = result.usage["by_role"]
    assert roles["proposer"]["calls"] == 7 and roles["proposer"]["failed_calls"] == 1
    assert roles["solver"]["calls"] == 8 and roles["solver"]["failed_calls"] == 0
    expected = sum(len(m["content"].split()) for call in solver.calls for m in call)
    assert roles["solver"]["input_tokens"] == expected
    assert result.usage["total"]["cost_usd"] == pytest.approx(
        sum(r["cost_usd"] for r in roles.values()))


def test_a_judge_can_veto_low_scores() -> None:
    scores = iter(["Score: 8", "I think it's fine."])
    judge = ScriptedClient("judge", lambda messages: next(scores))
    result, _, _ = _run(judge, CollaborationConfig(proposals=7, solver_attempts=2, judge_min_score=5))
    assert [t["question"] for t in result.traces] == [SHOPPING]
    assert result.traces[0]["meta"]["judge_score"] == 8.0
    assert result.traces[0]["meta"]["lineage"]["judge"] == "scripted:judge"
    assert result.stats["reasons"]["judge_unparseable"] == 1
    # Without a minimum the judge only records its score.
    scores = iter(["Score: 2", "Score: 9"])
    result, _, _ = _run(judge, CollaborationConfig(proposals=7, solver_attempts=2))
    assert [t["meta"]["judge_score"] for t in result.traces] == [2.0, 9.0]


def test_weak_skill_steers_the_examples_the_proposer_sees() -> None:
    """The proposer sees examples of its target; a profile weak at farm makes most targets farm."""
    shown = Counter()

    def propose(messages):
        text = messages[-1]["content"]
        shown.update(t for t in ("farmer", "drives", "batch") if t in text)
        return "no"

    family = get_family("arithmetic")
    weak = WeaknessProfile({"template": {"farm": 1.0, "travel": 0.0, "recipe": 0.0, "shopping": 0.0,
                                         "inventory": 0.0, "savings": 0.0}})
    result = collaborate(family, ScriptedClient("p", propose), ScriptedClient("s", lambda m: ""),
                         profile=weak, config=CollaborationConfig(proposals=60, focus=0.75))
    assert result.stats["targets"]["template"]["farm"] >= 36  # ≈ 79% expected, 60% is far below
    assert shown["farmer"] >= 36 > shown["drives"] + shown["batch"]


@pytest.mark.parametrize("text, label, parsed", [
    ("Problem: Two plus two?\nAnswer: 4.", "Answer", ("Two plus two?", "4")),
    ("**Problem:** A\nB\n**Answer:** 7 apples\nmore", "Answer", ("A\nB", "7 apples")),
    ("Problem: add(a, b)\nTests:\n```python\nassert add(1, 2) == 3\n```", "Tests",
     ("add(a, b)", "assert add(1, 2) == 3")),
    ("Question: Two plus two?\nAnswer: 4", "Answer", ("Two plus two?", "4")),
    ("Here is one.\n\nTom has 3 cats and gets 2 more. How many?\nAnswer: 5", "Answer",
     ("Tom has 3 cats and gets 2 more. How many?", "5")),
    ("Answer: 4", "Answer", None),
    ("No answer here.", "Answer", None),
    ("Problem: x\nAnswer:", "Answer", None),
])
def test_parse_proposal(text, label, parsed) -> None:
    assert parse_proposal(text, label) == parsed


def test_parse_score() -> None:
    assert parse_score("Score: 7") == 7.0
    assert parse_score("score = 9.5 because") == 9.5
    assert parse_score("Score: 11") is None and parse_score("great") is None


def test_code_family_runs_the_proposed_tests_in_the_sandbox() -> None:
    add = "Write `add(a, b)` returning the sum of two integers."
    sub = "Write `sub(a, b)` returning a minus b."
    neg = "Write `neg(a)` returning minus a."
    proposals = iter([
        f"Problem: {add}\nTests:\n```python\nassert add(1, 2) == 3\nassert add(-1, 1) == 0\n```",
        f"Problem: {sub}\nTests:\nassert sub(3, 1) ==",
        f"Problem: {neg}\nTests:\nassert neg(2) == -2",
    ])
    code = {add: "def add(a, b):\n    return a + b", sub: "def sub(a, b):\n    return a - b",
            neg: "def neg(a):\n    return a"}

    def solve(messages):
        question = messages[-1]["content"]
        return f"1. **Plan**: one expression.\n2. **Code**: the function.\n```python\n{code[question]}\n```"

    result = collaborate(get_family("code"), ScriptedClient("p", lambda m: next(proposals)),
                         ScriptedClient("s", solve), config=CollaborationConfig(proposals=3, solver_attempts=1))
    assert [t["question"] for t in result.traces] == [add]
    assert result.traces[0]["answer"] == "assert add(1, 2) == 3\nassert add(-1, 1) == 0"
    assert {r["question"]: r["reason"] for r in result.rejects} == {sub: "bad_reference", neg: "tests_failed"}


def test_a_seeded_run_with_real_models_is_reproducible(tiny_model_dir) -> None:
    """Sampling is seeded (the asset seeds with the date): the same run twice gives the same rows."""
    from srl_platform.clients import TransformersClient

    def run() -> list[dict]:
        client = TransformersClient(str(tiny_model_dir), dtype="float32")
        config = CollaborationConfig(proposals=3, solver_attempts=1, seed=20261122,
                                     proposer_params=GenerationParams(max_tokens=12, temperature=1.0))
        result = collaborate(get_family("arithmetic"), client, client, config=config)
        client.close()
        return result.traces + result.rejects

    first = run()
    assert len(first) == 3 and any(row.get("proposal_text") for row in first)
    assert run() == first
