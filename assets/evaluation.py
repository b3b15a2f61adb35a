"""Tier evaluation: the tier's final adapter against its own base model, on held-out problems.

Held-out data is the test split of `validated_traces`, not of `rlvr_problems`: the step pass
scores every expert step, so it needs each trace's numbered `solution`, which the RLVR problems
do not carry. Both training datasets are cut from the same validated traces with the same
per-question split, so test questions are in neither training set, and the lineage edge says
exactly which artefact the numbers were computed on.
"""

import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from dagster import (
    AssetDep,
    AssetExecutionContext,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.data import OWNERS, VALIDATED_TRACES_KEY
from assets.partitions import tier_partitions
from assets.retries import storage_retry_policy

from resources.storage import ArtifactStore
from srl_platform.evaluate import EvalSettings, evaluate
from srl_platform.models import fingerprint
from srl_platform.storage import ArtifactStoreClient, content_hash, get_dir
from srl_platform.tiers import ADAPTER_WEIGHTS, adapter_key
from srl_platform.traces import records_from_parquet_bytes

EVAL_SPLIT = "test"
BASE_CACHE_PREFIX = "reports/base_model_eval"
EVAL_CODE_VERSION = "1"
# Report fields shown side by side (adapter, base, delta), with their labels in the UI.
COMPARED = (
    ("accuracy", "accuracy"),
    ("mean_step_reward", "mean step reward"),
    ("format_violation_rate", "format-violation rate"),
    ("mean_solve_tokens", "mean tokens (solve)"),
    ("mean_step_tokens", "mean tokens (step)"),
)
_DEFAULTS = EvalSettings()


def report_key(tier: str) -> str:
    return f"reports/{tier}/tier_eval.json"


class EvalConfig(Config):
    """How much of the held-out split is evaluated, and how long generations may be."""

    max_problems: int | None = Field(
        default=_DEFAULTS.max_problems, ge=1, description="Test problems evaluated (None: all).")
    max_step_instances: int | None = Field(
        default=_DEFAULTS.max_step_instances, ge=1,
        description="Expert step instances scored (None: all).")
    solve_max_new_tokens: int = Field(default=_DEFAULTS.solve_max_new_tokens, ge=1,
                                      description="Token budget of a whole solution.")
    step_max_new_tokens: int = Field(default=_DEFAULTS.step_max_new_tokens, ge=1,
                                     description="Token budget of one step.")

    def settings(self) -> EvalSettings:
        return EvalSettings(max_problems=self.max_problems,
                            max_step_instances=self.max_step_instances,
                            solve_max_new_tokens=self.solve_max_new_tokens,
                            step_max_new_tokens=self.step_max_new_tokens)


@asset(
    partitions_def=tier_partitions,
    deps=["validated_traces", AssetDep("rlvr_checkpoint")],
    group_name="evaluation",
    kinds={"python", "pytorch"},
    owners=OWNERS,
    code_version=EVAL_CODE_VERSION,
    retry_policy=storage_retry_policy,
)
def tier_eval(context: AssetExecutionContext, config: EvalConfig,
              store: ArtifactStore) -> MaterializeResult:
    """How good the tier's SRL→RLVR adapter is, next to the base model it was trained from:
    accuracy (final answer verified), mean SRL step reward and format-violation rate (greedy
    decoding) on the test split of `validated_traces`. Report at `reports/{tier}/tier_eval.json`.

    Idempotent: decoding is greedy and the DataVersion is a hash of what was evaluated (adapter
    weights, eval data, settings, base model files). The base model's numbers are cached in the
    store by the same identity, so the three tiers sharing a base evaluate it once.
    """
    tier = context.partition_key
    client = store.client()
    settings = config.settings()
    traces, data_version = _test_traces(client)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"tier-eval-{tier}-") as tmp:
        key = adapter_key(tier, "rlvr")
        adapter_dir = get_dir(client, key, Path(tmp) / "adapter")
        if not (adapter_dir / ADAPTER_WEIGHTS).is_file():
            raise Failure(f"tier_eval[{tier}]: no adapter at {client.uri(key)}/{ADAPTER_WEIGHTS}; "
                          f"materialize `rlvr_checkpoint` for partition {tier} first",
                          allow_retries=False)
        adapter_version = content_hash((adapter_dir / ADAPTER_WEIGHTS).read_bytes())
        # The adapter only makes sense on the base it was trained from: its summary names it.
        base_model = json.loads((adapter_dir / "training_summary.json").read_text())["base_model"]
        context.log.info(f"evaluating {client.uri(key)} on {len(traces)} test traces")
        adapter_report = evaluate(base_model, traces, adapter=str(adapter_dir), settings=settings)
    adapter_report["adapter"] = client.uri(key)

    settings_json = json.dumps(asdict(settings), sort_keys=True)
    base_id = content_hash(fingerprint(base_model).encode(), data_version.encode(),
                           settings_json.encode(), EVAL_CODE_VERSION.encode())
    base_report, base_cache_key, cache_hit = _base_report(context, client, base_model, traces,
                                                          settings, base_id)
    eval_seconds = time.monotonic() - started

    report = {
        "tier": tier,
        "eval_data": {"uri": client.uri(VALIDATED_TRACES_KEY), "data_version": data_version,
                      "split": EVAL_SPLIT, "traces": len(traces)},
        "settings": asdict(settings),
        "adapter_data_version": adapter_version,
        "adapter": adapter_report,
        "base": base_report,
        "base_cache": {"uri": client.uri(base_cache_key), "hit": cache_hit},
        "deltas": {name: _delta(adapter_report[name], base_report[name]) for name, _ in COMPARED},
    }
    uri = client.put_bytes(report_key(tier), (json.dumps(report, indent=2) + "\n").encode())
    metadata = {
        "report_uri": MetadataValue.path(uri),
        "comparison": MetadataValue.md(_comparison_table(adapter_report, base_report)),
        "problems": MetadataValue.int(adapter_report["problems"]),
        "step_instances": MetadataValue.int(adapter_report["step_instances"]),
        "base_model": MetadataValue.text(base_model),
        "base_cache": MetadataValue.text(f"{'hit' if cache_hit else 'miss'}: "
                                         f"{client.uri(base_cache_key)}"),
        "adapter_data_version": MetadataValue.text(adapter_version),
        "eval_data_version": MetadataValue.text(data_version),
        # Time spent evaluating in this step (the base model too on a cache miss).
        "eval_seconds": MetadataValue.float(round(eval_seconds, 2)),
    }
    for name, _ in COMPARED:
        metadata[name] = MetadataValue.float(float(adapter_report[name]))
        metadata[f"base_{name}"] = MetadataValue.float(float(base_report[name]))
        metadata[f"delta_{name}"] = MetadataValue.float(report["deltas"][name])
    return MaterializeResult(metadata=metadata,
                             data_version=DataVersion(content_hash(adapter_version.encode(),
                                                                   base_id.encode())))


