"""Benchmark: the cost-benefit router against always-bronze, always-silver and always-gold, on the
tiers' measured quality and cost, and its decision latency.

Reads an artefact store after `make demo` (`--artifacts`, e.g. .state/artifacts): each student
tier's quality report (its current candidate's, `reports/{tier}/quality/{version}.json`; bronze is
silver's teacher there) and the held-out traces (`datasets/validated_traces.parquet`, test split).
Every tier's figures are used whether or not the registry approved it: this compares the tiers.

Accuracy is replayed, not estimated: a routed request counts as correct iff the chosen tier
answered that held-out problem correctly in its measured per-problem results. The router never
sees the problems it is scored on: the problems are split in two halves by a hash of their id;
the table is built from one half's results and the router scored on the other, then the halves
swap (two-fold cross-fitting), so every problem is scored once by a router that did not see it.
(Under the step-reward fallback the table holds each tier's overall mean step reward, measured on
all problems: the reports have no per-problem step rewards. That figure says nothing about any
one problem, so no answer leaks.) Cost is each chosen tier's expected cost per request (its
serving list price / measured tokens/s, times its mean output tokens); a cascade pays for every
tier it tried, its verifier's verdict being the tier's measured correctness on that problem.
Latency: `Router.route` timed over many decisions (perf_counter_ns per call), after a warm-up; a
router looks each (family, difficulty) up in its table once and reuses it (the table only changes
when `router_settings` is rebuilt), so this is the per-request cost of a decision in a live router.

    python bench/router.py --artifacts .state/artifacts [--targets 0.25 0.5 0.75] [--json-out runs/bench.jsonl]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from common import append_json, machine

from srl_platform.router import Router, RouterSettings
from srl_platform.router_table import (
    TierEvaluation,
    build_table,
    difficulty_of,
    evaluations_from_quality_reports,
    family_of,
)
from srl_platform.storage import LocalArtifactStore
from srl_platform.tasks.verdict import Verdict
from srl_platform.tiers import STUDENT_TIERS, TIER_NAMES
from srl_platform.traces import records_from_parquet_bytes

TRACES_KEY = "datasets/validated_traces.parquet"


def load(root: Path) -> tuple[dict[str, TierEvaluation], list[dict]]:
    """Each tier's evaluation from the student tiers' current quality reports, and the held-out traces."""
    store = LocalArtifactStore(root)
    reports, sources = {}, {}
    for tier in STUDENT_TIERS:
        current = f"adapters/{tier}/distilled/current.json"
        if store.exists(current):
            key = f"reports/{tier}/quality/{json.loads(store.get_bytes(current))['version']}.json"
        else:  # no pointer: the newest report on disk
            found = sorted(store.path(f"reports/{tier}/quality").glob("*.json"), key=lambda p: p.stat().st_mtime)
            key = f"reports/{tier}/quality/{found[-1].name}" if found else None
        if key and store.exists(key):
            reports[tier], sources[tier] = json.loads(store.get_bytes(key)), store.uri(key)
    if not reports:
        raise SystemExit(f"{root}: no quality report under reports/{{silver,gold}}/quality/; run `make demo` first")
    if not store.exists(TRACES_KEY):
        raise SystemExit(f"{store.uri(TRACES_KEY)} does not exist; run `make demo` first")
    for tier, report in reports.items():
        for side in ("student", "teacher"):
            if not (report.get(side) or {}).get("results"):
                raise SystemExit(
                    f"{sources[tier]}: its {side} has no per-problem 'results' (written before reports kept "
                    f"them). Re-materialize it (its evaluations are cached, so it takes seconds): DAGSTER_HOME="
                    f".state/dagster .venv/bin/dagster asset materialize -f definitions.py --select quality_report "
                    f"--partition {tier}")
    evaluations = evaluations_from_quality_reports(reports, sources)
    traces = [t for t in records_from_parquet_bytes(store.get_bytes(TRACES_KEY)) if t.get("split") == "test"]
    return {tier: evaluations[tier] for tier in TIER_NAMES if tier in evaluations}, traces


def halves(ids: list[str]) -> tuple[set[str], set[str]]:
    """Two halves of the problem ids, alternating in the order of their sha256 (stable, unbiased)."""
    ordered = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    return set(ordered[0::2]), set(ordered[1::2])


def restricted(ev: TierEvaluation, ids: set[str]) -> TierEvaluation:
    results = [r for r in ev.evaluation["results"] if r["id"] in ids]
    return TierEvaluation(ev.tier, {**ev.evaluation, "results": results}, ev.source)


def replay(evaluations: dict[str, TierEvaluation], traces: list[dict], targets: list[float],
           prior_strength: float) -> tuple[list[dict], dict]:
    """Rows (policy, target, accuracy, cost) over every held-out problem all tiers answered."""
    correct = {tier: {r["id"]: r["correct"] for r in ev.evaluation["results"]} for tier, ev in evaluations.items()}
    by_id = {t["id"]: t for t in traces}
    # Problems every tier answered and whose family is known (a request names its family).
    ids = sorted(i for i in set.intersection(*(set(c) for c in correct.values())) & set(by_id)
                 if family_of(by_id[i]))
    if len(ids) < 2:
        raise SystemExit(f"only {len(ids)} held-out problem(s) have results for every tier: nothing to split")
    folds = halves(ids)
    requests = {i: (family_of(by_id[i]), _difficulty(by_id[i])) for i in ids}
    full = build_table(evaluations.values(), traces, prior_strength)
    by_cost = sorted(full.tiers.values(), key=lambda e: e.cost_per_request)
    rows = [_row(f"always {e.tier}", None, [correct[e.tier][i] for i in ids], [e.cost_per_request] * len(ids))
            for e in full.tiers.values()]
    # The oracle pays for the cheapest tier that was right (the cheapest when none was).
    oracle = [next((e for e in by_cost if correct[e.tier][i]), by_cost[0]) for i in ids]
    rows.append(_row("oracle (cheapest tier that was right)", None, [correct[e.tier][i] for e, i in zip(oracle, ids)],
                     [e.cost_per_request for e in oracle]))
    # One router per fold, built on the other fold's results.
    routers = [(build_table([restricted(ev, estimate) for ev in evaluations.values()], traces, prior_strength), scored)
               for estimate, scored in ((folds[0], folds[1]), (folds[1], folds[0]))]
    # The cascade's path does not depend on the target (cheapest first, stop at a verified answer).
    for target, mode in [*((t, "route") for t in targets), (None, "cascade")]:
        answers, costs, chosen = [], [], {}
        for table, scored in routers:
            router = Router(table, RouterSettings() if target is None else RouterSettings(target=target))
            for i in sorted(scored):
                family, difficulty = requests[i]
                if mode == "route":
                    decision = router.route(family, difficulty)
                else:
                    decision = router.cascade(family, lambda tier: tier, lambda tier, i=i: Verdict(
                        correct[tier][i], None if correct[tier][i] else "wrong in evaluation"), difficulty)
                answers.append(correct[decision.tier][i])
                costs.append(decision.cost)
                chosen[decision.tier] = chosen.get(decision.tier, 0) + 1
        rows.append({**_row(f"router ({mode})", target, answers, costs), "chosen": chosen})
    metrics = {table.metric for table, _ in routers}
    return rows, {"problems": len(ids), "fold_sizes": [len(folds[0]), len(folds[1])],
                  "metric": "/".join(sorted(metrics)), "metric_why": routers[0][0].metric_why,
                  "full_table": full.as_dict()}


def latency(evaluations: dict[str, TierEvaluation], traces: list[dict], decisions: int,
            prior_strength: float) -> dict:
    """Microseconds per `Router.route` call, cycling over the held-out problems' (family, difficulty)."""
    router = Router(build_table(evaluations.values(), traces, prior_strength))
    requests = [(family_of(t), _difficulty(t)) for t in traces if family_of(t)] or [("arithmetic", None)]
    for family, difficulty in requests[:100]:  # warm-up
        router.route(family, difficulty)
    times = []
    clock = time.perf_counter_ns
    for n in range(decisions):
        family, difficulty = requests[n % len(requests)]
        start = clock()
        router.route(family, difficulty)
        times.append(clock() - start)
    times.sort()
    return {"decisions": decisions, "mean_us": statistics.fmean(times) / 1e3,
            "p50_us": times[len(times) // 2] / 1e3, "p99_us": times[int(len(times) * 0.99)] / 1e3}


def _difficulty(trace: dict) -> str | None:
    family = family_of(trace)
    return difficulty_of(family, trace) if family else None


def _row(policy: str, target: float | None, answers: list[bool], costs: list[float]) -> dict:
    return {"policy": policy, "target": target, "requests": len(answers),
            "accuracy": sum(answers) / len(answers), "cost_per_1k_requests": 1000 * sum(costs) / len(costs)}


def markdown(rows: list[dict], baseline: float) -> str:
    lines = ["| policy | target | requests | accuracy | $ / 1k requests | cost vs always bronze | tiers chosen |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        saving = f"{r['cost_per_1k_requests'] / baseline:.3f}×" if baseline else "–"
        chosen = ", ".join(f"{t} {n}" for t, n in sorted(r.get("chosen", {}).items()))
        target = "–" if r["target"] is None else f"{r['target']:g}"
        lines.append(f"| {r['policy']} | {target} | {r['requests']} | {r['accuracy']:.3f} | "
                     f"{r['cost_per_1k_requests']:.4f} | {saving} | {chosen or '–'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True, help="artefact store root after `make demo`")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.5, 0.75],
                        help="quality targets, in the table's metric (accuracy, or mean step reward on fallback)")
    parser.add_argument("--prior-strength", type=float, default=RouterSettings().prior_strength)
    parser.add_argument("--decisions", type=int, default=50_000, help="route calls timed for the latency figure")
    parser.add_argument("--json-out", type=Path, default=None, help="append one JSON line with the results")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    evaluations, traces = load(args.artifacts)
    rows, info = replay(evaluations, traces, args.targets, args.prior_strength)
    timing = latency(evaluations, traces, args.decisions, args.prior_strength)
    full = info["full_table"]
    print("Tiers as measured (all held-out problems):\n")
    print(build_table(evaluations.values(), traces, args.prior_strength).markdown())
    print(f"\n{info['problems']} held-out problems, two folds of {info['fold_sizes']}: each scored by a "
          f"router built on the other fold. Metric: {info['metric']}.\n")
    baseline = next(r["cost_per_1k_requests"] for r in rows if r["policy"] == "always bronze") \
        if "bronze" in full["tiers"] else 0.0
    print(markdown(rows, baseline))
    print(f"\ndecision latency: mean {timing['mean_us']:.1f} µs, p50 {timing['p50_us']:.1f} µs, "
          f"p99 {timing['p99_us']:.1f} µs over {timing['decisions']:,} route() calls")
    record = {
        "bench": "router",
        "artifacts": str(args.artifacts),
        "targets": args.targets,
        "prior_strength": args.prior_strength,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - started, 2),
        "python": platform.python_version(),
        **machine(),
        "problems": info["problems"],
        "metric": info["metric"],
        "metric_why": info["metric_why"],
        "tiers": {t: {k: e[k] for k in ("accuracy", "mean_step_reward", "tokens_per_second", "mean_output_tokens",
                                         "serving_instance_type", "serving_price_per_hour", "cost_per_1m_tokens",
                                         "cost_per_request")} for t, e in full["tiers"].items()},
        "results": rows,
        "latency": timing,
    }
    append_json(args.json_out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
