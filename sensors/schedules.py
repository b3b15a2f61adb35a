"""The nightly Bronze → Silver → Gold cascade, once a night, in dependency order.

At 02:00 the schedule starts the bronze run (datasets, bronze SRL → RLVR, its evaluation);
`nightly_cascade_sensor` then starts silver's distillation run once bronze's has ended, gold's once
silver's has, and finally the serving manifest. Runs are tagged with the night and stage, and a
stage's run key is `nightly-<night>-<stage>`, so each runs once a night. The data assets are
deterministic for unchanged inputs (same `DataVersion`), so rebuilding them is idempotent. Dagster never replays ticks from before a schedule was turned on, and for a
plain cron schedule only the latest missed tick is considered; on top of that a tick evaluated more
than `NIGHTLY_MAX_LATENESS` after its scheduled time is skipped, so a daemon that comes back at noon
does not start a night's worth of training during the day.
"""

from __future__ import annotations

import datetime as dt
import os

from dagster import (
    AssetSelection,
    DagsterRun,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    build_schedule_from_partitioned_job,
    define_asset_job,
    schedule,
    sensor,
)

from assets.partitions import daily_partitions
from sensors.spot import WILL_RETRY_TAG

NIGHTLY_CRON = "0 2 * * *"
NIGHTLY_TIMEZONE = os.environ.get("SRL_NIGHTLY_TIMEZONE", "UTC")
NIGHTLY_MAX_LATENESS = dt.timedelta(hours=3)

STAGE_TAG, NIGHT_TAG = "srl/stage", "srl/nightly"
DISTILLATION = AssetSelection.groups("distillation") | AssetSelection.assets("quality_report", "registered_model")

nightly_cascade_job = define_asset_job(
    "nightly_cascade_job",
    # Trace generation (daily partitions) runs an hour earlier on its own schedule, and serving logs
    # are collected by their sensor as they arrive. Distillation and serving follow in their own runs.
    selection=(AssetSelection.groups("data", "training", "evaluation")
               - AssetSelection.assets("generated_traces", "collected_traces")),
    description="Datasets, then one tier's SRL → RLVR adapter and its evaluation (nightly: bronze).",
    # A retried run (dagster.yaml run_retries) redoes only the assets that failed or never ran.
    tags={"dagster/retry_strategy": "FROM_ASSET_FAILURE"},
)
distillation_job = define_asset_job(
    "distillation_job",
    selection=DISTILLATION,
    description="One student tier: teacher traces → distilled adapter → quality report → registry.",
    tags={"dagster/retry_strategy": "FROM_ASSET_FAILURE"},
)
serving_job = define_asset_job(
    "serving_job", selection=AssetSelection.assets("serving_manifest", "router_settings"),
    description="The serving manifest from the registry's decisions, and the router table from the approved versions.")

STAGES = (  # (stage, job, partition), in the order the cascade runs them
    ("bronze", "nightly_cascade_job", "bronze"),
    ("silver", "distillation_job", "silver"),
    ("gold", "distillation_job", "gold"),
    ("serving", "serving_job", None),
)


def stage_request(night: str, stage: str) -> RunRequest:
    _, job, partition = next(s for s in STAGES if s[0] == stage)
    return RunRequest(run_key=f"nightly-{night}-{stage}", job_name=job, partition_key=partition,
                      tags={NIGHT_TAG: night, STAGE_TAG: stage})


@schedule(
    name="nightly_cascade",
    cron_schedule=NIGHTLY_CRON,
    execution_timezone=NIGHTLY_TIMEZONE,
    job=nightly_cascade_job,
    default_status=DefaultScheduleStatus.STOPPED,
    description=f"02:00 ({NIGHTLY_TIMEZONE}; set SRL_NIGHTLY_TIMEZONE): datasets → bronze SRL → RLVR; "
                "nightly_cascade_sensor then runs silver, gold and the serving manifest in order. "
                "Late ticks are skipped, never queued.",
)
def nightly_cascade(context: ScheduleEvaluationContext):
    scheduled = context.scheduled_execution_time
    now = dt.datetime.now(tz=scheduled.tzinfo) if scheduled.tzinfo else dt.datetime.now()
    if now - scheduled > NIGHTLY_MAX_LATENESS:
        return SkipReason(
            f"tick scheduled for {scheduled.isoformat()} evaluated {now - scheduled} late "
            f"(more than {NIGHTLY_MAX_LATENESS}): skipped, the next night's tick runs as usual"
        )
    return stage_request(scheduled.strftime("%Y-%m-%d"), "bronze")


@sensor(
    name="nightly_cascade_sensor",
    jobs=[nightly_cascade_job, distillation_job, serving_job],
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Runs the rest of tonight's cascade in order: each stage (silver, gold, serving "
                "manifest) once the one before it has ended. A failed tier does not stop the "
                "others: a tier whose teacher is missing fails on its own, and the manifest "
                "always records what each tier serves.",
)
def nightly_cascade_sensor(context: SensorEvaluationContext):
    newest = context.instance.get_runs(filters=RunsFilter(tags={STAGE_TAG: "bronze"}), limit=1)
    if not newest:
        return SkipReason("no nightly cascade has started yet (the nightly_cascade schedule starts it)")
    night = newest[0].tags[NIGHT_TAG]
    runs = context.instance.get_runs(filters=RunsFilter(tags={NIGHT_TAG: night}))
    by_stage: dict[str, DagsterRun] = {}
    for run in runs:  # newest first: a stage's newest run (a retry) stands for it
        by_stage.setdefault(run.tags.get(STAGE_TAG), run)
    for (previous, *_), (stage, *_) in zip(STAGES, STAGES[1:]):
        if stage in by_stage:
            continue
        before = by_stage.get(previous)
        if before is None:
            return SkipReason(f"night {night}: stage {previous} has no run")
        if not before.is_finished or before.tags.get(WILL_RETRY_TAG) == "true":
            return SkipReason(f"night {night}: waiting for {previous} (run {before.run_id}, {before.status.value})")
        return stage_request(night, stage)
    return SkipReason(f"night {night}: every stage has run")


trace_generation_job = define_asset_job(
    "trace_generation_job",
    selection=AssetSelection.assets("generated_traces"),
    partitions_def=daily_partitions,
    description="The proposer → solver → verifier collaboration for one day.",
)

nightly_generation = build_schedule_from_partitioned_job(
    trace_generation_job,
    name="nightly_generation",
    hour_of_day=1,
    default_status=DefaultScheduleStatus.STOPPED,
    description="01:00: new expert traces for today's partition, aimed at last night's evaluation "
                "misses, ready for the 02:00 cascade.",
)