def _test_traces(client: ArtifactStoreClient) -> tuple[list[dict], str]:
    """The held-out traces and the content hash of the file they came from."""
    if not client.exists(VALIDATED_TRACES_KEY):
        raise Failure(f"tier_eval: {client.uri(VALIDATED_TRACES_KEY)} does not exist; "
                      "materialize `validated_traces` first", allow_retries=False)
    data = client.get_bytes(VALIDATED_TRACES_KEY)
    traces = [t for t in records_from_parquet_bytes(data) if t.get("split") == EVAL_SPLIT]
    if not traces:
        raise Failure(f"tier_eval: {client.uri(VALIDATED_TRACES_KEY)} has no trace with "
                      f"split={EVAL_SPLIT!r}; nothing held out to evaluate on",
                      allow_retries=False)
    return traces, content_hash(data)


def _base_report(context: AssetExecutionContext, client: ArtifactStoreClient, base_model: str,
                 traces: list[dict], settings: EvalSettings,
                 base_id: str) -> tuple[dict, str, bool]:
    """The base model's report from the store's cache, or evaluated now and cached."""
    key = f"{BASE_CACHE_PREFIX}/{base_id}.json"
    if client.exists(key):
        context.log.info(f"base model numbers from cache {client.uri(key)}")
        return json.loads(client.get_bytes(key)), key, True
    context.log.info(f"evaluating base model {base_model} (cached afterwards at {client.uri(key)})")
    report = evaluate(base_model, traces, settings=settings)
    client.put_bytes(key, (json.dumps(report, indent=2) + "\n").encode())
    return report, key, False


def _delta(adapter: float, base: float) -> float:
    return float(adapter) - float(base)


def _comparison_table(adapter: dict, base: dict) -> str:
    lines = ["| metric | adapter | base | delta |", "|---|---:|---:|---:|"]
    for name, label in COMPARED:
        lines.append(f"| {label} | {adapter[name]:.4f} | {base[name]:.4f} | "
                     f"{_delta(adapter[name], base[name]):+.4f} |")
    return "\n".join(lines)
