"""Distillation: a student tier's LoRA adapter trained to imitate its teacher tier.

`srl train --stage distill` (this module's `train_distill`) trains a fresh LoRA on the student
tier's base model from a teacher (base model + adapter) on the distillation prompts, by one of two
paths (`DistillConfig.method`):

- `on_policy`: TRL's `DistillationTrainer`. The student samples completions and is trained to match
  the teacher's next-token distribution on them (generalized JSD, `beta`). Needs one vocabulary.
- `sequence`: TRL's `SFTTrainer` on the teacher's verified traces (prompt → teacher completion),
  which works whatever the two tokenizers are.

`auto` (the default) picks `on_policy` when teacher and student tokenizers are the same and
`sequence` otherwise; the choice and its reason are in the training summary. Both trainers mix in
`AtomicCheckpoints`, so checkpoints, SIGTERM and resume behave exactly as in the GRPO stages.

`teacher_traces` generates what the teacher says on the distillation prompts: the sequence path's
training data, and a record of the teacher the student learnt from.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from srl_platform import prompts
from srl_platform.config import DistillConfig, DistillMethod
from srl_platform.rewards import outcome_reward
from srl_platform.traces import write_jsonl
from srl_platform.errors import InputError

def same_tokenizer(teacher, student) -> bool:
    """Whether two tokenizers map text to the same ids (same vocabulary and special tokens)."""
    return (teacher.get_vocab() == student.get_vocab()
            and teacher.all_special_tokens == student.all_special_tokens)


def choose_method(method: DistillMethod, teacher_tokenizer, student_tokenizer) -> tuple[str, str]:
    """(`on_policy` or `sequence`, why) for the asked `method`."""
    same = same_tokenizer(teacher_tokenizer, student_tokenizer)
    sizes = f"{len(teacher_tokenizer)} vs {len(student_tokenizer)} tokens"
    if method == "on_policy" and not same:
        raise InputError(f"method 'on_policy' needs teacher and student to share a tokenizer, but "
                                f"theirs differ ({sizes}): use method 'sequence' or 'auto'")
    if method != "auto":
        return method, f"asked for ({'same' if same else 'different'} tokenizers, {sizes})"
    if same:
        return "on_policy", "teacher and student share a tokenizer"
    return "sequence", f"teacher and student tokenizers differ ({sizes}): SFT on verified teacher traces"


def teacher_traces(base_model: str, adapter: str | None, problems: list[dict], max_new_tokens: int = 128,
                   batch_size: int = 16, dtype: str = "bfloat16") -> tuple[list[dict], dict]:
    """The teacher's greedy solution to each problem (id, question, answer) and whether its final
    answer verifies; with (prompts, verified, tokens, seconds, tokens/s)."""
    from srl_platform.evaluate import generate, load_policy_model

    started = time.monotonic()
    tokenizer, model = load_policy_model(base_model, adapter, dtype)
    rendered = [prompts.render(tokenizer, prompts.solve_messages(p["question"])) for p in problems]
    outputs = generate(tokenizer, model, rendered, max_new_tokens, batch_size)
    rows = [{"id": p["id"], "question": p["question"], "answer": p["answer"], "completion": text,
             "completion_tokens": tokens, "verified": outcome_reward(text, p["answer"]) == 1.0}
            for p, (text, tokens) in zip(problems, outputs, strict=True)]
    seconds = time.monotonic() - started
    tokens = sum(r["completion_tokens"] for r in rows)
    stats = {"prompts": len(rows), "verified": sum(r["verified"] for r in rows), "tokens": tokens,
             "seconds": round(seconds, 2), "tokens_per_second": round(tokens / seconds, 2) if seconds else 0.0}
    return rows, stats


def usable_traces(rows: list[dict], method: str, verified_only: bool) -> tuple[list[dict], list[dict]]:
    """(rows the method trains on, the others with the reason). On-policy needs only the question
    (the student writes its own completions); sequence-level needs the teacher's completion too,
    and with `verified_only` one whose final answer verified."""
    kept, quarantined = [], []
    for index, row in enumerate(rows):
        ident = row.get("id", index)
        needed = ("question",) if method == "on_policy" else ("question", "completion")
        bad = [name for name in needed if not isinstance(row.get(name), str) or not row[name].strip()]
        if bad:
            reason = f"row {ident!r} field {bad[0]!r} is {row.get(bad[0])!r}; expected non-empty text"
        elif method == "sequence" and verified_only and row.get("verified") is not True:
            reason = f"row {ident!r} field 'verified' is {row.get('verified')!r}: not a verified teacher trace"
        else:
            kept.append(row)
            continue
        quarantined.append({**row, "quarantine_reason": reason})
    return kept, quarantined


def train_distill(*, tier, config: DistillConfig, plan: dict, rows: list[dict], base_dir: Path,
                  teacher_base_dir: Path, teacher_adapter: str | None, output_dir: Path,
                  checkpoint_dir: Path, metrics_dir: Path, interval: float, stop, report,
                  data_path: Path) -> int:
    """Distil and save the student adapter; the exit code of `srl train` (0, or 75 when preempted)."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback

    from srl_platform.checkpointing import CheckpointPolicy, MetricsRecorder
    from srl_platform.evaluate import load_policy_model
    from srl_platform.train import (_progress_printer, _report_checkpoint, first_rank, prepare_resume,
                                    resume_or_train, save_outcome)

    OnPolicyDistillationTrainer, SequenceDistillationTrainer = _trainer_classes()

    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.padding_side = "left"
    teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_base_dir)
    method, reason = choose_method(config.method, teacher_tokenizer, tokenizer)
    print(f"distillation method: {method} ({reason})", flush=True)
    plan = {**plan, "method": method}
    usable, quarantined = usable_traces(rows, method, config.verified_only)
    if quarantined and first_rank():
        quarantine = write_jsonl(quarantined, metrics_dir / "train.quarantine.jsonl")
        print(f"{len(quarantined)} of {len(rows)} teacher traces not usable by {method} distillation, "
              f"with reasons in {quarantine}", flush=True)
    if not usable:
        raise InputError(f"{data_path}: none of {len(rows)} teacher traces is usable by {method} "
                         f"distillation (first reason: {quarantined[0]['quarantine_reason']})")
    examples = [{"prompt": prompts.render(tokenizer, prompts.solve_messages(r["question"])),
                 **({"completion": r["completion"]} if method == "sequence" else {})} for r in usable]
    print(f"{len(examples)} distillation examples from {data_path}", flush=True)

    metrics_path = metrics_dir / "metrics.jsonl"
    resume, finished = prepare_resume(checkpoint_dir, plan, metrics_path)
    on_gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    lora = tier.lora
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    common = dict(
        output_dir=str(checkpoint_dir / ".staging"), per_device_train_batch_size=plan["prompts_per_step"],
        gradient_accumulation_steps=1, learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type, warmup_steps=config.warmup_steps,
        max_steps=plan["max_steps"], logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, seed=config.seed, bf16=on_gpu, use_cpu=not on_gpu,
        gradient_checkpointing=on_gpu)
    callbacks = [CheckpointPolicy(interval, stop),
                 MetricsRecorder(metrics_path, forward=_progress_printer(plan["max_steps"], report))]
    checkpoints = dict(checkpoint_root=checkpoint_dir, run_plan=plan,
                       on_checkpoint=lambda path: _report_checkpoint(path, report))
    from datasets import Dataset

    if method == "on_policy":
        from trl import DistillationConfig

        _, teacher = load_policy_model(str(teacher_base_dir), teacher_adapter, "bfloat16" if on_gpu else "float32")
        args = DistillationConfig(**common, beta=config.beta, temperature=config.temperature,
                                  max_completion_length=config.max_completion_length,
                                  remove_unused_columns=False)
        trainer = OnPolicyDistillationTrainer(model=model, teacher_model=teacher, args=args,
                                              train_dataset=Dataset.from_list(examples),
                                              processing_class=tokenizer, peft_config=peft_config,
                                              callbacks=callbacks, **checkpoints)
    else:
        from trl import SFTConfig

        args = SFTConfig(**common, max_length=512, completion_only_loss=True)
        tokenizer.padding_side = "right"  # SFT pads on the right
        trainer = SequenceDistillationTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples),
                                              processing_class=tokenizer, peft_config=peft_config,
                                              callbacks=callbacks, **checkpoints)
    trainer.remove_callback(PrinterCallback)
    exit_code = resume_or_train(trainer, resume, finished, plan, stop, report)
    if exit_code is not None:
        return exit_code
    rows_logged = [json.loads(line) for line in metrics_path.read_text().splitlines()] \
        if metrics_path.is_file() else []
    losses = [(r["step"], r["loss"]) for r in rows_logged if "loss" in r]
    summary = {
        "stage": "distill", "tier": tier.name, "teacher_tier": plan["teacher_tier"],
        "method": method, "method_reason": reason, "base_model": plan["base_model"],
        "teacher_base_model": plan["teacher_base_model"], "teacher_adapter": teacher_adapter,
        "init_from": None, "data_sha256": plan["data_sha256"], "examples": len(examples),
        "traces": len(rows), "quarantined": len(quarantined),
        "verified_traces": sum(r.get("verified") is True for r in rows),
        "global_step": trainer.state.global_step, "max_steps": plan["max_steps"],
        "resumed_from": str(resume) if resume else None, "wall_seconds": round(time.time() - started, 2),
        "loss_curve": losses, "loss_first": losses[0][1] if losses else float("nan"),
        "loss_last": losses[-1][1] if losses else float("nan"),
        # The GRPO stages' summary fields, so every adapter's summary reads the same way.
        "reward_curve": [], "drop_rate": 0.0, "config": config.as_dict(), "lora": asdict(tier.lora),
    }
    tokenizer.padding_side = "left"
    save_outcome(trainer, tokenizer, summary, output_dir, metrics_dir, report)
    print(f"adapter saved to {output_dir} ({summary['global_step']} steps, {method} distillation, "
          f"loss first/last {summary['loss_first']:.4f}/{summary['loss_last']:.4f})", flush=True)
    return 0


def _trainer_classes():
    from trl import DistillationTrainer, SFTTrainer

    from srl_platform.checkpointing import AtomicCheckpoints

    class OnPolicy(AtomicCheckpoints, DistillationTrainer):
        """TRL's on-policy `DistillationTrainer` with the platform's atomic checkpoints."""

    class Sequence(AtomicCheckpoints, SFTTrainer):
        """TRL's `SFTTrainer` on teacher traces with the platform's atomic checkpoints."""

    return OnPolicy, Sequence
