"""The nightly schedule: one run per tier on time, nothing for a stale tick."""

from __future__ import annotations

import datetime as dt

from dagster import RunRequest, build_schedule_context

from definitions import defs
from sensors.schedules import NIGHTLY_CRON, nightly_cascade


def _evaluate(scheduled: dt.datetime):
    context = build_schedule_context(scheduled_execution_time=scheduled,
                                     repository_def=defs.get_repository_def())
    result = nightly_cascade.evaluate_tick(context)
    return list(result.run_requests or []), result.skip_message


def test_on_time_tick_requests_one_run_per_tier():
    now = dt.datetime.now(dt.timezone.utc)
    requests, skip = _evaluate(now - dt.timedelta(minutes=1))
    assert skip is None
    assert [r.partition_key for r in requests] == ["gold", "silver", "bronze"]
    assert all(isinstance(r, RunRequest) for r in requests)
    night = (now - dt.timedelta(minutes=1)).strftime("%Y-%m-%d")
    assert {r.run_key for r in requests} == {f"nightly-{night}-{t}" for t in ("gold", "silver", "bronze")}


def test_stale_tick_is_skipped_not_queued():
    requests, skip = _evaluate(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=10))
    assert requests == []
    assert "late" in skip and "skipped" in skip


def test_schedule_is_nightly_at_two_and_starts_stopped():
    assert nightly_cascade.cron_schedule == NIGHTLY_CRON == "0 2 * * *"
    assert nightly_cascade.default_status.value == "STOPPED"
