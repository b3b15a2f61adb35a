"""Benchmark: how much of the bronze teacher's quality the gold student keeps, and what it costs to serve.

The whole cascade through Dagster (`dagster.materialize` on a fresh instance and store, the local
training backend, SmolLM2-135M-Instruct as every tier's base): datasets from the bundled arithmetic
family, bronze SRL → RLVR, then silver distilled from bronze and gold from silver, each with its
quality report and registry decision, and the serving manifest. Budgets are the tiers' embedded
defaults (`TierSpec.srl_budget`, `rlvr_budget`, `distill_budget`) unless `--distill-steps` says
otherwise. Prints, and appends as one JSON line:

- gold's accuracy and mean step reward as fractions of bronze's (the same held-out problems,
  greedy, bf16, batch 16: the gold report's student against the silver report's teacher);
- the serving cost ratio: gold's generated tokens/s over bronze's at equal batch (on the embedded
  default every tier shares one base and adapters are merged, so ~1.0 is the expected answer);
- each tier's gate verdict and what the manifest serves.

    python bench/distill.py [--distill-steps N] [--json-out runs/bench.jsonl]
    python bench/distill.py --artifacts .state/artifacts   # the figures of a cascade already run
                                                           # (`make demo`: the same default budgets)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import append_json, machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distill-steps", type=int, default=None, help="override the tiers' distill_budget")
    parser.add_argument("--eval-problems", type=int, default=16)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="read the reports and manifest of a cascade already run into this artefact "
                             "root (e.g. .state/artifacts after make demo) instead of running one")
    args = parser.parse_args()
    started = time.monotonic()
    if args.artifacts is not None:
        reports, manifest = read_results(args.artifacts)
    else:
        reports, manifest = run_cascade(args, started)
    summarize(args, reports, manifest, started)
    return 0


def read_results(root: Path) -> tuple[dict, dict]:
    """The newest quality report of each student tier and the serving manifest under an artefact root."""
    reports = {}
    for tier in ("silver", "gold"):
        paths = sorted((root / "reports" / tier / "quality").glob("*.json"), key=lambda p: p.stat().st_mtime)
        if not paths:
            raise SystemExit(f"no quality report under {root}/reports/{tier}/quality: run the cascade first")
        reports[tier] = json.loads(paths[-1].read_text())
    return reports, json.loads((root / "serving" / "manifest.json").read_text())


def run_cascade(args, started: float) -> tuple[dict, dict]:

    from dagster import DagsterInstance, materialize

    from assets import data, distillation, promotion, training
    from resources.monitoring import MonitoringResource
    from resources.registry import ModelRegistryResource
    from resources.storage import ArtifactStore
    from resources.training import LocalTrainingBackend

    assets = [data.expert_traces, data.validated_traces, data.srl_steps, data.rlvr_problems,
              training.srl_checkpoint, training.rlvr_checkpoint, distillation.teacher_traces,
              distillation.distilled_adapter, promotion.quality_report, promotion.registered_model,
              promotion.serving_manifest]
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp, DagsterInstance.local_temp(tmp) as instance:
        root = Path(tmp) / "artifacts"
        resources = {"store": ArtifactStore(root=str(root)), "registry": ModelRegistryResource(),
                     "monitoring": MonitoringResource(),
                     "training_backend": LocalTrainingBackend(work_root=str(Path(tmp) / "work"))}

        def run(selection, partition=None, config=None):
            result = materialize(assets, selection=selection, partition_key=partition, instance=instance,
                                 resources=resources, run_config={"ops": config or {}}, raise_on_error=False)
            print(f"{selection} [{partition}]: {'ok' if result.success else 'FAILED'} "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
            return result

        run(["expert_traces", "validated_traces", "srl_steps", "rlvr_problems"])
        run(["srl_checkpoint", "rlvr_checkpoint"], "bronze")
        distill = {"max_steps": args.distill_steps} if args.distill_steps is not None else {}
        quality = {"max_problems": args.eval_problems}
        for tier in ("silver", "gold"):
            run(["teacher_traces", "distilled_adapter", "quality_report", "registered_model"], tier,
                {"distilled_adapter": {"config": distill}, "quality_report": {"config": quality}})
        run(["serving_manifest"])
        return read_results(root)


def summarize(args, reports: dict, manifest: dict, started: float) -> None:
    from srl_platform.tiers import get_tier

    bronze, gold, silver = reports["silver"]["teacher"], reports["gold"]["student"], reports["silver"]["student"]

    def ratio(a, b):
        return None if not b else a / b

    record = {
        "bench": "distill", **machine(), "wall_s": round(time.monotonic() - started, 1),
        "budgets": {t: {"srl": vars(get_tier(t).srl_budget), "rlvr": vars(get_tier(t).rlvr_budget),
                        "distill": vars(get_tier(t).distill_budget)} for t in ("bronze", "silver", "gold")},
        "distill_steps_override": args.distill_steps,
        "artifacts": str(args.artifacts) if args.artifacts else None, "eval_problems": args.eval_problems,
        "bronze": bronze, "silver": silver, "gold": gold,
        "gold_over_bronze_accuracy": ratio(gold["accuracy"], bronze["accuracy"]),
        "gold_over_bronze_step_reward": ratio(gold["mean_step_reward"], bronze["mean_step_reward"]),
        "gold_over_bronze_tokens_per_second": ratio(gold["solve_tokens_per_second"], bronze["solve_tokens_per_second"]),
        "gates": {t: reports[t]["gate"] for t in reports},
        "manifest": {t: {k: e[k] for k in ("serving_version", "stale", "reason")} for t, e in manifest["tiers"].items()},
    }
    print(f"\nDistillation cascade on the embedded default ({record['cpu_count']} cores, {record['cpu_model']}), "
          f"{record['wall_s']} s\n")
    print("| model | accuracy | mean step reward | format violations | mean output tokens | tokens/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in (("bronze (teacher)", bronze), ("silver (student of bronze)", silver), ("gold (student of silver)", gold)):
        print(f"| {name} | {r['correct']}/{r['problems']} | {r['mean_step_reward']:.4f} | "
              f"{r['format_violations']}/{r['step_instances']} | {r['mean_solve_tokens']:.1f} | "
              f"{r['solve_tokens_per_second']:.1f} |")
    print(f"\ngold/bronze: accuracy {record['gold_over_bronze_accuracy']}, step reward "
          f"{record['gold_over_bronze_step_reward']}, tokens/s {record['gold_over_bronze_tokens_per_second']}")
    for tier, gate in record["gates"].items():
        print(f"{tier} gate: {gate['metric']} ratio {gate['ratio']} vs {gate['min_ratio']}: "
              f"{'passed' if gate['passed'] else 'failed'} ({gate['why']})")
    for tier, entry in record["manifest"].items():
        print(f"manifest {tier}: v{entry['serving_version']} stale={entry['stale']}: {entry['reason']}")
    append_json(args.json_out, record)


if __name__ == "__main__":
    sys.exit(main())
