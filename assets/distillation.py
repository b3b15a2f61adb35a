"""The cascade's distillation stage: teacher traces, then the distilled student adapter, per student tier.

Partitioned by the student tier (silver learns from bronze, gold from silver; `TEACHER_OF`):

- `teacher_traces[tier]`: what the teacher tier says on the distillation prompts, the train split of
  `validated_traces` (generated problems and collected traces alike).
- `distilled_adapter[tier]`: a fresh LoRA on the student's base model trained by distillation
  (`srl train --stage distill` through the `TrainingBackend`), stored content-addressed under
  `adapters/{tier}/distilled/{version}/`, with `current.json` naming the newest.

Dagster allows no cycle between asset keys, and gold's teacher is silver's `distilled_adapter`, so
that one edge (and the bronze adapter for silver's traces) cannot be drawn. It is kept as data
lineage instead: every teacher trace file and student adapter records the teacher adapter's URI and
content version, and a student refuses traces whose teacher has changed since they were generated.
The cascade runs the tiers in order (`sensors.schedules.nightly_cascade_sensor`).
"""

import json
import tempfile
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetDep,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    StaticPartitionMapping,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import Field

from assets.data import OWNERS, VALIDATED_TRACES_KEY
from assets.metadata import preview
from assets.monitoring import record
from assets.retries import storage_retry_policy
from resources.monitoring import MonitoringResource
from resources.storage import ArtifactStore
from resources.training import TrainingBackend, TrainingRequest, training_job_name
from srl_platform import distill
from srl_platform.config import stage_config
from srl_platform.monitoring import distillation_metrics, training_cost
from srl_platform.storage import ArtifactStoreClient, content_hash, get_dir, put_dir
from srl_platform.tiers import ADAPTER_WEIGHTS, STUDENT_TIERS, adapter_key, get_tier, teacher_of
from srl_platform.traces import read_records, records_from_parquet_bytes, write_jsonl

DISTILL_CODE_VERSION = "1"
student_partitions = StaticPartitionsDefinition(list(STUDENT_TIERS))
"""Every cascade asset exists once per student tier (silver, gold)."""
# Upstream bronze -> downstream silver: the bronze SRL→RLVR adapter teaches silver.
BRONZE_TEACHES_SILVER = StaticPartitionMapping({"bronze": "silver"})


def teacher_traces_key(tier: str) -> str:
    return f"datasets/teacher_traces/{tier}.jsonl"


def distilled_key(tier: str, version: str) -> str:
    return f"adapters/{tier}/distilled/{version}"


def current_key(tier: str) -> str:
    return f"adapters/{tier}/distilled/current.json"


def current_distilled(store: ArtifactStoreClient, tier: str) -> dict | None:
    """{"version", "key", "uri"} of the tier's newest distilled adapter, or None."""
    key = current_key(tier)
    return json.loads(store.get_bytes(key)) if store.exists(key) else None


def teacher_adapter(store: ArtifactStoreClient, student: str, directory: Path) -> dict:
    """Download the teacher of `student` into `directory`: {"tier", "key", "uri", "version", "dir"}."""
    teacher = teacher_of(student)
    if teacher == "bronze":
        key, upstream = adapter_key("bronze", "rlvr"), "rlvr_checkpoint[bronze]"
    else:
        current = current_distilled(store, teacher)
        key, upstream = (current["key"] if current else current_key(teacher)), f"distilled_adapter[{teacher}]"
    adapter_dir = get_dir(store, key, directory)
    if not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        raise Failure(f"the teacher of {student} is {teacher}, but {store.uri(key)} holds no "
                      f"{ADAPTER_WEIGHTS}: materialize {upstream} first", allow_retries=False)
    return {"tier": teacher, "key": key, "uri": store.uri(key), "dir": adapter_dir,
            "version": content_hash((adapter_dir / ADAPTER_WEIGHTS).read_bytes())}


class TeacherTracesConfig(Config):
    max_prompts: int = Field(default=16, ge=1, description="Distillation prompts (train split) answered.")
    max_new_tokens: int = Field(default=128, ge=1, description="Token budget of one teacher solution.")
    batch_size: int = Field(default=16, ge=1, description="Generation batch.")
    teacher_base_model: str | None = Field(
        default=None, description="The teacher's base model (default: the teacher tier's TierSpec).")


