"""Benchmark: seconds per optimizer step of `srl train` versus a plain TRL `GRPOTrainer` script.

`srl train` (`python -m srl_platform.train`) wraps TRL's `GRPOTrainer` with dynamic sampling, atomic
checkpoints and per-step metrics. This measures what that costs per optimizer step, on the pulled
SmolLM2-135M-Instruct, against a plain TRL script with the same settings: the same step-instance
file (generated arithmetic traces, decomposed), prompts rendered with `srl_platform.prompts` as
train.py renders them, the same reward (`make_srl_reward_func(policy="none")`), the gold tier's
`LoRASpec`, and the same `GRPOConfig` (G, completion length, learning rate and schedule, beta 0,
temperature 1, batch = prompts per step x G, seed, `use_cpu`). Three configurations:

- `plain TRL`: `GRPOTrainer` as a user would write it (this file, run with `--plain-trl-worker`);
- `srl train, filter keeps all`: `--max-refill-rounds 0 --epsilon=-1`. The filter code runs but keeps
  every group (no std is <= -1), so the batch is exactly plain TRL's: this isolates the wrapper.
  (`--max-refill-rounds 0` alone is not enough: it still drops zero-variance groups and trains on a
  smaller batch, which would be faster than plain TRL for a reason that is not overhead.)
- `srl train, default`: dynamic sampling as shipped. Refill rounds generate more rollouts when
  groups have zero variance: slower steps for a real reason, so the drop rate and refill rounds it
  saw are reported next to its time.

How a step is timed, the same way for all three: every run is its own subprocess, launched
unmodified, that prints one line per optimizer step from its `on_log` callback (`srl train`'s
progress line `step N/M ...`; the plain script prints the same line from a one-line callback). The
parent timestamps each line as it arrives. The time between the lines of steps k-1 and k is one whole
optimizer step (generation and any refills, reward, forward/backward, optimizer, callbacks, metric
writes), so s/step is the median of those intervals, pooled over repeats; step 1 has no predecessor,
so the warm-up step and model loading never count. Model loading and the end-of-run saves show up
separately as startup (launch to step 1) and tail (last step to exit). TRL's own `step_time` metric
is shown beside it as a cross-check: it covers only `training_step` (generation + backward), not the
optimizer step or callbacks. Repeats alternate which configuration goes first.

The figures are only as quiet as the machine: on 2 cores another training job more than halves the
speed and makes single steps several times slower, so read the load average printed with the table
(and prefer `--threads 1` when the cores are shared).

    python bench/train_step.py --scale smoke --json-out runs/bench.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from common import append_json, machine

from srl_platform.config import stage_config
from srl_platform.tiers import get_tier

SCALES = {
    # optimizer steps, G (rollouts per prompt), prompts per step, completion tokens, repeats
    "smoke": {"max_steps": 3, "num_generations": 4, "prompts_per_step": 1,
              "max_completion_length": 16, "repeats": 1},
    "full": {"max_steps": 8, "num_generations": 8, "prompts_per_step": 2,
             "max_completion_length": 64, "repeats": 2},
}
TIER = "gold"
BASE_MODEL = "smollm2-135m-instruct"
N_TRACES = 64
CONFIGS = {
    "plain_trl": ("plain TRL GRPOTrainer", None),
    "srl_keep_all": ("srl train, filter keeps all (--max-refill-rounds 0 --epsilon=-1)",
                     ["--max-refill-rounds", "0", "--epsilon=-1"]),
    "srl_default": ("srl train, default dynamic sampling", []),
}
STEP_LINE = re.compile(r"^step (\d+)/\d+\b")
STEP_TIME = re.compile(r"\bstep_time=([0-9.eE+-]+)")


# ---- the plain TRL side ----------------------------------------------------------------------

def plain_trl_worker(spec_path: Path) -> int:
    """A plain TRL GRPO script: what `srl train` builds, without its trainer subclass or callbacks."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from srl_platform import prompts
    from srl_platform.rewards import make_srl_reward_func
    from srl_platform.traces import read_records

    spec = json.loads(spec_path.read_text())
    config, lora, policy = spec["config"], spec["lora"], spec["config"]["format_policy"]
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    tokenizer.padding_side = "left"
    records = [r for r in read_records(spec["data"]) if r.get("split", "train") == "train"]
    dataset = Dataset.from_list([
        {"prompt": prompts.render(tokenizer, prompts.srl_messages(r, policy), policy),
         "target": r["target"]} for r in records])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    on_gpu = torch.cuda.is_available()
    args = GRPOConfig(
        output_dir=spec["output_dir"],
        per_device_train_batch_size=spec["prompts_per_step"] * config["num_generations"],
        gradient_accumulation_steps=1,
        num_generations=config["num_generations"],
        max_completion_length=config["max_completion_length"],
        temperature=config["temperature"],
        beta=config["beta"],
        learning_rate=config["learning_rate"],
        lr_scheduler_type=config["lr_scheduler_type"],
        warmup_steps=config["warmup_steps"],
        max_steps=spec["max_steps"],
        scale_rewards="group",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=config["seed"],
        bf16=on_gpu,
        use_cpu=not on_gpu,
        gradient_checkpointing=on_gpu,
    )

    class StepLine(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "step_time" in logs:
                print(f"step {state.global_step}/{state.max_steps} step_time={logs['step_time']!r}",
                      flush=True)

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[make_srl_reward_func(policy=policy, autojunk=config["autojunk"])],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                               target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM"),
        callbacks=[StepLine()],
    )
    trainer.train()
    return 0


