"""Benchmark: what one spot interruption costs on the local backend, by checkpoint interval.

The loop `spot_interruption_sensor` closes, timed: for checkpoint intervals of 1, 5 and 30 minutes,
each scaled down by `--time-scale` (default 30: 2 s, 10 s and 60 s of wall clock, so the three
fit in minutes), two Dagster runs of `srl_checkpoint` for gold, each on a fresh instance and work
root, with the local training backend (a real `python -m srl_platform.train` subprocess):

1. uninterrupted: trains `--max-steps` optimizer steps;
2. interrupted: the same run, its trainer SIGKILLed `--kill-after` seconds after its first optimizer
   step (a fixed wall-clock point, the same for every interval); then the sensor is evaluated at once
   and the run it requests is materialized: the resume.

Per interval: optimizer steps trained before the kill, the newest checkpoint's step, steps lost
(trained - checkpoint step: trained again by the resume) and the wall clock lost (since that
checkpoint was saved), as `job.json` recorded them; from the kill to the resumed trainer's launch
(the run failing, the sensor evaluation, the resume run starting; a deployed sensor also waits for
its next tick, up to 30 s) and to the first optimizer step the resume trains (model loading
included); and the interrupted path's total wall (first launch to resume done) against the
uninterrupted run's.

`--model tiny` (default) is a 2-layer, randomly initialised Llama with SmolLM2's tokenizer, as in
the tests: real transformers/peft/TRL code, ~0.5 s per step, so the kill point (75 s) is ~150 of
its 240 steps in. `--model smollm2` trains the pulled SmolLM2-135M-Instruct (~8 s per step on 2 CPU cores; give it
fewer `--max-steps`).

    python bench/interruptions.py [--model tiny|smollm2] [--json-out runs/bench.jsonl]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from common import append_json, machine, tiny_model

INTERVALS_MINUTES = (1, 5, 30)
BUDGETS = {  # per-step work: mechanics for the tiny model, the embedded default's shape for SmolLM2
    "tiny": {"prompts_per_step": 1, "num_generations": 2, "max_completion_length": 8},
    "smollm2": {"prompts_per_step": 1, "num_generations": 4, "max_completion_length": 32},
}
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def seed_store(root: Path) -> None:
    """The SRL step instances `srl_checkpoint` reads, from generated arithmetic traces."""
    from srl_platform.steps import decompose
    from srl_platform.storage import LocalArtifactStore
    from srl_platform.tasks.arithmetic import generate_traces
    from srl_platform.traces import parquet_bytes

    traces = generate_traces(60, seed=0)
    instances, _, _ = decompose([t for t in traces if t["split"] == "train"])
    LocalArtifactStore(root).put_bytes("datasets/srl_steps.parquet", parquet_bytes(instances))


def trained_steps(metrics: Path) -> list[int]:
    steps = []
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                row = json.loads(line)
                if "loss" in row:
                    steps.append(row["step"])
    return steps


def wait_for_step(metrics: Path, after: int, seen: dict, deadline_s: float = 900) -> None:
    """Record in `seen["at"]` when a step later than `after` first appears in `metrics`."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and "stop" not in seen:
        if any(step > after for step in trained_steps(metrics)):
            seen["at"] = time.time()
            return
        time.sleep(0.02)


def wait_for_log_line(log: Path, offset: int, prefix: str, seen: dict, deadline_s: float = 900) -> None:
    """Record in `seen["at"]` when a line starting with `prefix` appears in `log` after `offset`.
    (The metrics file cannot tell: until the resumed trainer drops them, it still holds the rows of
    the steps the killed attempt trained after its checkpoint.)"""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and "stop" not in seen:
        with open(log, "rb") as f:
            f.seek(offset)
            if any(line.startswith(prefix.encode()) for line in f.read().splitlines()):
                seen["at"] = time.time()
                return
        time.sleep(0.02)


