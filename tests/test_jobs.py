"""Normalized training-job status: SageMaker describe responses (validated against botocore's service
model through a stubbed client) and local job directories (job.json, real checkpoint layout, one real
killed subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from dateutil.tz import tzlocal, tzoffset

from srl_platform.jobs import (
    JOB_FILE,
    local_job_status,
    record_local_exit,
    record_local_job,
    record_local_launch,
    sagemaker_job_status,
)
from srl_platform.train import EXIT_PREEMPTED
from srl_platform.checkpoints import STAGING_DIR, STATE_FILE

# ---- SageMaker ------------------------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 9, 0, 0, 123000, tzinfo=tzlocal())  # botocore returns tzlocal() datetimes
CAPACITY = ("CapacityError: Unable to provision requested ML compute capacity. Please retry using a "
            "different ML instance type.")


def describe(name: str, status: str, steps: list[tuple[str, int, str]], *, spot: bool = True,
             **extra) -> dict:
    """A DescribeTrainingJob response as boto3 returns it. `steps`: (secondary status, minutes after
    T0, status message); each transition ends where the next starts, and the last is the current one
    (a final status ends where it starts)."""
    ended = status in ("Completed", "Failed", "Stopped")
    transitions = []
    for i, (secondary, minute, message) in enumerate(steps):
        entry = {"Status": secondary, "StartTime": T0 + timedelta(minutes=minute), "StatusMessage": message}
        if i + 1 < len(steps):
            entry["EndTime"] = T0 + timedelta(minutes=steps[i + 1][1])
        elif ended:
            entry["EndTime"] = entry["StartTime"]
        transitions.append(entry)
    response = {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://srl-artifacts/jobs/{name}/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": steps[-1][0],
        "HyperParameters": {"stage": "srl", "tier": "gold"},
        "AlgorithmSpecification": {
            "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/srl-train:latest",
            "TrainingInputMode": "File",
            "EnableSageMakerMetricsTimeSeries": False,
        },
        "RoleArn": "arn:aws:iam::123456789012:role/srl-sagemaker",
        "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100},
        "StoppingCondition": ({"MaxRuntimeInSeconds": 86400, "MaxWaitTimeInSeconds": 172800} if spot
                              else {"MaxRuntimeInSeconds": 86400}),
        "CreationTime": T0 - timedelta(seconds=2),
        "LastModifiedTime": transitions[-1]["StartTime"],
        "SecondaryStatusTransitions": transitions,
        "EnableNetworkIsolation": False,
        "EnableInterContainerTrafficEncryption": False,
        "EnableManagedSpotTraining": spot,
        **({"CheckpointConfig": {"S3Uri": f"s3://srl-artifacts/checkpoints/{name}",
                                 "LocalPath": "/opt/ml/checkpoints"}} if spot else {}),
    }
    if any(s == "Training" for s, _, _ in steps):
        response["TrainingStartTime"] = T0 + timedelta(minutes=next(m for s, m, _ in steps if s == "Training"))
    if ended:
        response["TrainingEndTime"] = transitions[-1]["StartTime"]
    response.update(extra)
    return response


@pytest.fixture(scope="module")
def sagemaker():
    """A real boto3 SageMaker client with botocore's Stubber: every response is validated against
    the service model's DescribeTrainingJobResponse shape before the client returns it. botocore
    does not validate enums, so the status names are checked against the model here."""
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name="us-east-1")
    client = session.client("sagemaker")
    model = client.meta.service_model
    primary = set(model.shape_for("TrainingJobStatus").enum)
    secondary = set(model.shape_for("SecondaryStatus").enum)
    with Stubber(client) as stubber:
        def describe_via_client(response: dict) -> dict:
            assert response["TrainingJobStatus"] in primary
            assert {response["SecondaryStatus"]} | {t["Status"] for t in response["SecondaryStatusTransitions"]} \
                <= secondary
            stubber.add_response("describe_training_job", response,
                                 {"TrainingJobName": response["TrainingJobName"]})
            got = client.describe_training_job(TrainingJobName=response["TrainingJobName"])
            stubber.assert_no_pending_responses()
            return got
        yield describe_via_client


START = [("Starting", 0, "Launching requested ML instances"),
         ("Starting", 3, "Preparing the instances for training"),
         ("Downloading", 5, "Downloading input data"),
         ("Training", 7, "Training image download completed. Training in progress.")]


def test_completed_spot_job_reports_its_saving(sagemaker):
    response = describe("srl-checkpoint-gold-a1b2c3", "Completed", [
        *START, ("Uploading", 67, "Uploading generated training model"),
        ("Completed", 69, "Training job completed"),
    ], BillableTimeInSeconds=1092, TrainingTimeInSeconds=3640)
    status = sagemaker_job_status(sagemaker(response), "s3://srl-artifacts/checkpoints/x/checkpoint-40")
    assert (status.backend, status.state, status.secondary_status) == ("sagemaker", "completed", "Completed")
    assert status.interruptions == 0 and status.events == ()
    assert not status.resumable and not status.capacity_error and not status.max_wait_exceeded
    assert (status.billable_seconds, status.training_seconds) == (1092, 3640)
    assert status.spot_saving_pct == 70.0  # (1 - 1092/3640) * 100
    assert status.last_checkpoint == "s3://srl-artifacts/checkpoints/x/checkpoint-40"
    metadata = status.as_metadata()
    assert json.loads(json.dumps(metadata)) == metadata
    assert metadata["spot_saving_pct"] == 70.0 and metadata["failure_reason"] is None


def test_on_demand_job_has_no_spot_saving(sagemaker):
    response = describe("srl-on-demand", "Completed", [*START, ("Completed", 60, "Training job completed")],
                        spot=False, BillableTimeInSeconds=3300, TrainingTimeInSeconds=3300)
    assert sagemaker_job_status(sagemaker(response)).spot_saving_pct is None


def test_interrupted_spot_job_still_in_progress_is_an_observation(sagemaker):
    response = describe("srl-checkpoint-gold-spot", "InProgress", [
        *START, ("Interrupted", 41, "Training job interrupted: spot instance reclaimed"),
        ("Restarting", 43, "Restarting the training job"),
        ("Starting", 44, "Launching requested ML instances"),
        ("Training", 52, "Training in progress."),
    ])
    status = sagemaker_job_status(sagemaker(response))
    assert (status.state, status.secondary_status) == ("running", "Training")
    assert status.interruptions == 1
    assert not status.resumable  # SageMaker restarts it itself within max wait
    assert [e.status for e in status.events] == ["Interrupted", "Restarting"]
    interrupted = status.events[0]
    assert interrupted.message == "Training job interrupted: spot instance reclaimed"
    # boto3's tzlocal() timestamps become UTC ISO 8601, millisecond precision
    expected = (T0 + timedelta(minutes=41)).astimezone(UTC).isoformat(timespec="milliseconds")
    assert interrupted.start_time == expected and expected.endswith("+00:00")
    assert status.as_metadata()["events"][0] == f"{expected} Interrupted: {interrupted.message}"


def test_event_keys_are_stable_across_describes_and_distinct_per_interruption(sagemaker):
    name = "srl-checkpoint-gold-keys"
    first_steps = [*START, ("Interrupted", 30, "interrupted"), ("Restarting", 31, ""),
                   ("Training", 40, "Training in progress.")]
    later_steps = [*first_steps[:-1], ("Training", 40, "Training in progress."),
                   ("Interrupted", 90, "interrupted"), ("Restarting", 92, ""), ("Training", 99, "")]
    first = sagemaker_job_status(sagemaker(describe(name, "InProgress", first_steps)))
    again = sagemaker_job_status(sagemaker(describe(name, "InProgress", first_steps)))
    later = sagemaker_job_status(sagemaker(describe(name, "InProgress", later_steps)))
    keys = [e.key(name) for e in first.events]
    assert keys == [e.key(name) for e in again.events]
    assert keys == [e.key(name) for e in later.events][:2]
    interruptions = [e.key(name) for e in later.events if e.status == "Interrupted"]
    assert later.interruptions == 2 and len(set(interruptions)) == 2
    assert all(k.startswith(f"{name}|Interrupted|") for k in interruptions)
    # The same instant given in another zone is the same transition.
    shifted = describe(name, "InProgress", first_steps)
    for t in shifted["SecondaryStatusTransitions"]:
        t["StartTime"] = t["StartTime"].astimezone(tzoffset("PST", -8 * 3600))
    assert [e.key(name) for e in sagemaker_job_status(sagemaker(shifted)).events] == keys


def test_max_wait_exceeded_stop_is_resumable(sagemaker):
    response = describe("srl-checkpoint-gold-wait", "Stopped", [
        *START, ("Interrupted", 300, "interrupted"), ("Restarting", 301, ""),
        ("Starting", 302, "Launching requested ML instances"),
        ("MaxWaitTimeExceeded", 2880, "Training job stopped: MaxWaitTimeInSeconds exceeded"),
    ], BillableTimeInSeconds=17600, TrainingTimeInSeconds=172800)
    status = sagemaker_job_status(sagemaker(response), "s3://srl-artifacts/checkpoints/w/checkpoint-120")
    assert (status.state, status.secondary_status) == ("stopped", "MaxWaitTimeExceeded")
    assert status.max_wait_exceeded and status.resumable and not status.capacity_error
    assert status.interruptions == 1
    assert [e.status for e in status.events] == ["Interrupted", "Restarting", "MaxWaitTimeExceeded"]
    assert status.spot_saving_pct == 89.8


def test_capacity_error_failure_is_resumable(sagemaker):
    response = describe("srl-checkpoint-gold-cap", "Failed", [
        ("Starting", 0, "Launching requested ML instances"),
        ("Starting", 1, "Insufficient capacity error from EC2 while launching instances, retrying!"),
        ("Failed", 30, CAPACITY),
    ], FailureReason=CAPACITY)
    status = sagemaker_job_status(sagemaker(response))
    assert (status.state, status.secondary_status) == ("failed", "Failed")
    assert status.capacity_error and status.resumable
    assert status.failure_reason == CAPACITY
    assert (status.billable_seconds, status.training_seconds, status.spot_saving_pct) == (None, None, None)


def test_user_stop_is_not_resumable(sagemaker):
    response = describe("srl-checkpoint-gold-stop", "Stopped", [
        *START, ("Stopping", 20, "Stopping the training job"), ("Stopped", 22, "Training job stopped"),
    ], BillableTimeInSeconds=800, TrainingTimeInSeconds=900)
    status = sagemaker_job_status(sagemaker(response))
    assert (status.state, status.secondary_status) == ("stopped", "Stopped")
    assert not status.resumable and not status.max_wait_exceeded and status.interruptions == 0


def test_stopping_job_is_not_resumable_yet(sagemaker):
    response = describe("srl-checkpoint-gold-stopping", "Stopping",
                        [*START, ("Stopping", 20, "Stopping the training job")])
    status = sagemaker_job_status(sagemaker(response))
    assert (status.state, status.resumable) == ("stopping", False)


def test_algorithm_error_is_not_resumable(sagemaker):
    reason = ("AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage \"ValueError: step "
              "instance 17 has no expert_steps\"")
    response = describe("srl-checkpoint-gold-bug", "Failed",
                        [*START, ("Failed", 12, "Training job failed")],
                        FailureReason=reason, BillableTimeInSeconds=310, TrainingTimeInSeconds=720)
    status = sagemaker_job_status(sagemaker(response))
    assert status.state == "failed" and not status.resumable and not status.capacity_error
    assert status.failure_reason == reason


def test_unknown_training_job_status_names_the_job_and_value():
    response = describe("srl-new-status", "InProgress", START)
    response["TrainingJobStatus"] = "Paused"
    with pytest.raises(ValueError, match="srl-new-status: TrainingJobStatus 'Paused'"):
        sagemaker_job_status(response)


# ---- local ----------------------------------------------------------------------------------------


def make_checkpoint(job: Path, step: int, complete: bool = True) -> Path:
    """A checkpoint in the trainer's layout: `checkpoints/checkpoint-<step>/`, complete once the
    trainer's state file is in it."""
    path = job / "checkpoints" / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    if complete:
        (path / STATE_FILE).write_text(json.dumps({"global_step": step}))
    return path


