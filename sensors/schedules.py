"""The nightly cascade: rebuild the data, retrain and re-evaluate every tier, once a night.

One run per tier partition (gold, silver, bronze), each materializing the whole graph for its tier.
The data assets are deterministic for unchanged inputs (same `DataVersion`), so each run rebuilding
them is idempotent. Dagster never replays ticks from before a schedule was turned on, and for a
plain cron schedule only the latest missed tick is considered; on top of that a tick evaluated more
than `NIGHTLY_MAX_LATENESS` after its scheduled time is skipped, so a daemon that comes back at noon
does not start a night's worth of training during the day.
"""

from __future__ import annotations

import datetime as dt
import os

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    build_schedule_from_partitioned_job,
    define_asset_job,
    schedule,
)

from assets.partitions import daily_partitions, tier_partitions

NIGHTLY_CRON = "0 2 * * *"
NIGHTLY_TIMEZONE = os.environ.get("SRL_NIGHTLY_TIMEZONE", "UTC")
NIGHTLY_MAX_LATENESS = dt.timedelta(hours=3)

nightly_cascade_job = define_asset_job(
    "nightly_cascade_job",
    # Trace generation (daily partitions) runs an hour earlier on its own schedule, and serving logs
    # are collected by their sensor as they arrive.
    selection=AssetSelection.all() - AssetSelection.assets("generated_traces", "collected_traces"),
    description="Every asset of the graph for one tier partition, from expert traces to evaluation.",
    # A retried run (dagster.yaml run_retries) redoes only the assets that failed or never ran.
    tags={"dagster/retry_strategy": "FROM_ASSET_FAILURE"},
)


@schedule(
    name="nightly_cascade",
    cron_schedule=NIGHTLY_CRON,
    execution_timezone=NIGHTLY_TIMEZONE,
    job=nightly_cascade_job,
    default_status=DefaultScheduleStatus.STOPPED,
    description=f"02:00 ({NIGHTLY_TIMEZONE}; set SRL_NIGHTLY_TIMEZONE): traces → datasets → "
                "SRL → RLVR → evaluation, one run per tier. Late ticks are skipped, never queued.",
)
def nightly_cascade(context: ScheduleEvaluationContext):
    scheduled = context.scheduled_execution_time
    now = dt.datetime.now(tz=scheduled.tzinfo) if scheduled.tzinfo else dt.datetime.now()
    if now - scheduled > NIGHTLY_MAX_LATENESS:
        return SkipReason(
            f"tick scheduled for {scheduled.isoformat()} evaluated {now - scheduled} late "
            f"(more than {NIGHTLY_MAX_LATENESS}): skipped, the next night's tick runs as usual"
        )
    night = scheduled.strftime("%Y-%m-%d")
    return [
        RunRequest(run_key=f"nightly-{night}-{tier}", partition_key=tier,
                   tags={"srl/nightly": night, "srl/tier": tier})
        for tier in tier_partitions.get_partition_keys()
    ]


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
