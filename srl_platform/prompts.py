"""Prompts: what the policy sees in SRL (next expert step) and in RLVR / evaluation (whole solution).

Prompts are rendered to plain text with the model's chat template here, not inside TRL, so that the
`prefill` format policy can end the prompt in `<think>` and training and evaluation see exactly the
same text.
"""

from __future__ import annotations

from srl_platform.rewards import FormatPolicy

THINK_FORMAT = (
    "Your response format must follow the template below:\n"
    "<think>\nYour thoughts or/and draft, like working through an exercise on scratch paper. Be as "
    "casual and as long as you want until you are confident to generate a correct step.\n</think>\n"
    "Provide only the single, next step to continue the solution. Do not solve the entire problem."
)

STEP_FORMAT = (
    "Reply with only the single next step, written as `N. **Title**: body`. "
    "Do not solve the entire problem."
)

SRL_SYSTEM_PROMPT = (
    "You are a helpful assistant for solving mathematical problems. A user will provide a math "
    "problem, which may include a partial solution. Your task is to continue the solution by "
    "providing the very next logical step."
)

SOLVE_SYSTEM_PROMPT = (
    "You are a helpful assistant for solving mathematical problems. Solve the problem step by step, "
    "one numbered step per line written as `N. **Title**: body`, and finish with "
    "`The answer is <number>.`"
)


def srl_messages(instance: dict, policy: FormatPolicy) -> list[dict]:
    """Chat messages for one SRL step instance (see `srl_platform.steps.decompose`)."""
    system = SRL_SYSTEM_PROMPT + " " + (STEP_FORMAT if policy == "none" else THINK_FORMAT)
    previous = instance.get("previous_steps") or []
    so_far = "\n".join(previous) if previous else "(no steps yet)"
    ask = f"Write step {instance['step_index']}"
    if instance.get("next_title"):
        ask += f", titled \"{instance['next_title']}\""
    user = f"Problem:\n{instance['question']}\n\nSolution so far:\n{so_far}\n\n{ask}."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def solve_messages(question: str) -> list[dict]:
    """Chat messages asking for a whole solution (RLVR rollouts and accuracy evaluation)."""
    return [
        {"role": "system", "content": SOLVE_SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]


def render(tokenizer, messages: list[dict], policy: FormatPolicy = "none") -> str:
    """The prompt text the model continues: chat template + generation header (+ `<think>`)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + "<think>\n" if policy == "prefill" else text
