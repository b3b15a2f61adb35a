"""Benchmark: wall time of the embedded-default cascade through Dagster, and how much is orchestration.

Runs `make demo`'s training command (`dagster asset materialize -f definitions.py --select
'(group:data or group:training or group:evaluation) and not key:generated_traces'`: the
datasets, SRL, RLVR and the tier's evaluation) for the gold tier (`--partition gold`: the smallest embedded budget)
in a fresh `DAGSTER_HOME` and artefact root, then reads the run's event log:

- command wall: launch of the CLI to its exit (Python start-up, loading definitions included);
- run wall: the run's RUN_START to RUN_SUCCESS;
- work: for the training and evaluation steps, the time from STEP_START to STEP_SUCCESS;
- orchestration = run wall - work (everything that is not training or evaluating: data assets,
  step launching, event writes, store uploads around the work), and its share of the run.

    python bench/cascade.py --scale smoke|full [--json-out runs/bench.jsonl]

`smoke` trains 1 SRL and 1 RLVR step of the tests' tiny random model and evaluates 4 problems; `full` uses the gold tier's own
embedded budget and the default evaluation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import append_json, machine, tiny_model

REPO = Path(__file__).resolve().parents[1]
WORK_ASSETS = ("srl_checkpoint", "rlvr_checkpoint", "tier_eval")
# `make demo`'s TRAINING selection (Makefile).
SELECTION = "(group:data or group:training or group:evaluation) and not key:generated_traces"
TINY = "{tiny}"
SCALES = {
    # smoke: the tests' tiny random model (bench/common.tiny_model), one step each, 4 problems.
    "smoke": {"ops": {
        "expert_traces": {"config": {"n": 60}},
        "srl_checkpoint": {"config": {"base_model": TINY, "max_steps": 1, "num_generations": 4,
                                      "max_completion_length": 16}},
        "rlvr_checkpoint": {"config": {"base_model": TINY, "max_steps": 1, "num_generations": 4,
                                       "max_completion_length": 16}},
        "tier_eval": {"config": {"max_problems": 4, "max_step_instances": 4, "solve_max_new_tokens": 16,
                                 "step_max_new_tokens": 16}},
    }},
    "full": {},
}


def step_durations(home: Path) -> tuple[float, dict[str, float]]:
    """(run wall seconds, {asset step: seconds}) of the only run in the instance at `home`."""
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import DagsterEventType, DagsterInstance

    instance = DagsterInstance.get()
    runs = instance.get_runs()
    if len(runs) != 1:
        raise RuntimeError(f"expected one run in {home}, found {len(runs)}")
    events = instance.all_logs(runs[0].run_id)
    times = {e.dagster_event.event_type: e.timestamp for e in events
             if e.dagster_event and e.dagster_event.event_type in
             (DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS)}
    starts, steps = {}, {}
    for e in events:
        if not e.dagster_event or not e.step_key:
            continue
        if e.dagster_event.event_type == DagsterEventType.STEP_START:
            starts[e.step_key] = e.timestamp
        elif e.dagster_event.event_type == DagsterEventType.STEP_SUCCESS:
            steps[e.step_key] = e.timestamp - starts[e.step_key]
    return times[DagsterEventType.RUN_SUCCESS] - times[DagsterEventType.RUN_START], steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    parser.add_argument("--json-out", default=None, help="append one JSON line here")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-cascade-"))
    home = root / "dagster"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    run_config = root / "run_config.yaml"
    tiny = str(tiny_model(root / "tiny-model")) if args.scale == "smoke" else None
    ops = {name: {"config": {k: tiny if v == TINY else v for k, v in op["config"].items()}}
           for name, op in SCALES[args.scale].get("ops", {}).items()}
    run_config.write_text(yaml.safe_dump({"ops": ops} if ops else {}))
    env = {**os.environ, "DAGSTER_HOME": str(home), "SRL_ARTIFACT_ROOT": str(root / "artifacts"),
           "SRL_WORK_ROOT": str(root / "work")}
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-f",
               "definitions.py", "--select", SELECTION, "--partition", "gold", "-c", str(run_config)]
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    command_wall = time.monotonic() - started
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        return done.returncode

    run_wall, steps = step_durations(home)
    work = sum(seconds for step, seconds in steps.items() if step in WORK_ASSETS)
    orchestration = run_wall - work
    result = {
        "bench": "cascade", "scale": args.scale, **machine(),
        "command_wall_s": round(command_wall, 1), "run_wall_s": round(run_wall, 1),
        "work_s": round(work, 1), "orchestration_s": round(orchestration, 1),
        "orchestration_share": round(orchestration / run_wall, 3),
        "steps_s": {k: round(v, 1) for k, v in sorted(steps.items())},
    }
    print(f"machine: {result['cpu_count']} cores, {result['cpu_model']}; scale {args.scale}\n")
    print("| measure | seconds | share of run |\n|---|---|---|")
    print(f"| `dagster asset materialize` command (CLI start to exit) | {command_wall:.1f} | |")
    print(f"| run (RUN_START to RUN_SUCCESS) | {run_wall:.1f} | 100% |")
    for step, seconds in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"| step `{step}` | {seconds:.1f} | {seconds / run_wall:.0%} |")
    print(f"| training + evaluation steps | {work:.1f} | {work / run_wall:.0%} |")
    print(f"| orchestration (run - training - evaluation) | {orchestration:.1f} | "
          f"{orchestration / run_wall:.0%} |")
    append_json(args.json_out, result)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
