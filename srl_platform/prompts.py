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


def _worked_example(example: dict | None) -> list[dict]:
    # One solved problem as an earlier turn: small models copy a format they see far more reliably
    # than one they are told about.
    if example is None:
        return []
    return [{"role": "user", "content": example["question"]},
            {"role": "assistant", "content": example["solution"]}]


def solve_messages(question: str, example: dict | None = None) -> list[dict]:
    """Chat messages asking for a whole solution (RLVR rollouts and accuracy evaluation); with an
    `example` trace, its question and solution come first as a worked example."""
    return [
        {"role": "system", "content": SOLVE_SYSTEM_PROMPT},
        *_worked_example(example),
        {"role": "user", "content": question},
    ]


def render(tokenizer, messages: list[dict], policy: FormatPolicy = "none") -> str:
    """The prompt text the model continues: chat template + generation header (+ `<think>`)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + "<think>\n" if policy == "prefill" else text


CODE_SOLVE_SYSTEM_PROMPT = (
    "You are a careful Python programmer. Solve the task step by step, one numbered step per line "
    "written as `N. **Title**: body`; the last step gives the complete function in a ```python "
    "code block."
)


def code_solve_messages(question: str, example: dict | None = None) -> list[dict]:
    """Chat messages asking for a step-by-step solution that ends in the function's code."""
    return [
        {"role": "system", "content": CODE_SOLVE_SYSTEM_PROMPT},
        *_worked_example(example),
        {"role": "user", "content": question},
    ]


PROPOSER_SYSTEM_PROMPT = (
    "You write new practice problems for students by varying existing ones: keep the topic and the "
    "kind of reasoning, change the names, the numbers and the story details."
)


def proposal_messages(description: str, examples: list[tuple[str, str]], label: str) -> list[dict]:
    """Ask for one new problem varied from `examples` ((question, reference) pairs; the first is the
    one to vary), in the reply format `Problem: …` then `{label}: …` that
    `srl_platform.collaboration.parse_proposal` reads.

    Varying a given problem rather than inventing one keeps a small proposer on the topic it was
    aimed at (measured with SmolLM2-135M: asked to invent, it mostly wrote well-known puzzles)."""
    (question, _), *others = examples
    shown = "".join(f"Problem: {q}\n{label}: {r}\n\n" for q, r in others)
    user = (f"{shown}Here is {description}:\n\nProblem: {question}\n\nWrite a new problem by changing "
            f"its names and numbers, then give its {label.lower()}. Reply in exactly this format:\n"
            f"Problem: <the new problem>\n{label}: <the {label.lower()}>")
    return [{"role": "system", "content": PROPOSER_SYSTEM_PROMPT}, {"role": "user", "content": user}]


JUDGE_SYSTEM_PROMPT = (
    "You grade worked solutions. Judge whether each step is correct, necessary and clearly "
    "written. Reply with one line `Score: N` where N is from 1 (useless) to 10 (exemplary)."
)


def judge_messages(question: str, solution: str) -> list[dict]:
    """Ask a judge model for a 1-10 step-quality score of a verified solution."""
    user = f"Problem:\n{question}\n\nSolution:\n{solution}\n\nScore the quality of the steps."
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]
