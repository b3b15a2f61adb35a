"""`spot_interruption_sensor` on job records built by hand (no training): one observation per
interruption, one resume run per ended job, nothing twice; a SageMaker-style restart while the job
runs is observed only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import (
    AssetObservation,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    RunRequest,
    build_sensor_context,
)

from assets.training import rlvr_checkpoint, srl_checkpoint
from resources.monitoring import MonitoringResource
from resources.storage import ArtifactStore
from resources.training import LocalTrainingBackend, TrainingBackend
from sensors.spot import RESUME_OF_TAG, WILL_RETRY_TAG, spot_interruption_sensor
from srl_platform.checkpoints import STATE_FILE
from srl_platform.jobs import (
    JobRef,
    JobStatus,
    record_local_exit,
    record_local_job,
    record_local_launch,
    sagemaker_job_status,
)
from srl_platform.train import EXIT_PREEMPTED

JOB = "srl-checkpoint-gold-0123456789abcdef"
OP_CONFIG = {"config": {"max_steps": 6, "base_model": "/models/tiny"}}


class SageMakerLikeBackend(TrainingBackend):
    """Reports one job from a canned DescribeTrainingJob response, the way a SageMaker backend would."""

    describe_json: str
    run_id: str | None = None
    checkpoint: str | None = None

    def run_training(self, context, request):
        raise NotImplementedError("a status-only test double")

    def list_jobs(self) -> list[JobRef]:
        name = json.loads(self.describe_json)["TrainingJobName"]
        return [JobRef(job_name=name, asset="srl_checkpoint", partition="silver", run_id=self.run_id)]

    def job_status(self, job_name: str) -> JobStatus:
        return sagemaker_job_status(json.loads(self.describe_json), self.checkpoint)


def describe(status: str, transitions: list[tuple[str, str]], **extra) -> str:
    return json.dumps({
        "TrainingJobName": "srl-checkpoint-silver-spot", "TrainingJobStatus": status,
        "SecondaryStatus": transitions[-1][0], "EnableManagedSpotTraining": True,
        "SecondaryStatusTransitions": [{"Status": s, "StartTime": f"2026-03-02T09:{m}:00+00:00",
                                        "StatusMessage": f"{s} message"} for s, m in transitions],
        **extra,
    })


@pytest.fixture
def instance(tmp_path_factory):
    with DagsterInstance.local_temp(str(tmp_path_factory.mktemp("dagster-home"))) as instance:
        yield instance


# The sensor's run requests resolve against the asset graph, as the daemon resolves them.
DEFS = Definitions(assets=[srl_checkpoint, rlvr_checkpoint], sensors=[spot_interruption_sensor],
                   resources={"store": ArtifactStore(root="unused"), "training_backend": LocalTrainingBackend(),
                              "monitoring": MonitoringResource()})


def launching_run(instance: DagsterInstance, status=DagsterRunStatus.FAILURE, **tags):
    """A run of the training assets with run config for srl_checkpoint, as the daemon would find it."""
    return instance.create_run_for_job(job_def=DEFS.resolve_implicit_global_asset_job_def(),
                                       status=status, tags=tags,
                                       run_config={"ops": {"srl_checkpoint": OP_CONFIG}})


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def checkpoint(job: Path, step: int) -> None:
    path = job / "checkpoints" / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / STATE_FILE).write_text(json.dumps({"global_step": step}))


def local_job(work_root: Path, run_id: str | None, *, name: str = JOB, returncode: int | None = -9,
              saved: int | None = 4, trained: int | None = 5, stopped_by: str | None = None) -> Path:
    """A job directory as LocalTrainingBackend leaves it: launched, then ended with `returncode`."""
    job = work_root / name
    record_local_launch(job, dead_pid())
    record_local_job(job, asset="srl_checkpoint", partition="gold", stage="srl", run_id=run_id)
    if saved is not None:
        checkpoint(job, saved)
    if returncode is not None:
        record_local_exit(job, returncode, trained_step=trained, stopped_by=stopped_by)
    return job


def evaluate(instance, backend: TrainingBackend, cursor: str | None):
    """(observations, run requests, skip message, the cursor after the tick)."""
    with build_sensor_context(instance=instance, cursor=cursor, definitions=DEFS,
                              resources={"training_backend": backend}) as context:
        data = spot_interruption_sensor.evaluate_tick(context)
    return list(data.asset_events), list(data.run_requests or []), data.skip_message, data.cursor


def values(observation: AssetObservation) -> dict:
    return {key: value.value for key, value in observation.metadata.items()}


def test_a_killed_local_job_gives_one_observation_and_one_resume_run(tmp_path, instance):
    run = launching_run(instance)
    local_job(tmp_path, run.run_id)
    backend = LocalTrainingBackend(work_root=str(tmp_path))

    (observation,), (request,), skip, cursor = evaluate(instance, backend, None)

    assert skip is None
    assert observation.asset_key == srl_checkpoint.key and observation.partition == "gold"
    meta = values(observation)
    assert (meta["training_job"], meta["backend"], meta["event"], meta["job_state"]) == (
        JOB, "local", "Interrupted", "stopped")
    assert "killed by SIGKILL" in meta["message"]
    assert (meta["interruptions"], meta["checkpoint_step"], meta["lost_steps"]) == (1, 4, 1)
    assert meta["lost_seconds"] >= 0 and meta["last_checkpoint"].endswith("checkpoint-4")
    assert "spot_saving_pct" not in meta  # unknown locally
    assert isinstance(request, RunRequest)
    assert request.asset_selection == [srl_checkpoint.key] and request.partition_key == "gold"
    assert request.run_key.startswith(f"resume-{JOB}-")
    assert meta["resume"] == f"requested: run key {request.run_key} resumes srl_checkpoint[gold] " \
                             f"from {tmp_path / JOB / 'checkpoints' / 'checkpoint-4'}"
    # The launching run's config, so the asset names the same job and the trainer resumes it.
    assert request.run_config == {"ops": {"srl_checkpoint": OP_CONFIG}}
    assert request.tags[RESUME_OF_TAG] == JOB and request.tags["srl/interrupted_run"] == run.run_id

    observations, requests, skip, unchanged = evaluate(instance, backend, cursor)
    assert (observations, requests, unchanged) == ([], [], cursor)
    assert skip == "no new interruption among 1 training jobs"
    # A tick whose cursor update was lost asks again with the same run key: Dagster runs it once.
    _, (again,), _, _ = evaluate(instance, backend, None)
    assert again.run_key == request.run_key


def test_each_interruption_of_a_resumed_job_gets_its_own_resume(tmp_path, instance):
    backend = LocalTrainingBackend(work_root=str(tmp_path))
    job = local_job(tmp_path, launching_run(instance).run_id)
    _, (first,), _, cursor = evaluate(instance, backend, None)

    resume = launching_run(instance)  # the resume run launches the job again; SIGTERM stops it
    record_local_launch(job, dead_pid())
    record_local_job(job, run_id=resume.run_id)
    checkpoint(job, 5)
    record_local_exit(job, EXIT_PREEMPTED, trained_step=5)
    (observation,), (second,), _, cursor = evaluate(instance, backend, cursor)

    assert second.run_key != first.run_key and second.tags["srl/interrupted_run"] == resume.run_id
    meta = values(observation)
    assert (meta["interruptions"], meta["checkpoint_step"], meta["lost_steps"]) == (2, 5, 0)
    assert "EXIT_PREEMPTED" in meta["message"]

    record_local_launch(job, dead_pid())  # resumed once more, to the end
    record_local_exit(job, 0, trained_step=6)
    assert evaluate(instance, backend, cursor)[:2] == ([], [])


def test_a_completed_job_gives_nothing_and_past_interruptions_are_observed_once(tmp_path, instance):
    backend = LocalTrainingBackend(work_root=str(tmp_path))
    run_id = launching_run(instance, status=DagsterRunStatus.SUCCESS).run_id
    local_job(tmp_path, run_id, name="srl-checkpoint-gold-clean", returncode=0, trained=6)
    assert evaluate(instance, backend, None)[:3] == ([], [], "no new interruption among 1 training jobs")

    # Interrupted, then resumed by hand to completion before the sensor first looked.
    job = local_job(tmp_path, run_id, name="srl-checkpoint-gold-resumed")
    record_local_launch(job, dead_pid())
    record_local_exit(job, 0, trained_step=6)
    (observation,), requests, _, cursor = evaluate(instance, backend, None)
    assert requests == [] and values(observation)["job_state"] == "completed"
    assert "resume" not in values(observation)
    assert set(json.loads(cursor)) == {"srl-checkpoint-gold-clean", "srl-checkpoint-gold-resumed"}


def test_a_stop_by_run_termination_or_before_any_checkpoint_is_not_resumed(tmp_path, instance):
    backend = LocalTrainingBackend(work_root=str(tmp_path))
    run_id = launching_run(instance, status=DagsterRunStatus.CANCELED).run_id
    local_job(tmp_path, run_id, name="srl-checkpoint-gold-terminated", returncode=EXIT_PREEMPTED,
              stopped_by="the launching Dagster run was interrupted")
    local_job(tmp_path, run_id, name="srl-checkpoint-gold-early", saved=None, trained=None)

    (observation,), requests, _, _ = evaluate(instance, backend, None)

    assert requests == []  # a user's stop is no interruption; a kill before a checkpoint, a crash
    assert values(observation)["training_job"] == "srl-checkpoint-gold-early"
    assert "no checkpoint yet" in values(observation)["message"]


def test_the_decision_waits_for_the_launching_run_and_defers_to_other_runs(tmp_path, instance):
    backend = LocalTrainingBackend(work_root=str(tmp_path))
    running = launching_run(instance, status=DagsterRunStatus.STARTED)
    local_job(tmp_path, running.run_id)

    (observation,), requests, _, cursor = evaluate(instance, backend, None)
    assert requests == [] and "resume" not in values(observation)  # its failure is still on its way

    instance.report_run_failed(running)
    _, (request,), _, cursor = evaluate(instance, backend, cursor)
    assert request.tags["srl/interrupted_run"] == running.run_id

    retried = launching_run(instance, **{WILL_RETRY_TAG: "true"})
    local_job(tmp_path, retried.run_id, name="srl-checkpoint-gold-retried")
    gone = "0" * 8 + "-0000-0000-0000-" + "0" * 12
    local_job(tmp_path, gone, name="srl-checkpoint-gold-orphan")
    superseded = launching_run(instance, **{"dagster/partition": "gold"})
    local_job(tmp_path, superseded.run_id, name="srl-checkpoint-gold-superseded")
    rerun = launching_run(instance, status=DagsterRunStatus.STARTED, **{"dagster/partition": "gold"})
    observations, requests, _, _ = evaluate(instance, backend, cursor)
    notes = {values(o)["training_job"]: values(o)["resume"] for o in observations}
    assert requests == []
    assert notes["srl-checkpoint-gold-superseded"] == (
        f"not requested: run {rerun.run_id} has since been launched for srl_checkpoint[gold]")
    assert notes["srl-checkpoint-gold-retried"] == (
        f"not requested: Dagster's run retries will re-run {retried.run_id}, which resumes the job")
    assert notes["srl-checkpoint-gold-orphan"].startswith(
        f"not requested: the launching run {gone} is not on this instance")


def test_the_cursor_forgets_jobs_no_longer_listed(tmp_path, instance):
    backend = LocalTrainingBackend(work_root=str(tmp_path))
    run_id = launching_run(instance).run_id
    local_job(tmp_path, run_id, name="srl-checkpoint-gold-old")
    local_job(tmp_path, run_id, name="srl-checkpoint-gold-new")
    _, _, _, cursor = evaluate(instance, backend, None)
    (tmp_path / "srl-checkpoint-gold-old" / "job.json").unlink()  # its work directory was cleaned up
    _, _, _, pruned = evaluate(instance, backend, cursor)
    assert json.loads(pruned) == {"srl-checkpoint-gold-new": json.loads(cursor)["srl-checkpoint-gold-new"]}


def test_a_sagemaker_restart_while_running_is_observed_and_a_max_wait_stop_resumed(instance):
    run = launching_run(instance)
    started = [("Starting", "00"), ("Training", "05")]
    restarted = [*started, ("Interrupted", "41"), ("Restarting", "43"), ("Training", "52")]
    backend = SageMakerLikeBackend(describe_json=describe("InProgress", restarted), run_id=run.run_id,
                                   checkpoint="s3://srl/checkpoints/srl-checkpoint-silver-spot/checkpoint-12")

    observations, requests, _, cursor = evaluate(instance, backend, None)

    assert requests == []  # SageMaker restarts a managed-spot job itself
    assert [values(o)["event"] for o in observations] == ["Interrupted", "Restarting"]
    assert {(o.asset_key, o.partition) for o in observations} == {(srl_checkpoint.key, "silver")}
    assert [values(o)["interruptions"] for o in observations] == [1, 1]
    assert values(observations[1])["checkpoint_step"] == 12
    assert "lost_steps" not in values(observations[0])
    assert evaluate(instance, backend, cursor)[:2] == ([], [])

    stopped = SageMakerLikeBackend(
        describe_json=describe("Stopped", [*restarted, ("MaxWaitTimeExceeded", "59")],
                               BillableTimeInSeconds=1200, TrainingTimeInSeconds=3000),
        run_id=run.run_id, checkpoint=backend.checkpoint)
    (observation,), (request,), _, cursor = evaluate(instance, stopped, cursor)
    meta = values(observation)
    assert (meta["event"], meta["job_state"], meta["spot_saving_pct"]) == ("MaxWaitTimeExceeded", "stopped", 60.0)
    assert (request.asset_selection, request.partition_key) == ([srl_checkpoint.key], "silver")
    assert request.tags["srl/interrupted_at"] == "2026-03-02T09:59:00.000+00:00"
    assert evaluate(instance, stopped, cursor)[:2] == ([], [])
