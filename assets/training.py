"""Tier checkpoints: the SRL adapter, then the RLVR adapter that continues it, one per tier.

Both assets read their dataset from the artefact store by key, run `python -m srl_platform.train`
through the `TrainingBackend` resource and upload the finished LoRA adapter (safetensors) to
`adapters/{tier}/{stage}/`. Their `DataVersion` is the content hash of the adapter weights.
"""

import json
import math
import tempfile
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

from assets.data import OWNERS, RLVR_PROBLEMS_KEY, SRL_STEPS_KEY
from assets.monitoring import record
from assets.partitions import tier_partitions
from assets.retries import storage_retry_policy
from resources.monitoring import MonitoringResource
from resources.storage import ArtifactStore
from resources.training import (
    TrainingBackend,
    TrainingOutcome,
    TrainingRequest,
    training_job_name,
)
from srl_platform.config import Stage, stage_config
from srl_platform.monitoring import training_cost, training_metrics
from srl_platform.storage import ArtifactStoreClient, content_hash, get_dir, put_dir
from srl_platform.tiers import ADAPTER_WEIGHTS, adapter_key, get_tier

TRAINING_CODE_VERSION = "1"
CURVE_ROWS = 12  # reward-curve table rows shown in the UI (the whole curve is in metrics.jsonl)


class TrainingRunConfig(Config):
    """Overrides of a training run. None keeps the tier's `TierSpec` budget and the stage's
    `SRLConfig` / `RLVRConfig` default; each set field becomes a `srl_platform.train` flag."""

    base_model: str | None = Field(
        default=None, description="Pulled model name or model directory (default: the tier's).")
    max_steps: int | None = Field(default=None, ge=1, description="Optimizer steps of the whole run.")
    prompts_per_step: int | None = Field(default=None, ge=1, description="Distinct prompts per step.")
    num_generations: int | None = Field(default=None, ge=2, description="Rollouts per prompt (G).")
    max_completion_length: int | None = Field(default=None, ge=1, description="Tokens per rollout.")
    checkpoint_interval_minutes: float | None = Field(
        default=None, gt=0, description="Wall-clock minutes between checkpoints (default: the tier's). "
                                        "Not part of the job's identity: a resume may save more or "
                                        "less often than the attempt it continues.")

    def cli_args(self) -> tuple[str, ...]:
        """Every set field as a `srl_platform.train` flag."""
        return self.plan_args() + self._flags(("checkpoint_interval_minutes",))

    def plan_args(self) -> tuple[str, ...]:
        """The flags that change what is trained: part of the training job's name."""
        return self._flags(("base_model", "max_steps", "prompts_per_step", "num_generations",
                            "max_completion_length"))

    def _flags(self, names: tuple[str, ...]) -> tuple[str, ...]:
        args: list[str] = []
        for name in names:
            value = getattr(self, name)
            if value is not None:
                args += [f"--{name.replace('_', '-')}", str(value)]
        return tuple(args)


@asset(
    partitions_def=tier_partitions,
    deps=["srl_steps"],
    group_name="training",
    kinds={"python", "pytorch", "trl"},
    owners=OWNERS,
    code_version=TRAINING_CODE_VERSION,
    retry_policy=storage_retry_policy,
)
def srl_checkpoint(context: AssetExecutionContext, config: TrainingRunConfig, store: ArtifactStore,
                   training_backend: TrainingBackend, monitoring: MonitoringResource) -> MaterializeResult:
    """The tier's LoRA adapter after SRL: GRPO with a dense step reward (similarity of each
    generated step to the expert's next step) on the train split of `srl_steps`, with dynamic
    sampling. Stored as safetensors under `adapters/{tier}/srl/`.

    Idempotent: the training job is named by a hash of what it trains on and how (dataset bytes,
    the tier's TierSpec, the stage's method config, run-config overrides), and its checkpoints
    are kept, so re-running with unchanged inputs resumes at the last step, trains nothing and
    yields the same weights (same DataVersion). A run stopped by SIGTERM resumes where it stopped.
    """
    return _train_stage(context, config, store.client(), training_backend, monitoring, "srl", SRL_STEPS_KEY,
                        upstream="srl_steps")


@asset(
    partitions_def=tier_partitions,
    # srl_checkpoint shares the tier partitions, so each tier continues its own SRL adapter.
    deps=["rlvr_problems", AssetDep("srl_checkpoint")],
    group_name="training",
    kinds={"python", "pytorch", "trl"},
    owners=OWNERS,
    code_version=TRAINING_CODE_VERSION,
    retry_policy=storage_retry_policy,
)
def rlvr_checkpoint(context: AssetExecutionContext, config: TrainingRunConfig, store: ArtifactStore,
                    training_backend: TrainingBackend, monitoring: MonitoringResource) -> MaterializeResult:
    """The tier's final adapter (SRL→RLVR): the SRL adapter trained further with GRPO on a
    verifiable outcome reward (final answer checked with math-verify) on the train split of
    `rlvr_problems`, dropping groups whose rewards are all equal. Stored under
    `adapters/{tier}/rlvr/`; this is the adapter `tier_eval` evaluates.

    Idempotent like `srl_checkpoint`: the job hash also covers the SRL adapter's weights, so a new
    SRL adapter starts a new RLVR job and an unchanged one resumes (or reuses) the previous one.
    """
    return _train_stage(context, config, store.client(), training_backend, monitoring, "rlvr",
                        RLVR_PROBLEMS_KEY, upstream="rlvr_problems", init_stage="srl")