@pytest.fixture
def job(tmp_path) -> Path:
    path = tmp_path / "srl-checkpoint-gold-local1"
    (path / "checkpoints" / STAGING_DIR / "checkpoint-9").mkdir(parents=True)  # an unfinished save
    return path


def launch_as_this_process(job: Path) -> None:
    """A launch record whose trainer pid is alive for the whole test: this process."""
    record_local_launch(job, os.getpid())


def test_completed_local_job(job):
    make_checkpoint(job, 2)
    newest = make_checkpoint(job, 4)
    launch_as_this_process(job)
    running = local_job_status(job)
    assert (running.backend, running.job_name, running.state) == ("local", job.name, "running")
    assert running.secondary_status == "Training" and not running.resumable
    record_local_exit(job, 0)
    status = local_job_status(job)
    assert (status.state, status.secondary_status) == ("completed", "Completed")
    assert status.interruptions == 0 and not status.resumable and status.failure_reason is None
    assert status.last_checkpoint == str(newest)
    record = json.loads((job / JOB_FILE).read_text())
    assert record["returncode"] == 0 and record["attempts"] == 1 and record["ended_at"]
    assert json.loads(json.dumps(status.as_metadata())) == status.as_metadata()


def test_preempted_exit_is_stopped_and_resumable(job):
    saved = make_checkpoint(job, 3)
    launch_as_this_process(job)
    record_local_exit(job, EXIT_PREEMPTED)
    status = local_job_status(job)
    assert (status.state, status.secondary_status) == ("stopped", "Interrupted")
    assert status.resumable and status.interruptions == 1
    (event,) = status.events
    assert event.status == "Interrupted" and "EXIT_PREEMPTED" in event.message and str(saved) in event.message
    assert status.last_checkpoint == str(saved)


