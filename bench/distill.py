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
    python bench/distill.py --scale smoke --keep runs/distill-smoke  # every step at toy budgets, in
                                                                     # minutes; keeps the artefacts
    python bench/distill.py --artifacts .state/artifacts   # the figures of a cascade already run
                                                           # (`make demo`: the same default budgets)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import append_json, machine, tiny_model

# Run config per scale. full: the tiers' embedded budgets. smoke: every tier on the tests' tiny
# random model (TINY: bench/common.tiny_model), one optimizer step per training asset and a handful
# of problems, to show every step runs in about a minute (its figures say nothing about quality).
TINY = "{tiny}"
SCALES = {
    "full": {},
    "smoke": {
        "expert_traces": {"n": 60},
        "srl_checkpoint": {"base_model": TINY, "max_steps": 1, "num_generations": 4, "max_completion_length": 16},
        "rlvr_checkpoint": {"base_model": TINY, "max_steps": 1, "num_generations": 4, "max_completion_length": 16},
        "teacher_traces": {"teacher_base_model": TINY, "max_prompts": 4, "max_new_tokens": 16},
        "distilled_adapter": {"base_model": TINY, "teacher_base_model": TINY, "max_steps": 1,
                              "max_completion_length": 16},
        "quality_report": {"base_model": TINY, "teacher_base_model": TINY, "max_problems": 4,
                           "max_step_instances": 4, "solve_max_new_tokens": 16, "step_max_new_tokens": 16},
    },
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full",
                        help="full: the tiers' embedded budgets; smoke: one step per training asset")
    parser.add_argument("--distill-steps", type=int, default=None, help="override the tiers' distill_budget")
    parser.add_argument("--eval-problems", type=int, default=None,
                        help="held-out problems per quality report (default 16; smoke 4)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy the cascade's artefact root here (bench/router.py --artifacts reads it)")
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

        tiny = str(tiny_model(Path(tmp) / "tiny-model")) if args.scale == "smoke" else None
        ops = {name: {"config": {k: tiny if v == TINY else v for k, v in config.items()}}
               for name, config in SCALES[args.scale].items()}
        ops.setdefault("distilled_adapter", {"config": {}})
        ops.setdefault("quality_report", {"config": {}})
        if args.distill_steps is not None:
            ops["distilled_adapter"]["config"]["max_steps"] = args.distill_steps
        if args.eval_problems is not None:
            ops["quality_report"]["config"]["max_problems"] = args.eval_problems
        ops["quality_report"]["config"].setdefault("max_problems", 16)

        def only(*names):
            return {n: ops[n] for n in names if n in ops}

        run(["expert_traces", "validated_traces", "srl_steps", "rlvr_problems"], config=only("expert_traces"))
        run(["srl_checkpoint", "rlvr_checkpoint"], "bronze", only("srl_checkpoint", "rlvr_checkpoint"))
        for tier in ("silver", "gold"):
            run(["teacher_traces", "distilled_adapter", "quality_report", "registered_model"], tier,
                only("teacher_traces", "distilled_adapter", "quality_report"))
        run(["serving_manifest"])
        if args.keep is not None:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(root, args.keep)
            print(f"artefacts kept in {args.keep}", flush=True)
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
        "run_config": SCALES[args.scale] if args.artifacts is None else None,
        "distill_steps_override": args.distill_steps,
        "scale": args.scale, "artifacts": str(args.artifacts) if args.artifacts else None,
        "eval_problems": args.eval_problems,
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