# ---- running and timing one configuration ------------------------------------------------------

def _child_env(threads: int | None) -> dict[str, str]:
    # No SageMaker variables may leak in and redirect data or outputs; no hub access at run time.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads, the same for every run
    return env


def _timed_run(cmd: list[str], log_path: Path, threads: int | None) -> dict:
    """Run `cmd`, timestamping each `step N/M` line as it arrives; raise with the log tail on failure."""
    start = time.perf_counter()
    stamps: list[tuple[int, float]] = []
    step_times: dict[int, float] = {}
    with log_path.open("w", encoding="utf-8") as log, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=_child_env(threads),
    ) as proc:
        try:
            for line in proc.stdout:
                now = time.perf_counter()
                log.write(line)
                match = STEP_LINE.match(line)
                if match:
                    step = int(match.group(1))
                    stamps.append((step, now))
                    if found := STEP_TIME.search(line):
                        step_times[step] = float(found.group(1))
            rc = proc.wait()
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): never leave a training job behind
            proc.kill()
            raise
    end = time.perf_counter()
    if rc != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}; last lines of {log_path}:\n{tail}")
    steps = [s for s, _ in stamps]
    if steps != list(range(1, len(steps) + 1)) or len(steps) < 2:
        raise RuntimeError(f"{log_path}: expected step lines 1..N (N >= 2), got steps {steps}")
    times = [t for _, t in stamps]
    return {
        "intervals_s": [round(b - a, 4) for a, b in zip(times, times[1:], strict=False)],
        "trl_step_time_s": step_times,
        "startup_s": round(times[0] - start, 2),
        "tail_s": round(end - times[-1], 2),
        "wall_s": round(end - start, 2),
    }


def _run_plain(spec: dict, workdir: Path, threads: int | None) -> dict:
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps({**spec, "output_dir": str(workdir / "out")}))
    run = _timed_run([sys.executable, str(Path(__file__).resolve()), "--plain-trl-worker",
                      str(spec_path)], workdir / "log.txt", threads)
    run["trl_step_time_s"] = [run["trl_step_time_s"][s] for s in sorted(run["trl_step_time_s"])]
    return run


