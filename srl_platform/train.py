"""Training entrypoint: `python -m srl_platform.train` (also `srl train`).

It follows the SageMaker training-container contract so the same command runs locally and in a
SageMaker job unchanged:

- data: `--data`, else the `SM_CHANNEL_TRAIN` channel directory;
- final adapter: `--output-dir`, else `SM_MODEL_DIR`;
- metrics and summary: `SM_OUTPUT_DATA_DIR` when set, else the output directory;
- checkpoints: `--checkpoint-dir`, else `/opt/ml/checkpoints` (synced to S3 by SageMaker).

Exit codes: 0 trained to `max_steps`; 2 bad input; `EXIT_PREEMPTED` (75) stopped by SIGTERM after
saving a checkpoint, so the launcher should run the same command again to resume.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from srl_platform.checkpoints import checkpoint_step
from srl_platform.config import Stage, stage_config
from srl_platform.errors import InputError
from srl_platform.reporting import open_reporter
from srl_platform.tiers import TIER_NAMES, get_tier

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpointed on SIGTERM; rerun the same command to resume
DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"




def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m srl_platform.train",
        description="Train a LoRA adapter with SRL (step reward) or RLVR (verifiable outcome reward).",
    )
    parser.add_argument("--stage", choices=["srl", "rlvr", "distill"], required=True,
                        help="srl: step-wise reward on expert steps; rlvr: final-answer reward; "
                             "distill: imitate the teacher tier (data: its teacher traces)")
    parser.add_argument("--tier", choices=TIER_NAMES, default="gold",
                        help="tier whose TierSpec sets LoRA size, budget and checkpoint interval")
    parser.add_argument("--base-model", default=None,
                        help="pulled model name (see `srl models list`) or a Hugging Face model "
                             "directory; default: the tier's base model")
    parser.add_argument("--data", default=os.environ.get("SM_CHANNEL_TRAIN"),
                        help="JSONL/Parquet file or directory (default $SM_CHANNEL_TRAIN). srl: step "
                             "instances from `srl data steps` or traces; rlvr: traces or problems "
                             "(id, question, answer; no solution needed)")
    parser.add_argument("--split", default="train",
                        help="keep only records of this split ('all' keeps every record)")
    parser.add_argument("--output-dir", default=os.environ.get("SM_MODEL_DIR"),
                        help="where the final adapter goes (default $SM_MODEL_DIR)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help=f"checkpoint directory (default {DEFAULT_CHECKPOINT_DIR}); a run resumes "
                             "from its newest complete checkpoint")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="optimizer steps of the whole run (default: the tier's budget)")
    parser.add_argument("--prompts-per-step", type=int, default=None,
                        help="distinct prompts per optimizer step (default: the tier's budget)")
    parser.add_argument("--init-from", default=None,
                        help="adapter directory to continue from (SRL→RLVR: the SRL output)")
    parser.add_argument("--checkpoint-interval-minutes", type=float, default=None,
                        help="wall-clock minutes between checkpoints (default: the tier's, 30)")
    distill = parser.add_argument_group("distillation (--stage distill; defaults: DistillConfig)")
    distill.add_argument("--teacher", default=os.environ.get("SM_CHANNEL_TEACHER"),
                         help="the teacher's adapter directory (default $SM_CHANNEL_TEACHER; none: "
                              "the teacher base model alone)")
    distill.add_argument("--teacher-base-model", default=None,
                         help="the teacher's base model (default $SM_CHANNEL_TEACHER_BASE_MODEL, else "
                              "the teacher tier's)")
    distill.add_argument("--method", choices=["auto", "on_policy", "sequence"], default=None,
                         help="auto: on-policy when teacher and student share a tokenizer, else "
                              "sequence-level (SFT on verified teacher traces)")
    distill.add_argument("--beta", type=float, default=None,
                         help="generalized JSD interpolation: 0 forward KL, 0.5 JSD, 1 reverse KL")
    group = parser.add_argument_group("method (defaults: SRLConfig / RLVRConfig / DistillConfig)")
    group.add_argument("--num-generations", type=int, default=None)
    group.add_argument("--max-completion-length", type=int, default=None)
    group.add_argument("--learning-rate", type=float, default=None)
    group.add_argument("--lr-scheduler-type", default=None)
    group.add_argument("--temperature", type=float, default=None)
    group.add_argument("--epsilon", type=float, default=None,
                       help="drop groups whose reward std is <= epsilon (dynamic sampling)")
    group.add_argument("--max-refill-rounds", type=int, default=None)
    group.add_argument("--format-policy", choices=["strict", "prefill", "none"], default=None,
                       help="srl only: how the <think> format rule is enforced")
    group.add_argument("--seed", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    # Imported here so `--help` answers at once and a bad argument fails before torch loads.
    from srl_platform.trainer import StopRequest

    stop = StopRequest()
    stop.install()  # as early as possible: a spot reclaim can come during model loading
    stage: Stage = args.stage
    tier = get_tier(args.tier)
    if stage == "distill":
        method_fields = ("max_completion_length", "learning_rate", "lr_scheduler_type", "temperature",
                         "seed", "method", "beta")
        others = ("num_generations", "epsilon", "max_refill_rounds", "format_policy", "init_from")
    else:
        method_fields = ("num_generations", "max_completion_length", "learning_rate",
                         "lr_scheduler_type", "temperature", "epsilon", "max_refill_rounds", "seed")
        others = ("teacher", "teacher_base_model", "method", "beta")
        if stage == "srl":
            method_fields += ("format_policy",)
        else:
            others += ("format_policy",)
    given = [f"--{name.replace('_', '-')}" for name in others if getattr(args, name) is not None
             and not (name == "teacher" and args.teacher == os.environ.get("SM_CHANNEL_TEACHER"))]
    if given:
        raise InputError(f"{', '.join(given)} do(es) not apply to --stage {stage}")
    config = stage_config(stage, **{name: getattr(args, name) for name in method_fields})
    budget = {"srl": tier.srl_budget, "rlvr": tier.rlvr_budget, "distill": tier.distill_budget}[stage]
    max_steps = budget.max_steps if args.max_steps is None else args.max_steps
    prompts_per_step = args.prompts_per_step or budget.prompts_per_step
    if max_steps < (0 if stage == "distill" else 1):
        raise InputError(f"--max-steps {max_steps}: expected >= 1 (distill: >= 0, the untrained student)")
    if not args.data:
        raise InputError("no training data: pass --data or set SM_CHANNEL_TRAIN")
    if not args.output_dir:
        raise InputError("no output directory: pass --output-dir or set SM_MODEL_DIR")
    output_dir = Path(args.output_dir)
    checkpoint_dir = Path(args.checkpoint_dir or DEFAULT_CHECKPOINT_DIR)
    metrics_dir = Path(os.environ.get("SM_OUTPUT_DATA_DIR") or output_dir)
    interval = args.checkpoint_interval_minutes
    if interval is None:
        interval = tier.checkpoint_interval_minutes

    from srl_platform.models import ModelNotFoundError, resolve_base_model

    try:
        base_dir = resolve_base_model(args.base_model or os.environ.get("SM_CHANNEL_BASE_MODEL")
                                      or tier.base_model)
    except ModelNotFoundError as exc:
        raise InputError(str(exc)) from None

    data_path = _data_file(Path(args.data))
    data_sha256 = hashlib.sha256(data_path.read_bytes()).hexdigest()
    if stage == "distill":
        return _distill(args, tier, config, base_dir, data_path, data_sha256, max_steps,
                        prompts_per_step, output_dir, checkpoint_dir, metrics_dir, interval, stop)
    records = _load_training_records(stage, data_path, args.split, config,
                                     metrics_dir / "train.quarantine.jsonl")
    plan = {
        "stage": stage,
        "tier": tier.name,
        "base_model": str(base_dir),
        "init_from": args.init_from,
        "data_sha256": data_sha256,
        "max_steps": max_steps,
        "prompts_per_step": prompts_per_step,
        "config": config.as_dict(),
    }

    with open_reporter() as report:
        return _train(stage, tier, config, plan, records, base_dir, output_dir, checkpoint_dir,
                      metrics_dir, interval, stop, report, args.init_from)


def _distill(args, tier, config, base_dir, data_path, data_sha256, max_steps, prompts_per_step,
             output_dir, checkpoint_dir, metrics_dir, interval, stop) -> int:
    from srl_platform import distill
    from srl_platform.models import ModelNotFoundError, resolve_base_model
    from srl_platform.tiers import teacher_of
    from srl_platform.traces import read_records

    try:
        teacher_tier = teacher_of(tier.name)
        teacher_base = resolve_base_model(args.teacher_base_model
                                          or os.environ.get("SM_CHANNEL_TEACHER_BASE_MODEL")
                                          or get_tier(teacher_tier).base_model)
        rows = read_records(data_path)
    except (ModelNotFoundError, ValueError) as exc:
        raise InputError(str(exc)) from None
    if not rows:
        raise InputError(f"{data_path}: no teacher traces")
    plan = {
        "stage": "distill",
        "tier": tier.name,
        "teacher_tier": teacher_tier,
        "base_model": str(base_dir),
        "teacher_base_model": str(teacher_base),
        "teacher": args.teacher,
        "data_sha256": data_sha256,
        "max_steps": max_steps,
        "prompts_per_step": prompts_per_step,
        "config": config.as_dict(),
    }
    with open_reporter() as report:
        return distill.train_distill(tier=tier, config=config, plan=plan, rows=rows, base_dir=base_dir,
                                     teacher_base_dir=teacher_base, teacher_adapter=args.teacher,
                                     output_dir=output_dir, checkpoint_dir=checkpoint_dir,
                                     metrics_dir=metrics_dir, interval=interval, stop=stop,
                                     report=report, data_path=data_path)


def _data_file(path: Path) -> Path:
    """A file, or the single JSONL/Parquet file inside a channel directory."""
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".parquet"))
        if len(found) == 1:
            return found[0]
        raise InputError(f"--data {path}: expected exactly one .jsonl or .parquet file, found "
                         f"{[p.name for p in found] or 'none'}")
    raise InputError(f"--data {path}: no such file or directory")


def _load_training_records(stage: Stage, path: Path, split: str, config,
                           quarantine_path: Path) -> list[dict]:
    """Step instances (SRL), RLVR problems or traces, validated. Traces may be canonical, GSM8K or
    s1K files; rows that fail validation or step parsing go to `quarantine_path` with the reason."""
    from srl_platform.steps import decompose
    from srl_platform.traces import first_record, load_traces, read_records, write_jsonl

    first = first_record(path)
    is_instances = first is not None and "target" in first
    if stage == "rlvr" and is_instances:
        raise InputError(f"{path}: RLVR trains on traces (question, answer); record 0 is an SRL step "
                         "instance (has field 'target'): pass the traces file instead")
    # RLVR needs only the question and a verifiable answer: a problems file (the `rlvr_problems`
    # dataset) has an id but no solution, unlike traces (solution) and raw GSM8K rows (no id).
    is_problems = (stage == "rlvr" and first is not None and "solution" not in first
                   and {"id", "question", "answer"} <= first.keys())
    quarantined: list[dict] = []
    if is_instances or is_problems:
        try:
            records = read_records(path)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    else:
        try:
            records, quarantined = load_traces(path)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    if split != "all":
        records = [r for r in records if r.get("split", split) == split]
    if stage == "srl" and not is_instances:
        records, rejected, stats = decompose(records, include_next_title=config.include_next_title)
        quarantined += rejected
        print(f"decomposed {stats.trajectories} trajectories into {stats.instances} step instances "
              f"({stats.quarantined} quarantined)", flush=True)
    if quarantined and first_rank():  # torchrun: every rank reads the same rows
        write_jsonl(quarantined, quarantine_path)
        print(f"{len(quarantined)} rejected rows with reasons in {quarantine_path}", flush=True)
    if not records:
        raise InputError(f"{path}: no usable records with split={split!r}")
    required = ("question", "target") if stage == "srl" else ("question", "answer")
    for index, record in enumerate(records):
        for name in required:
            if not isinstance(record.get(name), str) or not record[name].strip():
                ident = record.get("id", index)
                raise InputError(f"{path}: record {ident!r} field {name!r} is "
                                 f"{record.get(name)!r}; expected non-empty text")
    return records


def _train(stage, tier, config, plan, records, base_dir, output_dir, checkpoint_dir, metrics_dir,
           interval, stop, report, init_from) -> int:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import GRPOConfig

    from srl_platform import prompts
    from srl_platform.rewards import make_outcome_reward_func, make_srl_reward_func
    from srl_platform.trainer import (
        STAGING_DIR, CheckpointPolicy, MetricsRecorder, SRLGRPOTrainer)

    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.padding_side = "left"
    policy = config.format_policy if stage == "srl" else "none"
    if stage == "srl":
        rows = [{"prompt": prompts.render(tokenizer, prompts.srl_messages(r, policy), policy),
                 "target": r["target"]} for r in records]
        reward_funcs = [make_srl_reward_func(policy=policy, autojunk=config.autojunk)]
    else:
        rows = [{"prompt": prompts.render(tokenizer, prompts.solve_messages(r["question"])),
                 "answer": r["answer"]} for r in records]
        reward_funcs = [make_outcome_reward_func()]
    dataset = Dataset.from_list(rows)

    metrics_path = metrics_dir / "metrics.jsonl"
    resume, finished = prepare_resume(checkpoint_dir, plan, metrics_path)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_config = None
    if finished:
        model = PeftModel.from_pretrained(model, str(resume), is_trainable=True)
    elif init_from:
        model = PeftModel.from_pretrained(model, init_from, is_trainable=True)
    else:
        lora = tier.lora
        peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=list(lora.target_modules), task_type="CAUSAL_LM")

    on_gpu = torch.cuda.is_available()
    # On a GPU with vLLM installed, rollouts are generated by vLLM inside this process (TRL's
    # colocate mode); elsewhere by transformers' generate.
    use_vllm = on_gpu and importlib.util.find_spec("vllm") is not None
    grpo_args = GRPOConfig(
        use_vllm=use_vllm,
        vllm_mode="colocate",
        output_dir=str(checkpoint_dir / STAGING_DIR),
        per_device_train_batch_size=plan["prompts_per_step"] * config.num_generations,
        gradient_accumulation_steps=1,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        max_steps=plan["max_steps"],
        scale_rewards="group",
        logging_steps=1,
        save_strategy="no",  # CheckpointPolicy decides when; SRLGRPOTrainer saves atomically
        report_to="none",
        disable_tqdm=True,
        seed=config.seed,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        # Recomputing activations saves GPU memory; on CPU with a small model it only costs time.
        gradient_checkpointing=on_gpu,
    )
    trainer = SRLGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=grpo_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[CheckpointPolicy(interval, stop),
                   MetricsRecorder(metrics_path, forward=_progress_printer(plan["max_steps"], report))],
        epsilon=config.epsilon,
        max_refill_rounds=config.max_refill_rounds,
        checkpoint_root=checkpoint_dir,
        run_plan=plan,
        on_checkpoint=lambda path: _report_checkpoint(path, report),
    )
    trainer.remove_callback(PrinterCallback)  # replaced by the one-line progress printer
    if resume is not None:
        trainer.restore_extra_state(resume)
    exit_code = resume_or_train(trainer, resume, finished, plan, stop, report)
    if exit_code is not None:
        return exit_code

    summary = _summary(plan, trainer, metrics_path, resume, time.time() - started, tier)
    save_outcome(trainer, tokenizer, summary, output_dir, metrics_dir, report)
    print(f"adapter saved to {output_dir} ({summary['global_step']} steps, "
          f"mean reward first/last {summary['reward_first']:.3f}/{summary['reward_last']:.3f}, "
          f"dynamic-sampling drop rate {summary['drop_rate']:.2f})", flush=True)
    return 0


def prepare_resume(checkpoint_dir: Path, plan: dict, metrics_path: Path) -> tuple[Path | None, bool]:
    """(newest complete checkpoint or None, whether it already reached max_steps). A checkpoint of a
    different plan is refused with the differences named. The metrics file starts afresh, or keeps
    the rows up to the checkpoint's step (global rank 0 keeps it; torchrun's other ranks leave it)."""
    from srl_platform.checkpoints import STATE_FILE, latest_checkpoint

    resume = latest_checkpoint(checkpoint_dir)
    if resume is not None:
        saved_plan = json.loads((resume / STATE_FILE).read_text())["run_plan"]
        changed = {k: (saved_plan.get(k), v) for k, v in plan.items() if saved_plan.get(k) != v}
        if changed:
            details = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in changed.items())
            raise InputError(
                f"checkpoint {resume} was planned differently ({details}). A resume must continue "
                "the same plan (its LR schedule spans the planned max_steps); rerun with the "
                "original settings or use a new --checkpoint-dir")
    if first_rank():
        if resume is None:
            metrics_path.unlink(missing_ok=True)  # a fresh run starts a fresh curve; a resume appends
        else:
            _drop_rows_after(metrics_path, checkpoint_step(resume))
    # A checkpoint at max_steps is a finished run: Hugging Face's Trainer, resumed there, would
    # still train one more step (at lr 0) before it checks the step count, so it is not resumed:
    # its adapter and state are loaded and saved again as they are.
    return resume, resume is not None and checkpoint_step(resume) >= plan["max_steps"]


def resume_or_train(trainer, resume: Path | None, finished: bool, plan: dict, stop, report) -> int | None:
    """Train from scratch or from `resume` (for a finished checkpoint, only load its state). The exit
    code when this process is done (preempted: 75; a torchrun rank other than 0: 0, rank 0 alone
    keeps the record), or None when it goes on to save the outcome."""
    from transformers import TrainerState

    if resume is not None:
        print(f"resuming from {resume} (step {checkpoint_step(resume)} of {plan['max_steps']})", flush=True)
    if finished:
        trainer.state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
        print(f"{resume} already reached max_steps={plan['max_steps']}: nothing to train", flush=True)
    elif plan["max_steps"] == 0:  # Hugging Face reads max_steps=0 as "train by epochs"
        print("max_steps=0: the untrained adapter is saved as it is (a baseline)", flush=True)
    else:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if stop.requested and trainer.state.global_step < plan["max_steps"]:
        print(f"SIGTERM: checkpoint saved at step {trainer.state.global_step}; exiting with "
              f"{EXIT_PREEMPTED} so the launcher resumes", flush=True)
        report.log(f"preempted at step {trainer.state.global_step}")
        return EXIT_PREEMPTED
    return None if trainer.is_world_process_zero() else 0


def save_outcome(trainer, tokenizer, summary: dict, output_dir: Path, metrics_dir: Path, report) -> None:
    """The finished adapter (safetensors), its tokenizer and `training_summary.json`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(output_dir)  # adapter_model.safetensors + adapter_config.json
    tokenizer.save_pretrained(output_dir)
    summary_json = json.dumps(summary, indent=2) + "\n"
    (output_dir / "training_summary.json").write_text(summary_json)
    if metrics_dir != output_dir:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        (metrics_dir / "training_summary.json").write_text(summary_json)
    report.summary(summary)


