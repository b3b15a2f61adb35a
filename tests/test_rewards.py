"""SRL step reward, format policies and the outcome reward."""

from __future__ import annotations

import difflib
import random
import threading

import pytest

from srl_platform.rewards import (
    completion_text,
    extract_final_answer_text,
    make_outcome_reward_func,
    make_srl_reward_func,
    outcome_reward,
    split_action,
    srl_step_reward,
)


def ratio(a: str, b: str, autojunk: bool = False) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=autojunk).ratio()


WORDS = "the total cost of apples and pears is computed by adding each price times count".split()


def long_step(seed: int, chars: int = 2000) -> str:
    rng = random.Random(seed)
    text = ""
    while len(text) < chars:
        text += rng.choice(WORDS) + " "
    return text[:chars]


def edited(text: str, seed: int, rate: float = 0.1) -> str:
    """`text` with about `rate` of its words replaced: a near miss of the same length class."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) if rng.random() < rate else w for w in text.split(" "))


STEP = "2. **Compute the total**: 3 × 4 = 12 apples."
PAIRS = [
    ("2. **Compute the total**: 3 × 4 = 12 apples.", STEP),
    ("2. **Compute the sum**: 3 + 4 = 7 apples.", STEP),
    ("totally unrelated words", STEP),
    ("x", ""),
    ("Ünïcödé → ≥ 5 café", "Unicode -> >= 5 cafe"),
    ("数学的步骤：三乘四等于十二", "数学步骤：三乘以四等于十二"),
    (long_step(1), long_step(2)),
    (edited(long_step(3), 4), long_step(3)),
]


@pytest.mark.parametrize(("action", "expert"), PAIRS)
def test_reward_is_difflib_ratio_without_autojunk(action: str, expert: str) -> None:
    completion = f"<think>let me think</think>\n{action}"
    assert srl_step_reward(completion, expert) == ratio(action, expert)
    assert srl_step_reward(action, expert, policy="none") == ratio(action, expert)


def test_identical_step_scores_one_and_reward_is_bounded() -> None:
    assert srl_step_reward(f"<think></think>{STEP}", STEP) == 1.0
    for action, expert in PAIRS:
        assert 0.0 <= srl_step_reward(action, expert, policy="none") <= 1.0


def test_autojunk_changes_long_step_scores_and_depends_on_order() -> None:
    b = long_step(3)
    a = edited(b, 4)
    assert len(b) == 2000 and abs(len(a) - 2000) < 100
    off = srl_step_reward(a, b, policy="none")
    on = srl_step_reward(a, b, policy="none", autojunk=True)
    assert on == ratio(a, b, autojunk=True)
    # Every letter fills > 1% of a 2,000-character step, so autojunk discards nearly all the overlap.
    assert off > 0.8 and on < off - 0.5
    assert ratio(a, b, autojunk=True) != ratio(b, a, autojunk=True)


def test_empty_expert_step() -> None:
    assert srl_step_reward("<think>x</think>some step", "") == 0.0


@pytest.mark.parametrize(
    "completion",
    [
        "no think block at all",
        "<think>thinking but never closing",
        "</think>closed without opening",
        "<think>a</think>b</think>c",
        "<think>a<think>b</think>c",
        "<think>a</think>   \n ",
        "preamble <think>a</think>step",
        "",
    ],
)
def test_strict_format_violations_score_minus_one(completion: str) -> None:
    assert split_action(completion, "strict") is None
    assert srl_step_reward(completion, STEP, policy="strict") == -1.0


def test_strict_action_is_text_after_think_stripped() -> None:
    assert split_action("  \n<think>plan</think>\n  1. **A**: b  \n") == "1. **A**: b"


def test_prefill_policy() -> None:
    # The prompt ended in "<think>", so the completion continues the monologue and closes it once.
    assert split_action("plan it\n</think>\n1. **A**: b", "prefill") == "1. **A**: b"
    assert split_action("<think>plan</think>1. **A**: b", "prefill") is None
    assert split_action("no closing tag", "prefill") is None
    assert split_action("a</think>b</think>c", "prefill") is None
    assert split_action("plan</think>  ", "prefill") is None
    assert srl_step_reward(f"x</think>{STEP}", STEP, policy="prefill") == 1.0


def test_none_policy_scores_whole_completion_unless_think_block_is_well_formed() -> None:
    assert split_action(f"  {STEP}  ", "none") == STEP
    assert split_action(f"<think>plan</think>{STEP}", "none") == STEP
    # Malformed tags are just text under `none`: never a violation.
    assert split_action(f"{STEP}</think>", "none") == f"{STEP}</think>"
    assert split_action("<think>unclosed", "none") == "<think>unclosed"
    assert split_action("   ", "none") is None
    assert split_action("<think>plan</think>", "none") is None
    assert srl_step_reward("", STEP, policy="none") == -1.0


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="'loose'"):
        split_action("x", "loose")  # type: ignore[arg-type]


def test_extract_final_answer_text() -> None:
    assert extract_final_answer_text("<think>maybe 3</think>The answer is 4.") == "The answer is 4."
    assert extract_final_answer_text("The answer is 4.") == "The answer is 4."


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("1. **Add**: 2 + 3 = 5. The answer is 5.", "5", 1.0),
        ("The answer is 6.", "5", 0.0),
        ("So the result is $\\boxed{72}$.", "72", 1.0),
        ("The answer is 1,234.", "1234", 1.0),
        ("The answer is 1234.", "1,234", 1.0),
        ("The answer is -3.5", "-3.5", 1.0),
        ("<think>it is 72</think>The answer is 71.", "72", 0.0),
        ("<think>it is 71</think>The answer is 72.", "72", 1.0),
        ("$\\boxed{\\frac{\\sqrt{3}}{2}}$", "\\frac{\\sqrt{3}}{2}", 1.0),
        ("The answer is 0.5", "\\frac{1}{2}", 1.0),
        ("I do not know.", "72", 0.0),
        ("", "72", 0.0),
        ("The answer is 72.", "", 0.0),
    ],
)
def test_outcome_reward(completion: str, answer: str, expected: float) -> None:
    assert outcome_reward(completion, answer) == expected


def test_outcome_reward_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import srl_platform.rewards as rewards

    def broken(*args, **kwargs):
        raise RuntimeError("sympy blew up")

    monkeypatch.setattr(rewards, "verify", broken)
    assert outcome_reward("The answer is 5.", "5") == 0.0


def test_outcome_reward_outside_the_main_thread() -> None:
    # math-verify's default SIGALRM timeout raises off the main thread; the reward must still work.
    results: list[float] = []
    worker = threading.Thread(target=lambda: results.append(outcome_reward("The answer is 5.", "5")))
    worker.start()
    worker.join()
    assert results == [1.0]


def test_completion_text_accepts_strings_and_chat_messages() -> None:
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "chat"}]) == "chat"
    content = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    parts = [{"role": "assistant", "content": content}]
    assert completion_text(parts) == "ab"
    with pytest.raises(TypeError, match="int"):
        completion_text(3)  # type: ignore[arg-type]


def test_trl_srl_reward_function() -> None:
    func = make_srl_reward_func(policy="strict", autojunk=False)
    assert func.__name__ == "srl_step_reward"
    logged: dict[str, float] = {}
    completions = [
        f"<think>x</think>{STEP}",
        [{"role": "assistant", "content": "<think>x</think>2. **Other**: 1 + 1 = 2."}],
        "no format",
    ]
    rewards = func(
        prompts=["p"] * 3,
        completions=completions,
        target=[STEP] * 3,
        completion_ids=[[1]] * 3,
        log_metric=lambda name, value: logged.__setitem__(name, value),
    )
    assert rewards == [1.0, ratio("2. **Other**: 1 + 1 = 2.", STEP), -1.0]
    assert logged == {"srl_step_reward/format_violation_fraction": pytest.approx(1 / 3)}


def test_trl_outcome_reward_function() -> None:
    func = make_outcome_reward_func()
    assert func.__name__ == "outcome_reward"
    completions = ["The answer is 7.", [{"role": "assistant", "content": "The answer is 8."}]]
    rewards = func(prompts=["p", "p"], completions=completions, answer=["7", "7"], trainer_state=None)
    assert rewards == [1.0, 0.0]