def test_preempted_before_first_checkpoint_is_still_resumable(job):
    launch_as_this_process(job)
    record_local_exit(job, EXIT_PREEMPTED)
    status = local_job_status(job)
    assert status.resumable and status.last_checkpoint is None
    assert "no checkpoint yet" in status.events[0].message


def test_killed_by_signal_is_resumable_only_with_a_complete_checkpoint(job):
    make_checkpoint(job, 5, complete=False)  # a save that never finished
    launch_as_this_process(job)
    record_local_exit(job, -signal.SIGKILL)
    status = local_job_status(job)
    assert status.state == "stopped" and status.interruptions == 1
    assert "killed by SIGKILL" in status.events[0].message
    assert not status.resumable and status.last_checkpoint is None
    make_checkpoint(job, 4)
    assert local_job_status(job).resumable


def test_an_interruption_records_what_it_cost(job):
    saved = make_checkpoint(job, 4)
    (saved / STATE_FILE).write_text(json.dumps({"global_step": 4, "saved_at": 1_000.0}))
    launch_as_this_process(job)
    record_local_job(job, started_at="1970-01-01T00:10:00.000+00:00")  # before the checkpoint: 600 s
    record_local_exit(job, -signal.SIGKILL, trained_step=6)
    (event,) = local_job_status(job).events
    ended = datetime.fromisoformat(event.start_time).timestamp()
    assert (event.checkpoint_step, event.lost_steps) == (4, 2)
    assert event.lost_seconds == pytest.approx(ended - 1_000.0, abs=1e-3)  # since the checkpoint
    stored = json.loads((job / JOB_FILE).read_text())["events"][0]
    assert (stored["checkpoint_step"], stored["lost_steps"]) == (4, 2)