def _train_stage(context: AssetExecutionContext, config: TrainingRunConfig,
                 store: ArtifactStoreClient, backend: TrainingBackend, monitoring: MonitoringResource,
                 stage: Stage, data_key: str,
                 upstream: str, init_stage: Stage | None = None) -> MaterializeResult:
    tier = context.partition_key
    asset_name = context.asset_key.to_user_string()
    if not store.exists(data_key):
        raise Failure(f"{asset_name}[{tier}]: dataset {store.uri(data_key)} does not exist; "
                      f"materialize `{upstream}` first", allow_retries=False)
    args = config.cli_args()
    with tempfile.TemporaryDirectory(prefix=f"{asset_name}-{tier}-") as tmp:
        data_file = store.get_file(data_key, Path(tmp) / Path(data_key).name)
        # Everything the trainer's plan depends on: a changed budget or method default starts a
        # new job instead of failing the resume check of the old one.
        plan = {"tier": get_tier(tier).as_dict(), "method": stage_config(stage).as_dict(),
                "args": config.plan_args()}
        identity = [stage.encode(), data_file.read_bytes(), json.dumps(plan, sort_keys=True).encode()]
        init_dir, init_uri = None, None
        if init_stage is not None:
            key = adapter_key(tier, init_stage)
            init_dir = get_dir(store, key, Path(tmp) / "init_from")
            if not (init_dir / ADAPTER_WEIGHTS).is_file():
                raise Failure(f"{asset_name}[{tier}]: no {init_stage} adapter at "
                              f"{store.uri(key)}/{ADAPTER_WEIGHTS}; materialize "
                              f"`{init_stage}_checkpoint` for partition {tier} first",
                              allow_retries=False)
            identity.append((init_dir / ADAPTER_WEIGHTS).read_bytes())
            init_uri = store.uri(key)
        request = TrainingRequest(
            job_name=training_job_name(asset_name, tier, content_hash(*identity)),
            stage=stage, tier=tier, data_file=data_file, init_from=init_dir, args=args)
        outcome = backend.run_training(context, request)

    weights = outcome.adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise Failure(f"{asset_name}[{tier}]: training job {outcome.job_name} finished without "
                      f"{weights}")
    version = content_hash(weights.read_bytes())
    uri = put_dir(store, adapter_key(tier, stage), outcome.adapter_dir)
    context.log.info(f"{stage} adapter for {tier} at {uri} (DataVersion {version})")
    spec = get_tier(tier)
    cost = training_cost(spec.instance_type, spec.instance_count, outcome.wall_seconds,
                         monitoring.training_price_per_hour)
    record(context, monitoring, store, training_metrics(outcome.summary, outcome.metrics, cost), tier)
    metadata = _training_metadata(outcome, uri, store.uri(data_key), init_uri)
    return MaterializeResult(metadata=metadata, data_version=DataVersion(version))


def _training_metadata(outcome: TrainingOutcome, uri: str, data_uri: str,
                       init_uri: str | None) -> dict:
    summary = outcome.summary
    rewards = [reward for _, reward in summary.get("reward_curve", [])]
    metadata = {
        "adapter_uri": MetadataValue.path(uri),
        "global_step": MetadataValue.int(summary["global_step"]),
        "max_steps": MetadataValue.int(summary["max_steps"]),
        "reward_curve": MetadataValue.md(_curve_table(outcome.metrics)),
        "dynamic_sampling_drop_rate": MetadataValue.float(float(summary["drop_rate"])),
        "wall_seconds": MetadataValue.float(outcome.wall_seconds),
        "train_seconds": MetadataValue.float(float(summary["wall_seconds"])),
        "resumed_from": MetadataValue.text(summary["resumed_from"] or "none (fresh run)"),
        "base_model": MetadataValue.text(summary["base_model"]),
        "init_from": MetadataValue.text(init_uri or "none (fresh LoRA)"),
        "dataset_uri": MetadataValue.path(data_uri),
        "dataset_sha256": MetadataValue.text(summary["data_sha256"]),
        "training_job": MetadataValue.text(outcome.job_name),
        "checkpoint_dir": MetadataValue.path(outcome.checkpoint_dir),
        "metrics_streamed": MetadataValue.int(outcome.metrics_streamed),
    }
    if rewards:
        metadata |= {
            "reward_first": MetadataValue.float(float(rewards[0])),
            "reward_last": MetadataValue.float(float(rewards[-1])),
            "reward_mean": MetadataValue.float(sum(rewards) / len(rewards)),
        }
    return metadata


def _curve_table(metrics: list[dict]) -> str:
    """Markdown table of the reward curve, thinned evenly to `CURVE_ROWS` rows (first and last kept)."""
    rows = [r for r in metrics if "reward" in r]
    if not rows:
        return "No reward was logged."
    if len(rows) > CURVE_ROWS:
        picks = sorted({round(i * (len(rows) - 1) / (CURVE_ROWS - 1)) for i in range(CURVE_ROWS)})
        rows = [rows[i] for i in picks]
    lines = ["| step | reward | reward std | drop rate |", "|---:|---:|---:|---:|"]
    for row in rows:
        cells = [row.get("reward"), row.get("reward_std"), row.get("dynamic_sampling/drop_rate")]
        lines.append(f"| {row['step']} | " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4f}"
