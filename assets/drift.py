"""Serving drift: what each served tier answered lately against its approved version's baseline.

- `no_serving_drift` (check on `registered_model[tier]`, WARN): the drift comparison of
  `srl_platform.drift` for the tier's serving version. `serving_drift_sensor` records it without a
  run whenever a new window of traffic drifts; materializing the check runs the same comparison.
- `serving_weakness_profile`: the recent window of one tier's traffic as a weakness profile at
  `reports/weakness/serving_profile.json`; `generated_traces` aims its proposals with it (it is
  preferred over the tier evaluations' profiles once it exists).

The serving rows are the collected traces (`collected/parts/*.parquet`) whose `model` is the tier
and whose `adapter_version` is its serving version's label (`srl_platform.serving.version_label`),
in serving order (timestamp, then file and line). A version's baseline is frozen at
`monitoring/drift/{tier}/v{n}.baseline.json` the first time it is complete.
"""

import io
import json

import pyarrow.parquet as pq
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Config,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from assets.data import COLLECTED_PREFIX, OWNERS
from assets.distillation import student_partitions
from assets.generation import SERVING_PROFILE_KEY
from assets.promotion import registered_model
from resources.storage import ArtifactStore
from srl_platform import drift
from srl_platform.serving import MANIFEST_KEY, version_label
from srl_platform.storage import ArtifactStoreClient, content_hash
from srl_platform.tiers import STUDENT_TIERS

CHECK_NAME = "no_serving_drift"
_COLUMNS = ["prompt", "completion", "model", "adapter_version", "completion_tokens", "timestamp",
            "task_family", "reference_answer", "extra", "source_file", "line", "row_digest"]


def baseline_key(tier: str, version: int) -> str:
    return f"monitoring/drift/{tier}/v{version}.baseline.json"


def serving_version(client: ArtifactStoreClient, tier: str) -> int | None:
    """The version the serving manifest says the tier serves (None: no manifest, or nothing approved)."""
    if not client.exists(MANIFEST_KEY):
        return None
    entry = json.loads(client.get_bytes(MANIFEST_KEY))["tiers"].get(tier) or {}
    return entry.get("serving_version")


def served_rows(client: ArtifactStoreClient, tier: str, version: int) -> list[dict]:
    """The collected rows the tier answered with that version, in serving order."""
    label = version_label(version)
    rows = []
    for key in sorted(k for k in client.list(f"{COLLECTED_PREFIX}/parts") if k.endswith(".parquet")):
        table = pq.read_table(io.BytesIO(client.get_bytes(key)), columns=_COLUMNS)
        rows.extend(r for r in table.to_pylist() if r["model"] == tier and r["adapter_version"] == label)
    rows.sort(key=lambda r: (r["timestamp"] or "", r["source_file"], r["line"]))
    return rows


def compare(client: ArtifactStoreClient, tier: str, settings: drift.DriftSettings = drift.DriftSettings(),
            freeze: bool = True) -> dict | None:
    """The drift comparison for the tier's serving version, or None when there is nothing to compare
    yet (no serving version, or no traffic beyond its baseline). Freezes the baseline once complete."""
    version = serving_version(client, tier)
    if version is None:
        return None
    rows = served_rows(client, tier, version)
    baseline_rows, recent = drift.split_windows(rows, settings)
    key = baseline_key(tier, version)
    if client.exists(key):
        baseline = json.loads(client.get_bytes(key))
    else:
        if len(baseline_rows) < settings.baseline_rows:
            return None
        baseline = drift.window_stats(baseline_rows).as_dict()
        if freeze:
            client.put_bytes(key, (json.dumps(baseline, indent=2) + "\n").encode())
    if not recent:
        return None
    result = drift.detect(drift.WindowStats(**baseline), drift.window_stats(recent), settings)
    return {"tier": tier, "version": version, "window": drift.window_id(recent), "recent_rows": recent,
            **result}


def check_metadata(result: dict) -> dict:
    lines = ["| metric | baseline | recent | judged | drifted |", "|---|---:|---:|---|---|"]
    for name, m in result["metrics"].items():
        lines.append(f"| {name} | {_fmt(m['baseline'])} | {_fmt(m['recent'])} | "
                     f"{'yes' if m['judged'] else 'no'} | {'**yes**' if m['drifted'] else 'no'} |")
    return {"tier": result["tier"], "serving_version": version_label(result["version"]),
            "window": result["window"], "recent_rows": len(result["recent_rows"]),
            "drifted": ", ".join(result["drifted"]) or "none", "why": drift.describe(result),
            "metrics": MetadataValue.md("\n".join(lines))}


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4g}"


@asset_check(asset=registered_model, name=CHECK_NAME, partitions_def=student_partitions,
             description="The served version's recent traffic against its baseline: pass rate, step "
                         "reward, output length, refusal and router escalation rates (WARN).")
def no_serving_drift(context: AssetCheckExecutionContext, store: ArtifactStore) -> AssetCheckResult:
    tier = context.partition_key
    result = compare(store.client(), tier)
    if result is None:
        return AssetCheckResult(passed=True, severity=AssetCheckSeverity.WARN,
                                metadata={"tier": tier, "why": "no served traffic beyond the baseline yet"})
    return AssetCheckResult(passed=not result["drifted"], severity=AssetCheckSeverity.WARN,
                            metadata=check_metadata(result))


class WeaknessProfileConfig(Config):
    tier: str = Field(description=f"The served tier whose recent traffic is profiled ({', '.join(STUDENT_TIERS)}).")


@asset(group_name="monitoring", kinds={"python"}, owners=OWNERS, code_version="1", deps=["collected_traces"])
def serving_weakness_profile(context: AssetExecutionContext, config: WeaknessProfileConfig,
                             store: ArtifactStore) -> MaterializeResult:
    """Where a served tier now fails: its recent traffic's error rates by the task family's
    dimensions. The proposer of `generated_traces` aims new problems at them."""
    if config.tier not in STUDENT_TIERS:
        raise ValueError(f"serving_weakness_profile: tier={config.tier!r} is not served; "
                         f"use one of {', '.join(STUDENT_TIERS)}")
    client = store.client()
    result = compare(client, config.tier)
    if result is None:
        raise ValueError(f"serving_weakness_profile: tier {config.tier} has no served traffic beyond its "
                         "baseline yet (see the no_serving_drift check)")
    profile = drift.weakness_profile(result["recent_rows"], source=client.uri(f"{COLLECTED_PREFIX}/parts"))
    body = json.dumps({"weakness_profile": profile.as_dict(), "tier": config.tier,
                       "serving_version": result["version"], "window": result["window"],
                       "drifted": result["drifted"]}, indent=2, sort_keys=True).encode() + b"\n"
    uri = client.put_bytes(SERVING_PROFILE_KEY, body)
    lines = ["| dimension | value | error rate | rows |", "|---|---|---:|---:|"]
    for dimension, rates in profile.error_rates.items():
        for value, rate in rates.items():
            lines.append(f"| {dimension} | {value} | {rate:.2f} | {profile.counts[dimension][value]} |")
    context.log.info(f"{config.tier} v{result['version']}: {drift.describe(result)}")
    return MaterializeResult(
        metadata={"uri": MetadataValue.path(uri), "tier": config.tier,
                  "serving_version": version_label(result["version"]), "window": result["window"],
                  "drifted": ", ".join(result["drifted"]) or "none",
                  "profile": MetadataValue.md("\n".join(lines))},
        data_version=DataVersion(content_hash(body)),
    )
