"""`evaluate`'s mean-of-k pass: k sampled solutions per problem, each scored against its own
problem's answer, seeded so a rerun samples the same solutions. Runs the tiny random Llama (real
`generate` with `num_return_sequences`), and a generator that answers by rule to check the scoring."""

from __future__ import annotations

import srl_platform.evaluate as ev
from srl_platform.evaluate import EvalSettings, evaluate
from srl_platform.tasks.arithmetic import generate_traces

TRACES = [t for t in generate_traces(40, seed=5) if t["split"] == "test"][:3]


def test_each_sample_is_scored_against_its_own_problem(monkeypatch, tiny_model_dir):
    answers = {t["question"]: t["answer"] for t in TRACES}
    real_generate = ev.generate

    def by_rule(tokenizer, model, prompt_texts, max_new_tokens, batch_size, samples=0, temperature=1.0):
        if not samples:
            return real_generate(tokenizer, model, prompt_texts, 1, batch_size)
        out = []
        for text in prompt_texts:
            question = next(q for q in answers if q in text)
            # The first problem: every sample right; the second: one of k; the third: none.
            right = {0: samples, 1: 1, 2: 0}[list(answers).index(question)]
            out += [(f"The answer is {answers[question] if i < right else 'x'}.", 5) for i in range(samples)]
        return out

    monkeypatch.setattr(ev, "generate", by_rule)
    report = evaluate(str(tiny_model_dir), TRACES, settings=EvalSettings(max_problems=None, max_step_instances=2,
                                                              samples_k=4))
    assert report["samples_k"] == 4
    assert report["mean_of_k_accuracy"] == (4 + 1 + 0) / 12


def test_sampling_is_seeded_and_returns_k_per_prompt(tiny_model_dir):
    from srl_platform import prompts

    tokenizer, model = ev.load_policy_model(str(tiny_model_dir))
    texts = [prompts.render(tokenizer, prompts.solve_messages(t["question"])) for t in TRACES[:2]]
    import torch

    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(ev.generate(tokenizer, model, texts, 8, batch_size=2, samples=3))
    assert len(runs[0]) == 6 and runs[0] == runs[1]
    assert len({text for text, _ in runs[0][:3]}) > 1  # sampled, not three copies of a greedy answer
    off = evaluate(str(tiny_model_dir), TRACES, settings=EvalSettings(max_step_instances=2, solve_max_new_tokens=4,
                                                                     step_max_new_tokens=4))
    assert off["samples_k"] == 0 and off["mean_of_k_accuracy"] is None