def test_an_interruption_before_any_checkpoint_loses_the_whole_attempt(job):
    launch_as_this_process(job)
    record_local_exit(job, EXIT_PREEMPTED, trained_step=None)
    (event,) = local_job_status(job).events
    assert event.checkpoint_step is None and event.lost_steps is None
    started = json.loads((job / JOB_FILE).read_text())["started_at"]
    assert event.lost_seconds == pytest.approx(
        datetime.fromisoformat(event.start_time).timestamp() - datetime.fromisoformat(started).timestamp(),
        abs=1e-3)


def test_a_stop_by_the_launcher_is_not_an_interruption(job):
    make_checkpoint(job, 3)
    launch_as_this_process(job)
    record_local_exit(job, EXIT_PREEMPTED, stopped_by="the launching Dagster run was interrupted")
    status = local_job_status(job)
    assert (status.state, status.secondary_status, status.interruptions) == ("stopped", "Stopped", 0)
    assert not status.resumable and status.events == ()
    launch_as_this_process(job)  # a re-run by hand resumes it and clears the stop
    assert json.loads((job / JOB_FILE).read_text())["stopped_by"] is None


def test_failed_exit_carries_the_log_tail(job):
    make_checkpoint(job, 2)
    (job / "train.log").write_text("loading model\n" + "".join(f"step {i}\n" for i in range(10))
                                   + "Traceback (most recent call last):\n\n"
                                   + "ValueError: reward function returned NaN for prompt 7\n")
    launch_as_this_process(job)
    record_local_exit(job, 1)
    status = local_job_status(job)
    assert (status.state, status.secondary_status) == ("failed", "Failed")
    assert not status.resumable and status.interruptions == 0
    assert status.failure_reason.startswith("exit code 1: ")
    assert status.failure_reason.endswith("ValueError: reward function returned NaN for prompt 7")
    assert "step 9" in status.failure_reason and "loading model" not in status.failure_reason


