"""Generated traces: each night, three models write new expert traces aimed at what models get wrong.

`generated_traces` (daily partitions) runs the proposer → solver → verifier collaboration of
`srl_platform.collaboration` for one task family. Its weakness profile comes from the latest
evaluation report in the store (last night's, of the strongest tier evaluated); that is read, not a
graph edge, because evaluation is downstream of the traces this asset feeds (an edge would be a
cycle). Verified traces feed `expert_traces`; every rejected proposal is kept with its reason.
"""

import json
import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.data import OWNERS, VALIDATED_TRACES_KEY, fetch_source
from assets.evaluation import report_key as report_key_of
from assets.metadata import counts_table, preview, rows_version
from assets.partitions import daily_partitions
from resources.models import CollaborationModels
from resources.storage import ArtifactStore
from srl_platform.collaboration import CollaborationConfig, collaborate
from srl_platform.storage import ArtifactStoreClient
from srl_platform.tasks import FAMILY_NAMES, GENERATED, TaskFamily, get_family
from srl_platform.traces import jsonl_bytes, parquet_bytes, records_from_parquet_bytes
from srl_platform.weakness import WeaknessProfile

SERVING_PROFILE_KEY = "reports/weakness/serving_profile.json"
"""Written by `serving_weakness_profile` (assets/drift.py) when served traffic drifted."""

GENERATED_PREFIX = "generated"
_DEFAULTS = CollaborationConfig()


def generated_key(family: str, day: str, suffix: str) -> str:
    """`generated/<family>/<day>.<suffix>`: traces (parquet), rejects (rejects.jsonl), report (report.json)."""
    return f"{GENERATED_PREFIX}/{family}/{day}.{suffix}"


class GeneratedTracesConfig(Config):
    family: str = Field(default="arithmetic", description=f"Task family, one of {FAMILY_NAMES}.")
    source: str | None = Field(
        default=None, description="Data file the gsm8k/s1k families draw examples from (local path or "
                                  "s3://bucket/key); the generated families take none.")
    proposals: int = Field(default=_DEFAULTS.proposals, ge=1, description="Problems to propose.")
    focus: float = Field(default=_DEFAULTS.focus, ge=0, le=1,
                         description="Share of proposals aimed by the weakness profile (0: uniform).")
    solver_attempts: int = Field(default=_DEFAULTS.solver_attempts, ge=1,
                                 description="Solutions sampled per problem; the first that verifies wins.")
    judge_min_score: float | None = Field(
        default=None, ge=1, le=10, description="With a judge model: reject verified solutions scored below this.")
    weakness_report: str | None = Field(
        default=None,
        description="Store key of the evaluation report whose misses steer the proposals; None: the "
                    "serving weakness profile (serving_weakness_profile) once drift has produced one, "
                    "else the strongest tier evaluated so far (bronze, else silver, else gold). "
                    "Uniform targets when there is none yet.")


@asset(
    partitions_def=daily_partitions,
    group_name="data",
    kinds={"python", "parquet"},
    owners=OWNERS,
    code_version="1",
)
def generated_traces(context: AssetExecutionContext, config: GeneratedTracesConfig, store: ArtifactStore,
                     models: CollaborationModels) -> MaterializeResult:
    """New expert traces for one night, written by three models: a proposer writes problems aimed at
    the weakest dimensions of the last evaluation, a solver (the bronze tier by default) writes
    numbered-step solutions, and the family's verifier keeps only those whose answer and working
    check out. Stored at `generated/<family>/<day>.parquet`, rejects (with stage, reason and every
    attempt) at `…rejects.jsonl`, counts, token use and the weakness profile at `…report.json`.

    Every row names the models that produced it (`meta.lineage`). Re-running a day with the same
    models and profile reproduces it (sampling is seeded by the date).
    """
    day = context.partition_key
    client = store.client()
    with tempfile.TemporaryDirectory(prefix=f"generated-{day}-") as tmp:
        family = _family(config, store, Path(tmp))
        profile = _weakness_profile(client, config.weakness_report, family, context.log.info)
        roles = models.open(client, Path(tmp), log=context.log.info)
        collab = CollaborationConfig(proposals=config.proposals, focus=config.focus,
                                     solver_attempts=config.solver_attempts,
                                     judge_min_score=config.judge_min_score, seed=int(day.replace("-", "")))
        try:
            result = collaborate(family, roles["proposer"], roles["solver"], judge=roles["judge"],
                                 profile=profile, config=collab, run=f"{context.run.run_id}:{day}",
                                 log=context.log.info)
        finally:
            for role in {id(c): c for c in roles.values() if c is not None}.values():
                role.close()

    report = {"day": day, "family": family.name, "stats": result.stats, "usage": result.usage,
              "models": {role: (c.model_id if c else None) for role, c in roles.items()},
              "weakness_profile": profile.as_dict()}
    uri = client.put_bytes(generated_key(family.name, day, "parquet"), parquet_bytes(result.traces))
    rejects_uri = client.put_bytes(generated_key(family.name, day, "rejects.jsonl"), jsonl_bytes(result.rejects))
    report_uri = client.put_bytes(generated_key(family.name, day, "report.json"),
                                  (json.dumps(report, indent=2) + "\n").encode())
    total = result.usage["total"]
    return MaterializeResult(
        metadata={
            "uri": MetadataValue.path(uri),
            "rejects_uri": MetadataValue.path(rejects_uri),
            "report_uri": MetadataValue.path(report_uri),
            "family": family.name,
            "proposals": result.stats["proposals"],
            "new_problems": result.stats["new_problems"],
            "accepted": len(result.traces),
            "rejected": len(result.rejects),
            "reasons": counts_table(result.stats["reasons"], "reason"),
            "aim": MetadataValue.md(_aim_table(result.stats, family)),
            "weakness_profile": MetadataValue.md(_profile_table(profile)),
            **{f"{role}_model": MetadataValue.text(c.model_id if c else "none") for role, c in roles.items()},
            "usage": MetadataValue.md(_usage_table(result.usage)),
            "input_tokens": total["input_tokens"],
            "output_tokens": total["output_tokens"],
            "cost_usd": MetadataValue.float(round(total["cost_usd"], 6)),
            "preview": preview(result.traces, ("id", "question", "answer")),
        },
        data_version=rows_version(result.traces, result.rejects),
    )


