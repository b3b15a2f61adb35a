"""Rewards: the SRL step reward (similarity to the expert step) and the RLVR outcome reward.

Pure functions of (completion, reference) with no I/O, plus thin adapters with the signature TRL's
`GRPOTrainer` calls reward functions with.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections.abc import Callable
from typing import Literal, get_args

from math_verify import parse, verify

FormatPolicy = Literal["strict", "prefill", "none"]
"""How the `<think>…</think>` rule is enforced: `strict` is the paper's rule (the completion opens
with `<think>` and closes it once before the action), `prefill` is the same rule when the prompt
already ended in `<think>`, and `none` scores the whole completion as the action."""

FORMAT_POLICIES: tuple[str, ...] = get_args(FormatPolicy)

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

FORMAT_VIOLATION = -1.0
"""Reward of a completion whose format breaks the policy (paper: -1, below any similarity)."""

RewardFunc = Callable[..., list[float]]


def _check_policy(policy: str) -> None:
    if policy not in FORMAT_POLICIES:
        raise ValueError(f"format policy {policy!r} is unknown; use one of {FORMAT_POLICIES}")


def split_action(completion: str, policy: FormatPolicy = "strict") -> str | None:
    """The action (the step the policy proposes), stripped; None when the format is violated.

    `strict`: the completion opens with `<think>` (after leading whitespace), has exactly one
    `<think>` and one `</think>`, and a non-empty action after `</think>`.
    `prefill`: the prompt ended in `<think>`, so the completion has no `<think>`, exactly one
    `</think>`, and a non-empty action after it.
    `none`: the whole completion is the action, unless it holds a well-formed think block (as under
    `strict`), in which case the action is what follows `</think>`. Only an empty action violates.
    """
    _check_policy(policy)
    opens, closes = completion.count(THINK_OPEN), completion.count(THINK_CLOSE)
    well_formed = completion.lstrip().startswith(THINK_OPEN) and opens == 1 and closes == 1
    if policy == "strict" and not well_formed:
        return None
    if policy == "prefill" and not (opens == 0 and closes == 1):
        return None
    if policy == "none" and not well_formed:
        action = completion.strip()
    else:
        action = completion.split(THINK_CLOSE, 1)[1].strip()
    return action or None


def srl_step_reward(
    completion: str,
    expert_step: str,
    *,
    policy: FormatPolicy = "strict",
    autojunk: bool = False,
) -> float:
    """SRL reward: difflib's ratio 2M/T between the action and the expert step, -1 on a format violation.

    `autojunk` defaults to False because the stdlib default (True) treats every character that fills
    more than 1% of a string of 200+ characters as junk: on ordinary prose that is most letters, so
    long steps score far lower than their real overlap, and since only the second argument is
    junk-filtered the score also changes when the arguments swap. (Without autojunk, difflib's
    greedy matching still breaks ties by order, by about 1e-3 on long steps, so the action is
    always passed first.)
    """
    action = split_action(completion, policy)
    if action is None:
        return FORMAT_VIOLATION
    return difflib.SequenceMatcher(None, action, expert_step, autojunk=autojunk).ratio()


def extract_final_answer_text(completion: str) -> str:
    """The part of a completion whose final answer is checked: after the last `</think>`, else all."""
    return completion.rpartition(THINK_CLOSE)[2] if THINK_CLOSE in completion else completion


# A plain number with thousands separators ("1,234", "-12,000.5"); math-verify would read a single
# comma as a decimal comma ("1,5" -> 1.5), so separators are removed before parsing the gold.
_GROUPED_NUMBER = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PLAIN_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_DELIMITED = ("$", "\\(", "\\[", "\\boxed")


def _math_timeout() -> int | None:
    # math-verify times out with SIGALRM, which only works in the main thread: elsewhere (a reward
    # server, an async loop) pass None so it runs without a timeout instead of raising.
    return 5 if threading.current_thread() is threading.main_thread() else None


def parse_gold(answer: str, timeout: int | None = None) -> list:
    """The reference answer parsed by math-verify (empty when it cannot be read).

    Plain numbers ("72", "1,234", "-3.5") parse as they are once separators are gone; other text
    without math delimiters is read as LaTeX (`$…$`), which is how s1K answers are written
    (`\\frac{\\sqrt{3}}{2}` alone parses to nothing), falling back to the raw text.
    """
    text = answer.strip()
    if _GROUPED_NUMBER.fullmatch(text):
        text = text.replace(",", "")
    if _PLAIN_NUMBER.fullmatch(text) or any(d in text for d in _DELIMITED):
        return parse(text, parsing_timeout=timeout)
    return parse(f"${text}$", parsing_timeout=timeout) or parse(text, parsing_timeout=timeout)


def outcome_reward(completion: str, answer: str) -> float:
    """RLVR reward: 1.0 when the completion's final answer verifies against `answer`, else 0.0.

    The gold is parsed and passed first (math-verify's comparison is not symmetric). Any error
    inside math-verify scores 0.0: a malformed rollout must never stop training.
    """
    timeout = _math_timeout()
    try:
        gold = parse_gold(answer, timeout)
        predicted = parse(extract_final_answer_text(completion), parsing_timeout=timeout)
        if not gold or not predicted:
            return 0.0
        return 1.0 if verify(gold, predicted, timeout_seconds=timeout) else 0.0
    except Exception:
        return 0.0


def completion_text(completion: str | list[dict]) -> str:
    """The text of one TRL completion: a string, or (conversational) the last assistant message."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role") == "assistant":
                content = message.get("content") or ""
                if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
                    return "".join(p.get("text", "") for p in content if isinstance(p, dict))
                return str(content)
        return ""
    raise TypeError(
        f"completion of type {type(completion).__name__} is neither a string nor a list of chat "
        f"messages: {completion!r:.120}"
    )


def make_srl_reward_func(policy: FormatPolicy = "strict", autojunk: bool = False) -> RewardFunc:
    """A TRL reward function scoring each completion against its row's `target` expert step.

    When TRL passes `log_metric`, it also logs the fraction of completions that broke the format,
    the first thing to look at when every group scores -1.
    """
    _check_policy(policy)

    def srl_reward(completions: list, target: list[str], **kwargs) -> list[float]:
        rewards = [
            srl_step_reward(completion_text(c), t, policy=policy, autojunk=autojunk)
            for c, t in zip(completions, target, strict=True)
        ]
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and rewards:
            violations = sum(r == FORMAT_VIOLATION for r in rewards)
            log_metric("srl_step_reward/format_violation_fraction", violations / len(rewards))
        return rewards

    # TRL logs each reward under its function's __name__.
    srl_reward.__name__ = srl_reward.__qualname__ = "srl_step_reward"
    return srl_reward


def make_outcome_reward_func() -> RewardFunc:
    """A TRL reward function checking each completion's final answer against its row's `answer`."""

    def outcome(completions: list, answer: list[str], **kwargs) -> list[float]:
        return [
            outcome_reward(completion_text(c), str(a)) for c, a in zip(completions, answer, strict=True)
        ]

    outcome.__name__ = outcome.__qualname__ = "outcome_reward"
    return outcome