@asset(
    partitions_def=student_partitions,
    deps=["validated_traces", AssetDep("rlvr_checkpoint", partition_mapping=BRONZE_TEACHES_SILVER)],
    group_name="distillation",
    kinds={"python", "pytorch"},
    owners=OWNERS,
    code_version=DISTILL_CODE_VERSION,
    retry_policy=storage_retry_policy,
)
def teacher_traces(context: AssetExecutionContext, config: TeacherTracesConfig,
                   store: ArtifactStore) -> MaterializeResult:
    """The teacher tier's greedy solutions to the distillation prompts (the train split of
    `validated_traces`), each checked against the reference answer: what the student of this
    partition learns to imitate. JSONL at `datasets/teacher_traces/{tier}.jsonl`; the teacher
    adapter's URI and content version are in the metadata and in the file's header row.

    Idempotent: greedy decoding, so unchanged prompts and teacher give the same rows (DataVersion).
    """
    tier = context.partition_key
    client = store.client()
    if not client.exists(VALIDATED_TRACES_KEY):
        raise Failure(f"teacher_traces[{tier}]: {client.uri(VALIDATED_TRACES_KEY)} does not exist; "
                      "materialize `validated_traces` first", allow_retries=False)
    data = client.get_bytes(VALIDATED_TRACES_KEY)
    problems = [t for t in records_from_parquet_bytes(data) if t.get("split") == "train"][: config.max_prompts]
    if not problems:
        raise Failure(f"teacher_traces[{tier}]: {client.uri(VALIDATED_TRACES_KEY)} has no train-split "
                      "trace to use as a distillation prompt", allow_retries=False)
    with tempfile.TemporaryDirectory(prefix=f"teacher-traces-{tier}-") as tmp:
        teacher = teacher_adapter(client, tier, Path(tmp) / "teacher")
        base = config.teacher_base_model or get_tier(teacher["tier"]).base_model
        context.log.info(f"{teacher['tier']} ({teacher['uri']}) answers {len(problems)} prompts for {tier}")
        rows, stats = distill.teacher_traces(base, str(teacher["dir"]), problems, config.max_new_tokens,
                                             config.batch_size)
    lineage = {"teacher_tier": teacher["tier"], "teacher_adapter_uri": teacher["uri"],
               "teacher_adapter_version": teacher["version"], "teacher_base_model": base,
               "prompts_data_version": content_hash(data)}
    rows = [{**row, **lineage} for row in rows]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_jsonl(rows, Path(tmp) / "traces.jsonl")
        body = path.read_bytes()
    uri = client.put_bytes(teacher_traces_key(tier), body)
    return MaterializeResult(
        metadata={
            "traces_uri": MetadataValue.path(uri),
            "prompts": stats["prompts"],
            "verified": stats["verified"],
            "verified_rate": MetadataValue.float(stats["verified"] / stats["prompts"]),
            "teacher_tokens_per_second": MetadataValue.float(stats["tokens_per_second"]),
            "generation_seconds": MetadataValue.float(stats["seconds"]),
            **{k: MetadataValue.text(str(v)) for k, v in lineage.items()},
            "preview": preview(rows, ("id", "verified", "question", "completion")),
        },
        data_version=DataVersion(content_hash(body)),
    )


class DistillRunConfig(Config):
    """Overrides of a distillation run; None keeps the tier's `distill_budget` and `DistillConfig`."""

    base_model: str | None = Field(default=None, description="The student's base model (default: the tier's).")
    teacher_base_model: str | None = Field(default=None, description="The teacher's base model.")
    max_steps: int | None = Field(default=None, ge=0, description="Optimizer steps (0: the untrained "
                                                                  "student, a baseline).")
    prompts_per_step: int | None = Field(default=None, ge=1, description="Prompts per optimizer step.")
    method: str | None = Field(default=None, description="auto, on_policy or sequence.")
    beta: float | None = Field(default=None, ge=0, le=1, description="Generalized JSD interpolation.")
    max_completion_length: int | None = Field(default=None, ge=1, description="Student rollout tokens.")
    checkpoint_interval_minutes: float | None = Field(default=None, gt=0,
                                                      description="Minutes between checkpoints.")

    def plan_args(self) -> tuple[str, ...]:
        args: list[str] = []
        for name in ("base_model", "teacher_base_model", "max_steps", "prompts_per_step", "method",
                     "beta", "max_completion_length"):
            value = getattr(self, name)
            if value is not None:
                args += [f"--{name.replace('_', '-')}", str(value)]
        return tuple(args)

    def cli_args(self) -> tuple[str, ...]:
        extra = (("--checkpoint-interval-minutes", str(self.checkpoint_interval_minutes))
                 if self.checkpoint_interval_minutes is not None else ())
        return self.plan_args() + extra