def _family(config: GeneratedTracesConfig, store: ArtifactStore, directory: Path) -> TaskFamily:
    try:
        if config.family in GENERATED or config.source is None:
            return get_family(config.family, config.source)
        return get_family(config.family, fetch_source(config.source, store, directory))
    except ValueError as error:
        raise Failure(f"generated_traces: {error}", allow_retries=False) from error


def _weakness_profile(client: ArtifactStoreClient, report_key: str | None, family: TaskFamily,
                      log) -> WeaknessProfile:
    """The misses of the adapter in the report, joined with the evaluated traces for their
    dimensions; an empty (uniform) profile before the first evaluation."""
    candidates = [report_key] if report_key else [
        SERVING_PROFILE_KEY, *(report_key_of(tier) for tier in ("bronze", "silver", "gold"))]
    report_key = next((key for key in candidates if client.exists(key)), None)
    if report_key is not None and report_key == SERVING_PROFILE_KEY:
        # What the served tier got wrong lately (the drift sensor's update), already a profile.
        saved = json.loads(client.get_bytes(report_key))
        profile = WeaknessProfile.from_dict({**saved["weakness_profile"], "source": client.uri(report_key)})
        log(f"weakness profile of {saved['tier']}'s recent serving traffic ({client.uri(report_key)}): "
            f"{profile.error_rates}")
        return profile
    if report_key is None or not client.exists(VALIDATED_TRACES_KEY):
        log(f"no evaluation report ({', '.join(candidates)}) yet: proposals are spread uniformly")
        return WeaknessProfile()
    report = json.loads(client.get_bytes(report_key))
    traces = [t for t in records_from_parquet_bytes(client.get_bytes(VALIDATED_TRACES_KEY))
              if (t.get("meta") or {}).get("family", family.name) == family.name]
    # A tier_eval report holds the adapter's results under "adapter"; an `srl eval` report is flat.
    evaluated = report["adapter"] if isinstance(report.get("adapter"), dict) else report
    profile = WeaknessProfile.from_evaluation(evaluated, traces, family.dims,
                                              source=client.uri(report_key))
    log(f"weakness profile from {profile.source}: {profile.error_rates}")
    return profile


def _aim_table(stats: dict, family: TaskFamily) -> str:
    lines = ["| dimension | value | targeted | proposed (read from the text) |", "|---|---|---:|---:|"]
    for dimension in family.dimensions:
        targeted, proposed = stats["targets"].get(dimension, {}), stats["proposed"].get(dimension, {})
        for value in sorted(set(targeted) | set(proposed), key=str):
            lines.append(f"| {dimension} | {value} | {targeted.get(value, 0)} | "
                         f"{proposed.get(value, '–') if dimension in stats['proposed'] else '–'} |")
    return "\n".join(lines)


def _profile_table(profile: WeaknessProfile) -> str:
    if not profile.error_rates:
        return "_no evaluation yet: uniform targets_"
    lines = [f"From {profile.source}", "", "| dimension | value | error rate | problems |", "|---|---|---:|---:|"]
    for dimension, rates in profile.error_rates.items():
        for value, rate in rates.items():
            lines.append(f"| {dimension} | {value} | {rate:.2f} | {profile.counts[dimension][value]} |")
    return "\n".join(lines)


def _usage_table(usage: dict) -> str:
    lines = ["| role | calls | failed | retries | tokens in | tokens out | cost (USD) | latency (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for role, row in sorted(usage.get("by_role", {}).items()):
        lines.append(f"| {role} | {row['calls']} | {row['failed_calls']} | {row['retries']} | "
                     f"{row['input_tokens']} | {row['output_tokens']} | {row['cost_usd']:.4f} | "
                     f"{row['latency_s']:.1f} |")
    return "\n".join(lines)
