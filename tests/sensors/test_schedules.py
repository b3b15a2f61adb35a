"""The nightly cascade: the schedule starts bronze on time (nothing for a stale tick), and
`nightly_cascade_sensor` starts silver, gold and the serving manifest in order, each once."""

from __future__ import annotations

import datetime as dt

from dagster import DagsterInstance, DagsterRunStatus, RunRequest, build_schedule_context, build_sensor_context
from dagster._core.test_utils import create_run_for_test

from definitions import defs
from sensors.schedules import NIGHTLY_CRON, nightly_cascade, nightly_cascade_sensor, stage_request


def _evaluate(scheduled: dt.datetime):
    context = build_schedule_context(scheduled_execution_time=scheduled,
                                     repository_def=defs.get_repository_def())
    result = nightly_cascade.evaluate_tick(context)
    return list(result.run_requests or []), result.skip_message


def test_on_time_tick_requests_the_bronze_run():
    now = dt.datetime.now(dt.timezone.utc)
    requests, skip = _evaluate(now - dt.timedelta(minutes=1))
    assert skip is None
    night = (now - dt.timedelta(minutes=1)).strftime("%Y-%m-%d")
    assert [(r.partition_key, r.job_name, r.run_key) for r in requests] == [
        ("bronze", "nightly_cascade_job", f"nightly-{night}-bronze")]
    assert all(isinstance(r, RunRequest) for r in requests)


def test_stale_tick_is_skipped_not_queued():
    requests, skip = _evaluate(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=10))
    assert requests == []
    assert "late" in skip and "skipped" in skip


def test_schedule_is_nightly_at_two_and_starts_stopped():
    assert nightly_cascade.cron_schedule == NIGHTLY_CRON == "0 2 * * *"
    assert nightly_cascade.default_status.value == "STOPPED"


def _tick(instance):
    with build_sensor_context(instance=instance, repository_def=defs.get_repository_def()) as context:
        result = nightly_cascade_sensor.evaluate_tick(context)
    return list(result.run_requests or []), result.skip_message


def _add(instance, night, stage, status):
    request = stage_request(night, stage)
    return create_run_for_test(instance, job_name=request.job_name, tags=request.tags, status=status)


def test_the_sensor_runs_each_stage_once_the_one_before_has_ended():
    night = "2026-12-01"
    with DagsterInstance.ephemeral() as instance:
        assert "no nightly cascade" in _tick(instance)[1]
        _add(instance, night, "bronze", DagsterRunStatus.STARTED)
        requests, skip = _tick(instance)
        assert requests == [] and "waiting for bronze" in skip
        # A failed bronze run does not stop silver: silver distils from the last bronze adapter
        # there is, or fails on its own saying it has none.
        _add(instance, night, "bronze", DagsterRunStatus.FAILURE)
        (request,), _ = _tick(instance)
        assert (request.job_name, request.partition_key, request.run_key) == (
            "distillation_job", "silver", f"nightly-{night}-silver")
        _add(instance, night, "silver", DagsterRunStatus.SUCCESS)
        (request,), _ = _tick(instance)
        assert (request.partition_key, request.tags["srl/stage"]) == ("gold", "gold")
        _add(instance, night, "gold", DagsterRunStatus.FAILURE)
        (request,), _ = _tick(instance)
        assert (request.job_name, request.partition_key) == ("serving_job", None)
        _add(instance, night, "serving", DagsterRunStatus.SUCCESS)
        requests, skip = _tick(instance)
        assert requests == [] and "every stage has run" in skip


def test_a_failed_stage_that_will_be_retried_is_waited_for():
    with DagsterInstance.ephemeral() as instance:
        run = _add(instance, "2026-12-01", "bronze", DagsterRunStatus.FAILURE)
        instance.add_run_tags(run.run_id, {"dagster/will_retry": "true"})
        requests, skip = _tick(instance)
        assert requests == [] and "waiting for bronze" in skip