@asset(
    partitions_def=student_partitions,
    deps=["teacher_traces", AssetDep("rlvr_checkpoint", partition_mapping=BRONZE_TEACHES_SILVER)],
    group_name="distillation",
    kinds={"python", "pytorch", "trl"},
    owners=OWNERS,
    code_version=DISTILL_CODE_VERSION,
    retry_policy=storage_retry_policy,
)
def distilled_adapter(context: AssetExecutionContext, config: DistillRunConfig, store: ArtifactStore,
                      training_backend: TrainingBackend, monitoring: MonitoringResource) -> MaterializeResult:
    """The student tier's LoRA adapter distilled from its teacher: on-policy (TRL
    `DistillationTrainer`, generalized JSD) when both share a tokenizer, else sequence-level (SFT on
    the verified teacher traces); the path taken is in the metadata. Stored content-addressed under
    `adapters/{tier}/distilled/{version}/` so every registered version stays servable.

    Idempotent like the training assets: the job is named by what it trains on (traces, teacher
    weights, plan), its checkpoints are kept, and a re-run resumes or reuses them.
    """
    tier = context.partition_key
    client = store.client()
    key = teacher_traces_key(tier)
    if not client.exists(key):
        raise Failure(f"distilled_adapter[{tier}]: {client.uri(key)} does not exist; materialize "
                      f"teacher_traces[{tier}] first", allow_retries=False)
    with tempfile.TemporaryDirectory(prefix=f"distill-{tier}-") as tmp:
        traces_file = client.get_file(key, Path(tmp) / "teacher_traces.jsonl")
        traces_version = content_hash(traces_file.read_bytes())
        traces = read_records(traces_file)
        teacher = teacher_adapter(client, tier, Path(tmp) / "teacher")
        recorded = {row.get("teacher_adapter_version") for row in traces}
        if recorded != {teacher["version"]}:
            raise Failure(f"distilled_adapter[{tier}]: {client.uri(key)} was generated by teacher version(s) "
                          f"{sorted(map(str, recorded))} but {teacher['uri']} is now {teacher['version']}: "
                          f"materialize teacher_traces[{tier}] again", allow_retries=False)
        plan = {"tier": get_tier(tier).as_dict(), "method": stage_config("distill").as_dict(),
                "args": config.plan_args()}
        identity = content_hash(b"distill", traces_file.read_bytes(), teacher["version"].encode(),
                                json.dumps(plan, sort_keys=True).encode())
        request = TrainingRequest(job_name=training_job_name("distilled_adapter", tier, identity),
                                  stage="distill", tier=tier, data_file=traces_file, teacher=teacher["dir"],
                                  args=config.cli_args())
        outcome = training_backend.run_training(context, request)
    weights = outcome.adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise Failure(f"distilled_adapter[{tier}]: job {outcome.job_name} finished without {weights}")
    version = content_hash(weights.read_bytes())
    stored = distilled_key(tier, version)
    uri = put_dir(client, stored, outcome.adapter_dir)
    client.put_bytes(current_key(tier), json.dumps({"version": version, "key": stored, "uri": uri}).encode())
    summary = outcome.summary
    losses = [loss for _, loss in summary.get("loss_curve", [])]
    context.log.info(f"{tier} distilled from {teacher['tier']} by {summary['method']}: {uri}")
    spec = get_tier(tier)
    cost = training_cost(spec.instance_type, spec.instance_count, outcome.wall_seconds,
                         monitoring.training_price_per_hour)
    record(context, monitoring, client, distillation_metrics(summary, cost), tier)
    return MaterializeResult(
        metadata={
            "adapter_uri": MetadataValue.path(uri),
            "method": MetadataValue.text(summary["method"]),
            "method_reason": MetadataValue.text(summary["method_reason"]),
            "teacher_tier": MetadataValue.text(teacher["tier"]),
            "teacher_adapter_uri": MetadataValue.path(teacher["uri"]),
            "teacher_adapter_version": MetadataValue.text(teacher["version"]),
            "teacher_traces_uri": MetadataValue.path(client.uri(key)),
            "teacher_traces_version": MetadataValue.text(traces_version),
            "examples": MetadataValue.int(summary["examples"]),
            "verified_traces": MetadataValue.int(summary["verified_traces"]),
            "global_step": MetadataValue.int(summary["global_step"]),
            "max_steps": MetadataValue.int(summary["max_steps"]),
            "loss_first": MetadataValue.float(float(losses[0]) if losses else float("nan")),
            "loss_last": MetadataValue.float(float(losses[-1]) if losses else float("nan")),
            "resumed_from": MetadataValue.text(summary["resumed_from"] or "none (fresh run)"),
            "base_model": MetadataValue.text(summary["base_model"]),
            "training_job": MetadataValue.text(outcome.job_name),
            "checkpoint_dir": MetadataValue.path(outcome.checkpoint_dir),
            "wall_seconds": MetadataValue.float(outcome.wall_seconds),
        },
        data_version=DataVersion(version),
    )
