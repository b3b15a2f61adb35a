"""`srl demo`: the whole SRL→RLVR method once, on the embedded default, with a before/after table.

generate traces → decompose into SRL step instances → evaluate the base model → SRL training →
RLVR training from the SRL adapter → evaluate the adapter. Training runs through the same
entrypoint a SageMaker job uses (`python -m srl_platform.train`, as a subprocess).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from srl_platform.evaluate import EvalSettings, evaluate
from srl_platform.models import DEFAULT_BASE_MODEL, pull
from srl_platform.steps import decompose
from srl_platform.tasks.arithmetic import generate_traces
from srl_platform.traces import write_jsonl


def _train(stage: str, tier: str, data: Path, out: Path, checkpoints: Path,
           init_from: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "srl_platform.train", "--stage", stage, "--tier", tier,
           "--base-model", DEFAULT_BASE_MODEL, "--data", str(data), "--output-dir", str(out),
           "--checkpoint-dir", str(checkpoints)]
    if init_from is not None:
        cmd += ["--init-from", str(init_from)]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True)


def run_demo(workdir: Path, tier: str = "gold", n_traces: int = 300, seed: int = 0) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    pull(DEFAULT_BASE_MODEL)

    traces = generate_traces(n_traces, seed=seed)
    write_jsonl(traces, workdir / "traces.jsonl")
    train_traces = [t for t in traces if t["split"] == "train"]
    test_traces = [t for t in traces if t["split"] == "test"]
    instances, quarantined, stats = decompose(train_traces)
    write_jsonl(instances, workdir / "steps.jsonl")
    if quarantined:
        write_jsonl(quarantined, workdir / "steps.quarantine.jsonl")
    print(f"traces: {len(traces)} ({len(train_traces)} train, {len(test_traces)} test); "
          f"SRL step instances: {stats.instances}; quarantined: {stats.quarantined}", flush=True)

    settings = EvalSettings()
    print("\nevaluating the base model ...", flush=True)
    before = evaluate(DEFAULT_BASE_MODEL, test_traces, settings=settings)
    print(_one_line("base", before), flush=True)

    srl_out, rlvr_out = workdir / "srl_adapter", workdir / "rlvr_adapter"
    _train("srl", tier, workdir / "steps.jsonl", srl_out, workdir / "checkpoints" / "srl")
    _train("rlvr", tier, workdir / "traces.jsonl", rlvr_out, workdir / "checkpoints" / "rlvr",
           init_from=srl_out)

    print("\nevaluating SRL and SRL→RLVR adapters ...", flush=True)
    after_srl = evaluate(DEFAULT_BASE_MODEL, test_traces, adapter=str(srl_out), settings=settings)
    print(_one_line("srl", after_srl), flush=True)
    after = evaluate(DEFAULT_BASE_MODEL, test_traces, adapter=str(rlvr_out), settings=settings)
    print(_one_line("srl_rlvr", after), flush=True)
    reports = {"base": before, "srl": after_srl, "srl_rlvr": after}
    (workdir / "results.json").write_text(json.dumps(reports, indent=2) + "\n")
    print("\n" + results_table(reports))
    print(f"\nfiles: {workdir}")
    return 0


def _one_line(name: str, report: dict) -> str:
    return (f"{name}: accuracy {report['accuracy']:.3f}, mean step reward "
            f"{report['mean_step_reward']:.3f} ({report['wall_seconds']:.0f} s)")


def results_table(reports: dict[str, dict]) -> str:
    lines = [
        "| model | accuracy | mean step reward | format violations | mean solve tokens |",
        "|---|---|---|---|---|",
    ]
    for name, r in reports.items():
        lines.append(
            f"| {name} | {r['accuracy']:.3f} ({r['correct']}/{r['problems']}) | "
            f"{r['mean_step_reward']:.3f} | {r['format_violation_rate']:.3f} | "
            f"{r['mean_solve_tokens']:.1f} |"
        )
    return "\n".join(lines)