def kill_after_first_step(work_root: Path, seconds: float, killed: dict) -> None:
    """SIGKILL the trainer (the pid in job.json) `seconds` after its first optimizer step."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and not list(work_root.glob("*/output/metrics.jsonl")):
        time.sleep(0.02)
    (metrics,) = work_root.glob("*/output/metrics.jsonl")
    first = {}
    wait_for_step(metrics, 0, first)
    time.sleep(max(0.0, first["at"] + seconds - time.time()))
    record = json.loads((metrics.parent.parent / "job.json").read_text())
    if record["state"] != "running":
        return  # finished before the kill point: reported as an error by the caller
    os.kill(record["pid"], signal.SIGKILL)
    killed.update(at=time.time(), pid=record["pid"], first_step_at=first["at"])


def measure(minutes: float, args, model_dir: Path, scratch: Path) -> dict:
    from dagster import DagsterInstance, Definitions, build_sensor_context, materialize

    from assets.training import rlvr_checkpoint, srl_checkpoint
    from resources.monitoring import MonitoringResource
    from resources.storage import ArtifactStore
    from resources.training import LocalTrainingBackend
    from sensors.spot import spot_interruption_sensor
    from srl_platform.jobs import local_job_status

    scaled_s = minutes * 60 / args.time_scale
    config = {"base_model": str(model_dir), "max_steps": args.max_steps,
              "checkpoint_interval_minutes": scaled_s / 60, **BUDGETS[args.model]}

    def setup(name: str):
        root = scratch / f"{minutes:g}min-{name}"
        (root / "dagster").mkdir(parents=True)
        seed_store(root / "store")
        resources = {"store": ArtifactStore(root=str(root / "store")), "monitoring": MonitoringResource(),
                     "training_backend": LocalTrainingBackend(work_root=str(root / "work"))}
        return root, resources, DagsterInstance.local_temp(str(root / "dagster"))

    def run(instance, resources, run_config: dict, **kwargs):
        return materialize([srl_checkpoint, rlvr_checkpoint], instance=instance, resources=resources,
                           partition_key="gold", run_config={**run_config, **QUIET},
                           raise_on_error=False, **kwargs)

    run_config = {"ops": {"srl_checkpoint": {"config": config}}}
    _, resources, instance = setup("uninterrupted")
    with instance:
        started = time.time()
        baseline = run(instance, resources, run_config, selection=[srl_checkpoint])
        baseline_wall = time.time() - started
    if not baseline.success:
        raise RuntimeError(f"the uninterrupted run failed; see {scratch}/trainer.log")

    root, resources, instance = setup("interrupted")
    with instance:
        killed: dict = {}
        killer = threading.Thread(target=kill_after_first_step,
                                  args=(root / "work", args.kill_after, killed), daemon=True)
        killer.start()
        started = time.time()
        first = run(instance, resources, run_config, selection=[srl_checkpoint])
        killer.join(timeout=10)
        if not killed or first.success:
            raise RuntimeError(f"the trainer finished before the kill point ({args.kill_after:g} s after "
                               f"its first step): raise --max-steps above {args.max_steps}")
        (job,) = (root / "work").iterdir()
        status = local_job_status(job)
        (event,) = status.events
        saved = event.checkpoint_step or 0

        defs = Definitions(assets=[srl_checkpoint, rlvr_checkpoint], sensors=[spot_interruption_sensor],
                           resources=resources)
        with build_sensor_context(instance=instance, definitions=defs, resources=resources) as context:
            (request,) = spot_interruption_sensor.evaluate_tick(context).run_requests
        seen: dict = {}
        log = job / "train.log"  # the local backend appends the trainer's output, one "step N/M" line a step
        watcher = threading.Thread(target=wait_for_log_line,
                                   args=(log, log.stat().st_size, f"step {saved + 1}/", seen), daemon=True)
        watcher.start()
        resumed = run(instance, resources, request.run_config, selection=request.asset_selection,
                      tags=request.tags)
        finished = time.time()
        seen["stop"] = True
        watcher.join(timeout=5)
        if not resumed.success:
            raise RuntimeError(f"the resumed run failed; see {scratch}/trainer.log")
    summary = json.loads((job / "output" / "training_summary.json").read_text())
    relaunched = datetime.fromisoformat(json.loads((job / "job.json").read_text())["started_at"]).timestamp()
    return {
        "interval_minutes": minutes,
        "scaled_interval_s": round(scaled_s, 2),
        "steps_before_kill": saved + (event.lost_steps or 0),
        "checkpoint_step": saved,
        "lost_steps": event.lost_steps,
        "lost_seconds": event.lost_seconds,
        "kill_to_relaunch_s": round(relaunched - killed["at"], 2),
        "kill_to_first_new_step_s": round(seen["at"] - killed["at"], 2) if "at" in seen else None,
        "resumed_from": summary["resumed_from"],
        "resumed_steps": summary["global_step"] - saved,
        "interrupted_wall_s": round(finished - started, 1),
        "uninterrupted_wall_s": round(baseline_wall, 1),
        "overhead_s": round(finished - started - baseline_wall, 1),
    }


def markdown(results: list[dict]) -> str:
    lines = ["| interval (scaled) | steps before kill | checkpoint step | lost steps | lost s | "
             "kill → relaunch s | kill → first new step s | interrupted wall s | uninterrupted wall s | "
             "overhead s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['interval_minutes']:g} min ({r['scaled_interval_s']:g} s) | {r['steps_before_kill']} | "
            f"{r['checkpoint_step']} | {r['lost_steps']} | {r['lost_seconds']:.1f} | "
            f"{r['kill_to_relaunch_s']:.1f} | {r['kill_to_first_new_step_s']:.1f} | "
            f"{r['interrupted_wall_s']:.1f} | {r['uninterrupted_wall_s']:.1f} | {r['overhead_s']:+.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(BUDGETS), default="tiny")
    parser.add_argument("--time-scale", type=float, default=30.0,
                        help="divide each checkpoint interval by this (default 30: 1 min -> 2 s)")
    parser.add_argument("--kill-after", type=float, default=75.0,
                        help="seconds after the first optimizer step when the trainer is SIGKILLed")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="optimizer steps per run (default: 240 tiny, 20 smollm2); must outlast the kill")
    parser.add_argument("--intervals", type=float, nargs="+", default=list(INTERVALS_MINUTES),
                        help="checkpoint intervals in minutes, before scaling (default: 1 5 30)")
    parser.add_argument("--json-out", type=Path, default=None, help="append one JSON line with the results")
    args = parser.parse_args(argv)
    args.max_steps = args.max_steps or {"tiny": 240, "smollm2": 20}[args.model]
    host = machine()

    with tempfile.TemporaryDirectory(prefix="bench-interruptions-") as tmp:
        scratch = Path(tmp)
        if args.model == "tiny":
            model_dir = tiny_model(scratch / "tiny-model")
        else:
            from srl_platform.models import DEFAULT_BASE_MODEL, pull
            model_dir = pull(DEFAULT_BASE_MODEL, log=lambda msg: None)
        results = []
        # The trainer's output (echoed by the local backend) goes to a file, the table to stdout.
        with open(scratch / "trainer.log", "w") as log, contextlib.redirect_stdout(log):
            for minutes in args.intervals:
                results.append(measure(minutes, args, model_dir, scratch))
                print(json.dumps(results[-1]), file=sys.__stdout__, flush=True)

    print(f"\nSpot interruptions on the local backend: model {args.model}, {args.max_steps} steps, "
          f"SIGKILL {args.kill_after:g} s after the first step; checkpoint intervals scaled 1/"
          f"{args.time_scale:g} (1 min -> {60 / args.time_scale:g} s). {host['cpu_count']} cores "
          f"({host['cpu_model']}), load {host['loadavg_1m']} at start.\n")
    print(markdown(results))
    append_json(args.json_out, {"bench": "interruptions", "model": args.model, "max_steps": args.max_steps,
                                "kill_after_s": args.kill_after, "time_scale": args.time_scale,
                                "machine": host, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