def test_input_error_exit_is_failed(job):
    (job / "train.log").write_text("error: no training data: pass --data or set SM_CHANNEL_TRAIN\n")
    launch_as_this_process(job)
    record_local_exit(job, 2)
    status = local_job_status(job)
    assert status.state == "failed" and not status.resumable
    assert status.failure_reason == "exit code 2: error: no training data: pass --data or set SM_CHANNEL_TRAIN"


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_running_record_with_dead_pid_is_stopped_and_counted_once_across_a_resume(job):
    make_checkpoint(job, 6)
    record_local_launch(job, dead_pid())
    lost = local_job_status(job)
    assert (lost.state, lost.secondary_status) == ("stopped", "Interrupted")
    assert lost.resumable and lost.interruptions == 1
    assert lost.events[0].start_time == json.loads((job / JOB_FILE).read_text())["started_at"]
    assert [e.key(job.name) for e in local_job_status(job).events] == [lost.events[0].key(job.name)]

    launch_as_this_process(job)  # the resume stores the lost attempt's interruption
    resumed = local_job_status(job)
    assert resumed.state == "running" and resumed.interruptions == 1
    assert resumed.events == lost.events
    record_local_exit(job, 0)
    done = local_job_status(job)
    assert (done.state, done.interruptions, done.resumable) == ("completed", 1, False)
    assert json.loads((job / JOB_FILE).read_text())["attempts"] == 2


def test_dead_pid_without_checkpoint_is_not_resumable(job):
    record_local_launch(job, dead_pid())
    status = local_job_status(job)
    assert status.state == "stopped" and not status.resumable


def test_reused_pid_is_not_taken_for_the_trainer(job):
    launch_as_this_process(job)
    record = json.loads((job / JOB_FILE).read_text())
    if record["pid_start_ticks"] is None:
        pytest.skip("no /proc: a reused pid cannot be told apart here")
    # This process stands in for an unrelated one that got the trainer's pid after it died.
    record_local_job(job, pid_start_ticks=record["pid_start_ticks"] + 1)
    assert local_job_status(job).state == "stopped"


def test_interruptions_survive_resumes(job):
    make_checkpoint(job, 2)
    launch_as_this_process(job)
    record_local_exit(job, EXIT_PREEMPTED)
    make_checkpoint(job, 5)
    launch_as_this_process(job)
    record_local_exit(job, -signal.SIGTERM)  # a second SIGTERM kills before the handler saves
    launch_as_this_process(job)
    assert local_job_status(job).interruptions == 2
    record_local_exit(job, 0)
    status = local_job_status(job)
    assert status.state == "completed" and status.interruptions == 2 and not status.resumable
    assert [e.status for e in status.events] == ["Interrupted", "Interrupted"]
    assert len({e.key(job.name) for e in status.events}) == 2
    assert "killed by SIGTERM" in status.events[1].message


def test_record_local_job_merges_and_appends_events(job):
    record_local_job(job, state="running", pid=1234, started_at="2026-03-02T09:00:00.000+00:00")
    record_local_job(job, events=[{"status": "Interrupted", "start_time": "t1", "message": "a"}])
    record_local_job(job, state="stopped", events=[{"status": "Interrupted", "start_time": "t2", "message": "b"}])
    record = json.loads((job / JOB_FILE).read_text())
    assert record["pid"] == 1234 and record["state"] == "stopped" and record["job_name"] == job.name
    assert [e["start_time"] for e in record["events"]] == ["t1", "t2"]
    assert [p.name for p in job.iterdir() if p.name.endswith(".tmp")] == []


def test_missing_job_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="job.json"):
        local_job_status(tmp_path)


def test_sigkilled_trainer_process(job):
    """A real child process: running while alive (and while an unreaped zombie of this launcher),
    stopped and resumable once gone, then the launcher's exit record says how it died."""
    saved = make_checkpoint(job, 8)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        record_local_launch(job, child.pid)
        assert local_job_status(job).state == "running"
        child.send_signal(signal.SIGKILL)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: a zombie
        assert local_job_status(job).state == "running"  # its launcher (this process) records the exit
        child.wait()
        lost = local_job_status(job)
        assert (lost.state, lost.resumable, lost.last_checkpoint) == ("stopped", True, str(saved))
        assert lost.interruptions == 1
        record_local_exit(job, child.returncode)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    status = local_job_status(job)
    assert child.returncode == -signal.SIGKILL
    assert (status.state, status.resumable, status.interruptions) == ("stopped", True, 1)
    assert "killed by SIGKILL" in status.events[0].message