def _run_srl(spec: dict, extra: list[str], workdir: Path, threads: int | None) -> dict:
    config = spec["config"]
    cmd = [sys.executable, "-m", "srl_platform.train", "--stage", "srl", "--tier", TIER,
           "--base-model", spec["model_dir"], "--data", spec["data"],
           "--output-dir", str(workdir / "out"), "--checkpoint-dir", str(workdir / "checkpoints"),
           "--max-steps", str(spec["max_steps"]), "--prompts-per-step", str(spec["prompts_per_step"]),
           "--num-generations", str(config["num_generations"]),
           "--max-completion-length", str(config["max_completion_length"]),
           "--learning-rate", str(config["learning_rate"]),
           "--lr-scheduler-type", config["lr_scheduler_type"],
           "--temperature", str(config["temperature"]), "--format-policy", config["format_policy"],
           "--seed", str(config["seed"]), *extra]
    run = _timed_run(cmd, workdir / "log.txt", threads)
    out = workdir / "out"
    summary = json.loads((out / "training_summary.json").read_text())
    _check_same_settings(spec, summary)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step_rows = [r for r in rows if "step_time" in r]
    run["trl_step_time_s"] = [r["step_time"] for r in step_rows]
    run["refill_rounds_per_step"] = [r.get("dynamic_sampling/refill_rounds", 0.0) for r in step_rows]
    run["sampling"] = summary["sampling"]
    run["drop_rate"] = summary["drop_rate"]
    return run


def _check_same_settings(spec: dict, summary: dict) -> None:
    """Fail loudly if `srl train` ran with settings other than the plain script's."""
    ignored = {"epsilon", "max_refill_rounds"}  # the wrapper's own knobs, varied on purpose
    used = {k: v for k, v in summary["config"].items() if k not in ignored}
    wanted = {k: v for k, v in spec["config"].items() if k not in ignored}
    if used != wanted or summary["lora"] != spec["lora"] or \
            summary["max_steps"] != spec["max_steps"]:
        raise RuntimeError(f"srl train ran with config {used}, lora {summary['lora']}, "
                           f"max_steps {summary['max_steps']}; the plain script used {wanted}, "
                           f"lora {spec['lora']}, max_steps {spec['max_steps']}")


# ---- the benchmark ---------------------------------------------------------------------------

def _model_dir() -> Path:
    from srl_platform.models import ModelNotFoundError, pull, resolve_base_model

    try:
        return resolve_base_model(BASE_MODEL)
    except ModelNotFoundError:
        return pull(BASE_MODEL)


def _write_data(path: Path, seed: int) -> Path:
    from srl_platform.steps import decompose
    from srl_platform.tasks.arithmetic import generate_traces
    from srl_platform.traces import write_jsonl

    instances, _, _ = decompose(generate_traces(N_TRACES, seed))
    return write_jsonl(instances, path)


def run(scale: str, seed: int, workroot: Path, threads: int | None = None) -> tuple[dict, list[dict]]:
    """Every configuration `repeats` times, alternating order; one result row per configuration."""
    shape = SCALES[scale]
    config = stage_config("srl", num_generations=shape["num_generations"],
                          max_completion_length=shape["max_completion_length"], seed=seed)
    spec = json.loads(json.dumps({  # JSON-shaped, as the runs report it back (tuples as lists)
        "model_dir": str(_model_dir()),
        "data": str(_write_data(workroot / "steps.jsonl", seed)),
        "max_steps": shape["max_steps"],
        "prompts_per_step": shape["prompts_per_step"],
        "config": config.as_dict(),
        "lora": asdict(get_tier(TIER).lora),
    }))
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for repeat in range(shape["repeats"]):
        order = list(CONFIGS) if repeat % 2 == 0 else list(reversed(CONFIGS))
        for name in order:
            workdir = workroot / f"{name}-{repeat}"
            workdir.mkdir()
            extra = CONFIGS[name][1]
            print(f"repeat {repeat + 1}/{shape['repeats']} {name}: running", file=sys.stderr, flush=True)
            result = _run_plain(spec, workdir, threads) if extra is None else \
                _run_srl(spec, extra, workdir, threads)
            result["order"] = order.index(name)
            runs[name].append(result)
            print(f"repeat {repeat + 1}/{shape['repeats']} {name}: steps 2.. "
                  f"{result['intervals_s']} s, wall {result['wall_s']} s", file=sys.stderr, flush=True)
    plain = statistics.median(i for r in runs["plain_trl"] for i in r["intervals_s"])
    rows = []
    for name, (label, _) in CONFIGS.items():
        intervals = [i for r in runs[name] for i in r["intervals_s"]]
        trl_times = [t for r in runs[name] for t in r["trl_step_time_s"][1:]]
        median = statistics.median(intervals)
        sampling = [r["sampling"] for r in runs[name] if "sampling" in r]
        rows.append({
            "config": name,
            "label": label,
            "median_s_per_step": round(median, 3),
            "ratio_vs_plain": round(median / plain, 3),
            "steps_timed": len(intervals),
            "median_trl_step_time_s": round(statistics.median(trl_times), 3),
            "refill_rounds": sum(s["refill_rounds"] for s in sampling) if sampling else None,
            "groups_seen": sum(s["groups_seen"] for s in sampling) if sampling else None,
            "groups_dropped": sum(s["groups_dropped"] for s in sampling) if sampling else None,
            "median_startup_s": statistics.median(r["startup_s"] for r in runs[name]),
            "median_tail_s": statistics.median(r["tail_s"] for r in runs[name]),
            "runs": runs[name],
        })
    return spec, rows


