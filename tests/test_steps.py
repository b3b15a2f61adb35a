"""Step parsing and SRL decomposition."""

from __future__ import annotations

import re

import pytest

from srl_platform.steps import DecomposeStats, Step, StepParseError, decompose, format_step, parse_steps

SOLUTION = (
    "1. **Count the apples**: 12 × 8 = 96 apples.\n"
    "2. **Add the loose apples**: 96 + 10 = 106 apples.\n"
    "   Check: 106 - 10 = 96.\n"
    "\n"
    "3. **State the answer**: The answer is 106."
)


def trace(id_: str, solution: str, split: str = "train") -> dict:
    return {"id": id_, "question": f"Question {id_}?", "solution": solution, "answer": "106",
            "source": "test", "split": split, "meta": {}}


def test_parse_steps_reads_numbers_titles_bodies_and_text() -> None:
    steps = parse_steps(SOLUTION)
    assert [s.number for s in steps] == [1, 2, 3]
    assert steps[0] == Step(
        1, "Count the apples", "12 × 8 = 96 apples.", "1. **Count the apples**: 12 × 8 = 96 apples."
    )
    # A body runs over lines until the next step; the text is the step as written.
    assert steps[1].body == "96 + 10 = 106 apples.\n   Check: 106 - 10 = 96."
    assert steps[1].text == "2. **Add the loose apples**: 96 + 10 = 106 apples.\n   Check: 106 - 10 = 96."
    assert steps[2].title == "State the answer"


def test_title_on_its_own_line_and_colon_inside_bold() -> None:
    steps = parse_steps("1. **Set up**\nLet x be the price.\n2. **Solve:** x = 3.")
    assert [(s.title, s.body) for s in steps] == [("Set up", "Let x be the price."), ("Solve", "x = 3.")]


def test_numbered_list_inside_a_body_stays_body_text() -> None:
    steps = parse_steps("1. **Cases**: two cases\n5. first case\n2. **Next**: done")
    assert len(steps) == 2 and "5. first case" in steps[0].body


@pytest.mark.parametrize(
    ("solution", "reason"),
    [
        ("", "no numbered steps"),
        ("Just prose, no steps.", "text before step 1"),
        ("1. **A**: a\n3. **C**: c", "found 3 where 2 belongs"),
        ("2. **B**: b", "found 2 where 1 belongs"),
        ("1. **A**: a\n2. Compute 3 + 4 = 7.", "step 2 has no **Title**"),
        ("1. **A**:   \n2. **B**: b", "step 1 ('A') has an empty body"),
        ("1. ****: a", "no **Title**"),
    ],
)
def test_parse_errors_say_why(solution: str, reason: str) -> None:
    with pytest.raises(StepParseError, match=re.escape(reason)):
        parse_steps(solution)


def test_format_step_round_trips() -> None:
    text = format_step(4, "Divide", "84 ÷ 4 = 21.")
    assert text == "4. **Divide**: 84 ÷ 4 = 21."
    with pytest.raises(StepParseError, match="title"):
        format_step(1, "bad **title**", "x")
    with pytest.raises(StepParseError, match="empty body"):
        format_step(1, "Title", "  ")


def test_decompose_makes_one_instance_per_step() -> None:
    instances, quarantined, stats = decompose([trace("t1", SOLUTION, "test")])
    assert quarantined == [] and stats == DecomposeStats(trajectories=1, instances=3, quarantined=0)
    steps = parse_steps(SOLUTION)
    for k, instance in enumerate(instances, start=1):
        assert instance == {
            "id": f"t1/step{k}",
            "trace_id": "t1",
            "step_index": k,
            "num_steps": 3,
            "question": "Question t1?",
            "previous_steps": [s.text for s in steps[: k - 1]],
            "next_title": None,
            "target": steps[k - 1].text,
            "answer": "106",
            "split": "test",
        }


def test_decompose_can_include_next_title() -> None:
    instances, _, _ = decompose([trace("t1", SOLUTION)], include_next_title=True)
    titles = ["Count the apples", "Add the loose apples", "State the answer"]
    assert [i["next_title"] for i in instances] == titles


def test_decompose_quarantines_unparseable_traces_with_reasons_and_counts() -> None:
    traces = [
        trace("good", SOLUTION),
        trace("gap", "1. **A**: a\n3. **C**: c"),
        trace("prose", "The answer is 5."),
        {**trace("missing", SOLUTION), "solution": None},
    ]
    instances, quarantined, stats = decompose(traces)
    assert stats == DecomposeStats(trajectories=1, instances=3, quarantined=3)
    assert {i["trace_id"] for i in instances} == {"good"}
    assert [q["record"] for q in quarantined] == ["gap", "prose", "missing"]
    assert all(q["field"] == "solution" for q in quarantined)
    assert "found 3 where 2 belongs" in quarantined[0]["reason"]
    assert "text before step 1" in quarantined[1]["reason"]
    assert "must be a string" in quarantined[2]["reason"]
    assert quarantined[0]["row"] == traces[1] and quarantined[0]["value"].startswith("'1. **A**")