def first_rank() -> bool:
    """Global rank 0 (or not under torchrun): the one process that keeps the record."""
    return os.environ.get("RANK", "0") == "0"


def _report_checkpoint(path: Path, report) -> None:
    print(f"checkpoint {path.name} saved", flush=True)
    report.checkpoint(checkpoint_step(path), path.name)


def _drop_rows_after(metrics_path: Path, step: int) -> None:
    """Forget the rows of steps a killed attempt trained after its last checkpoint: the resume trains
    them again, so the curve keeps each optimizer step once."""
    if not metrics_path.is_file():
        return
    lines = metrics_path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _row_step(line) is not None and _row_step(line) <= step]
    if len(kept) != len(lines):
        staged = metrics_path.with_name(f".{metrics_path.name}.tmp")
        staged.write_text("".join(kept))
        os.replace(staged, metrics_path)


def _row_step(line: str) -> int | None:
    """A metrics row's step; None for a blank line or one torn by a kill mid-write."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


def _progress_printer(max_steps: int, report):
    def forward(row: dict) -> None:
        report.metrics(row)
        shown = {k: row[k] for k in ("reward", "reward_std", "dynamic_sampling/drop_rate",
                                     "learning_rate", "loss", "step_time") if k in row}
        if not shown:  # the trainer's closing row (runtime totals) is in the metrics file only
            return
        text = " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in shown.items())
        line = f"step {row['step']}/{max_steps} {text}"
        print(line, flush=True)
        report.log(line)  # under Dagster Pipes, one event-log line per optimizer step as it happens
    return forward


def _summary(plan, trainer, metrics_path: Path, resumed_from, wall_seconds, tier) -> dict:
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines()] \
        if metrics_path.is_file() else []
    rewards = [(r["step"], r["reward"]) for r in rows if "reward" in r]
    return {
        "stage": plan["stage"],
        "tier": tier.name,
        "base_model": plan["base_model"],
        "init_from": plan["init_from"],
        "data_sha256": plan["data_sha256"],
        "global_step": trainer.state.global_step,
        "max_steps": plan["max_steps"],
        "resumed_from": str(resumed_from) if resumed_from else None,
        "wall_seconds": round(wall_seconds, 2),
        "reward_curve": rewards,
        "reward_first": rewards[0][1] if rewards else float("nan"),
        "reward_last": rewards[-1][1] if rewards else float("nan"),
        "drop_rate": trainer.sampling.drop_rate,
        "sampling": asdict(trainer.sampling),
        "config": plan["config"],
        "lora": asdict(tier.lora),
    }


if __name__ == "__main__":
    sys.exit(main())