def markdown(rows: list[dict]) -> str:
    header = ("| configuration | median s/step | ratio vs plain TRL | steps timed "
              "| TRL step_time median s | refill rounds | groups dropped / seen "
              "| startup s | tail s |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        dropped = "n/a" if row["groups_seen"] is None else \
            f"{row['groups_dropped']} / {row['groups_seen']} " \
            f"({row['groups_dropped'] / max(row['groups_seen'], 1):.0%})"
        refills = "n/a" if row["refill_rounds"] is None else str(row["refill_rounds"])
        lines.append(
            f"| {row['label']} | {row['median_s_per_step']:.2f} | {row['ratio_vs_plain']:.2f}x "
            f"| {row['steps_timed']} | {row['median_trl_step_time_s']:.2f} | {refills} | {dropped} "
            f"| {row['median_startup_s']:.1f} | {row['median_tail_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="smoke",
                        help="smoke: 3 steps, G=4, 1 prompt, 16 tokens, once (a few minutes on 2 "
                             "cores); full: 8 steps, G=8, 2 prompts, 64 tokens, twice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, default=None, help="append one JSON line with the results")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the runs' logs, metrics and adapters in this new directory")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for every run (default: torch's, one per core); 1 "
                             "degrades more gracefully when another job shares the cores")
    parser.add_argument("--plain-trl-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_trl_worker is not None:
        return plain_trl_worker(args.plain_trl_worker)

    # `timeout`/`kill` send SIGTERM: unwind through _timed_run so the running child is killed too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.perf_counter()
    host = machine()
    with tempfile.TemporaryDirectory(prefix="bench-train-step-") as temp:
        workroot = args.keep or Path(temp)
        workroot.mkdir(parents=True, exist_ok=args.keep is None)
        spec, rows = run(args.scale, args.seed, workroot, args.threads)
    host["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    host["threads"] = args.threads or "default"
    shape = SCALES[args.scale]
    print(f"{args.scale}: {shape['max_steps']} steps, G={shape['num_generations']}, "
          f"{shape['prompts_per_step']} prompt(s)/step, {shape['max_completion_length']} completion "
          f"tokens, {shape['repeats']} repeat(s); s/step = median wall time between consecutive "
          "optimizer steps, step 1 excluded\n")
    print(markdown(rows))
    print(f"\nmachine: {host['cpu_count']} cores, {host['cpu_model']} ({host['machine']}); load "
          f"average (1 min) {host['loadavg_1m']} before, {host['loadavg_1m_after']} after; "
          f"torch threads {host['threads']}")

    import torch
    import transformers
    import trl

    record = {
        "bench": "train_step",
        "scale": args.scale,
        "seed": args.seed,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - started, 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        **host,
        "shape": shape,
        "settings": {k: v for k, v in spec.items() if k not in ("data",)},
        "results": rows,
    }
    print(f"\n{args.scale} run took {record['wall_s']} s")
    append_json(args.json_out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
