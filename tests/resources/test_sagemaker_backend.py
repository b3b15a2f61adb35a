"""SageMakerTrainingBackend and PipesSageMakerClient against a moto server (real HTTP on loopback).

moto does not run the training container: CreateTrainingJob is recorded and the job reads
`Completed` at once. `FakeContainer` plays the container when a job is created (a botocore
after-call hook): it lists the `train` channel the backend uploaded, reports two metrics rows and a
summary through the real `srl_platform.reporting` (Pipes context and messages through moto S3, from
the job's Environment), writes a CloudWatch log line, and puts into S3 what the trainer would leave:
`checkpoint-2/` under CheckpointConfig.S3Uri, `model.tar.gz` (SM_MODEL_DIR) and `output.tar.gz`
(SM_OUTPUT_DATA_DIR). States moto never reaches (InProgress, Stopped at MaxWaitTimeExceeded, Failed)
are written into DescribeTrainingJob responses by an after-call hook; StopTrainingJob, which moto
does not implement, is answered and recorded by a before-call hook. Requests are read back from
moto where it keeps them and from the recorded CreateTrainingJob parameters where it drops them
(moto keeps no Environment).
"""

import hashlib
import io
import json
import logging
import os
import tarfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import boto3
import dagster._core.pipes.utils as dagster_pipes_utils
import dagster_pipes
import pytest
from botocore.exceptions import ClientError
from dagster import (
    AssetExecutionContext,
    Config,
    DagsterExecutionInterruptedError,
    DagsterInstance,
    MaterializeResult,
    StaticPartitionsDefinition,
    asset,
    materialize,
)
from dagster_pipes import PipesContext, decode_env_var, encode_env_var
from support import AWS_TEST_CREDENTIALS

from resources.sagemaker import SageMakerTrainingBackend
from resources.sagemaker_pipes import _CheckpointWatch
from resources.training import TrainingBackend, TrainingRequest, training_job_name
from srl_platform import sagemaker_jobs as jobs
from srl_platform.reporting import Reporter, open_reporter
from srl_platform.tiers import get_tier

ROLE = "arn:aws:iam::123456789012:role/srl-training"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/srl-train:test"
REGION = AWS_TEST_CREDENTIALS["region_name"]


# ---- the asset that calls the backend, as srl_checkpoint does ---------------------------------------


class JobConfig(Config):
    fingerprint: str
    init_from: bool = False


@asset(partitions_def=StaticPartitionsDefinition(["gold", "silver", "bronze"]), name="srl_checkpoint")
def srl_checkpoint(context: AssetExecutionContext, config: JobConfig,
                   training_backend: TrainingBackend) -> MaterializeResult:
    work = Path(os.environ["SRL_TEST_INPUTS"])
    request = TrainingRequest(
        job_name=training_job_name("srl_checkpoint", context.partition_key, config.fingerprint),
        stage="srl", tier=context.partition_key, data_file=work / "steps.jsonl",
        init_from=work / "adapter" if config.init_from else None, args=("--max-steps", "2"))
    outcome = training_backend.run_training(context, request)
    return MaterializeResult(metadata={
        "adapter_files": sorted(p.name for p in outcome.adapter_dir.iterdir()),
        "global_step": outcome.summary["global_step"],
        "metrics_rows": len(outcome.metrics),
        "metrics_streamed": outcome.metrics_streamed,
        "log_tail": outcome.log_tail,
        "checkpoint_dir": outcome.checkpoint_dir,
    })


# ---- AWS side ---------------------------------------------------------------------------------------


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class FakeContainer:
    """What the training container does in S3, CloudWatch and Pipes (see the module docstring)."""

    def __init__(self, s3, logs):
        self.s3, self.logs = s3, logs
        self.write_checkpoint = True
        self.channel_files: dict[str, list[str]] = {}

    def run(self, params: dict) -> None:
        name = params["TrainingJobName"]
        for channel in params["InputDataConfig"]:
            if channel["ChannelName"] in (jobs.TRAIN_CHANNEL, jobs.INIT_FROM_CHANNEL):
                bucket, key = jobs.split_s3_uri(channel["DataSource"]["S3DataSource"]["S3Uri"])
                found = self.s3.list_objects_v2(Bucket=bucket, Prefix=key + "/").get("Contents", [])
                self.channel_files[channel["ChannelName"]] = [o["Key"][len(key) + 1:] for o in found]
        rows = [{"step": 1, "loss": 0.5, "reward": 0.25}, {"step": 2, "loss": 0.4, "reward": 0.5}]
        summary = {"stage": "srl", "tier": params["HyperParameters"]["tier"], "global_step": 2,
                   "max_steps": 2, "reward_curve": [[1, 0.25], [2, 0.5]]}
        pipes_env = {k: v for k, v in params["Environment"].items() if k.startswith("DAGSTER_PIPES_")}
        PipesContext._instance = None  # one trainer per process in a real container; many here
        try:
            with mock.patch.dict(os.environ, pipes_env), open_reporter() as report:
                for row in rows:
                    report.metrics(row)
                report.checkpoint(2, "checkpoint-2")
                report.summary(summary)
        finally:
            PipesContext._instance = None
        stream = f"{name}/algo-1-1700000000"
        self.logs.create_log_stream(logGroupName=jobs.LOG_GROUP, logStreamName=stream)
        self.logs.put_log_events(logGroupName=jobs.LOG_GROUP, logStreamName=stream,
                                 logEvents=[{"timestamp": int(time.time() * 1000),
                                                            "message": "step 2/2 reward=0.5"}])
        bucket, ckpt = jobs.split_s3_uri(params["CheckpointConfig"]["S3Uri"])
        if self.write_checkpoint:
            self.s3.put_object(Bucket=bucket, Key=f"{ckpt}/checkpoint-2/adapter_model.safetensors", Body=b"w")
            self.s3.put_object(Bucket=bucket, Key=f"{ckpt}/checkpoint-2/srl_state.json", Body=b"{}")
        out_bucket, out = jobs.split_s3_uri(params["OutputDataConfig"]["S3OutputPath"])
        metrics = "".join(json.dumps(r) + "\n" for r in rows).encode()
        self.s3.put_object(Bucket=out_bucket, Key=f"{out}/{name}/output/model.tar.gz", Body=_tar_gz({
            "adapter_model.safetensors": b"adapter weights", "adapter_config.json": b"{}",
            "training_summary.json": json.dumps(summary).encode()}))
        self.s3.put_object(Bucket=out_bucket, Key=f"{out}/{name}/output/output.tar.gz", Body=_tar_gz({
            "metrics.jsonl": metrics, "training_summary.json": json.dumps(summary).encode()}))


class Harness:
    """A boto3 session whose clients record CreateTrainingJob and StopTrainingJob, run the fake
    container on each create, and take scripted DescribeTrainingJob states."""

    def __init__(self, session: boto3.Session):
        self.session = session
        self.created: list[dict] = []
        self.stopped: list[str] = []
        self.describes: dict[str, int] = {}
        self.script: dict[str, list] = {}
        self.container = FakeContainer(session.client("s3"), session.client("logs"))
        events = session.events
        events.register("before-parameter-build.sagemaker.CreateTrainingJob", self._record_create)
        events.register("after-call.sagemaker.CreateTrainingJob", self._after_create)
        events.register("after-call.sagemaker.DescribeTrainingJob", self._describe)
        events.register("before-call.sagemaker.StopTrainingJob", self._stop)

    def _record_create(self, params, **kwargs):
        self.created.append(json.loads(json.dumps(params, default=str)))

    def _after_create(self, **kwargs):
        self.container.run(self.created[-1])

    def _describe(self, parsed, **kwargs):
        name = parsed["TrainingJobName"]
        self.describes[name] = self.describes.get(name, 0) + 1
        steps = self.script.get(name)
        if not steps:
            return
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, BaseException):
            raise step
        parsed.update(step)

    def _stop(self, params, **kwargs):
        self.stopped.append(json.loads(params["body"])["TrainingJobName"])
        return SimpleNamespace(status_code=200), {}


class _ShortNaps:
    """The `time` module with naps of at most 0.05 s."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds):
        time.sleep(min(seconds, 0.05))


@pytest.fixture(autouse=True)
def short_pipes_naps(monkeypatch):
    """Pipes' S3 message reader (here) and writer (the fake container) nap 1 s between polls, so each
    launch would wait seconds for messages already in S3; their timeouts are unchanged."""
    monkeypatch.setattr(dagster_pipes_utils, "time", _ShortNaps())
    monkeypatch.setattr(dagster_pipes, "time", _ShortNaps())


@pytest.fixture
def aws(moto_endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_TEST_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_TEST_CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    inputs = tmp_path / "inputs"
    (inputs / "adapter").mkdir(parents=True)
    (inputs / "steps.jsonl").write_text('{"question": "1+1?", "target": "Step 1: 2"}\n')
    (inputs / "adapter" / "adapter_model.safetensors").write_bytes(b"srl adapter")
    monkeypatch.setenv("SRL_TEST_INPUTS", str(inputs))
    session = boto3.Session(region_name=REGION)
    bucket = f"srl-sm-{uuid.uuid4().hex[:10]}"  # moto's state is process-wide: a bucket per test
    session.client("s3").create_bucket(Bucket=bucket)
    logs = session.client("logs")
    if not logs.describe_log_groups(logGroupNamePrefix=jobs.LOG_GROUP)["logGroups"]:
        logs.create_log_group(logGroupName=jobs.LOG_GROUP)
    harness = Harness(session)

    class HookedBackend(SageMakerTrainingBackend):
        def boto_session(self):
            return session

    harness.backend = HookedBackend(role=ROLE, training_image=IMAGE, s3_prefix=f"s3://{bucket}/runs",
                                    work_root=str(tmp_path / "work"), poll_interval_seconds=0.01)
    harness.bucket = bucket
    harness.inputs = inputs
    return harness


def launch(harness: Harness, tier: str, fingerprint: str, instance: DagsterInstance, init_from=False):
    return materialize([srl_checkpoint], partition_key=tier, instance=instance, raise_on_error=False,
                       resources={"training_backend": harness.backend},
                       run_config={"ops": {"srl_checkpoint": {"config": {"fingerprint": fingerprint,
                                                                         "init_from": init_from}}}})


def materialized(result) -> dict:
    [event] = result.asset_materializations_for_node("srl_checkpoint")
    return {k: v.value for k, v in event.metadata.items()}


def failure(result) -> str:
    [step_failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return step_failure.step_failure_data.error.message


def fingerprint() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as instance:
        yield instance


STOPPED_AT_MAX_WAIT = {
    "TrainingJobStatus": "Stopped", "SecondaryStatus": "MaxWaitTimeExceeded",
    "EnableManagedSpotTraining": True, "BillableTimeInSeconds": 1200, "TrainingTimeInSeconds": 3000,
    "SecondaryStatusTransitions": [
        {"Status": "Training", "StartTime": "2026-01-01T00:00:00+00:00", "StatusMessage": "Training"},
        {"Status": "Interrupted", "StartTime": "2026-01-01T01:00:00+00:00",
         "StatusMessage": "Spot capacity reclaimed"},
        {"Status": "MaxWaitTimeExceeded", "StartTime": "2026-01-01T05:00:00+00:00",
         "StatusMessage": "Max wait time exceeded"}]}
IN_PROGRESS = {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"}


# ---- tests ------------------------------------------------------------------------------------------


def test_attempt_names_are_deterministic_short_and_parse_back():
    short = training_job_name("srl_checkpoint", "gold", "0123456789abcdef")
    assert jobs.attempt_job_name(short, 1) == f"{short}-a1"
    assert jobs.attempt_number(short, f"{short}-a12") == 12
    long = "rlvr-checkpoint-bronze-" + "f" * 40  # 63 characters, no room for "-a<N>"
    names = [jobs.attempt_job_name(long, n) for n in (1, 2, 999)]
    assert names == [jobs.attempt_job_name(long, n) for n in (1, 2, 999)]
    assert all(len(name) <= 63 for name in names) and len({n.rsplit("-a", 1)[0] for n in names}) == 1
    assert jobs.attempt_job_name(long[:-1] + "e", 1) != names[0]  # the hash keeps identities apart
    assert [jobs.attempt_number(long, n) for n in names] == [1, 2, 999]
    assert jobs.attempt_number(long, f"{short}-a1") is None


@pytest.mark.parametrize("tier", ["gold", "silver", "bronze"])
def test_each_tier_launches_its_tierspec_with_pipes_tags_and_channels(aws, instance, tier):
    spec, fp = get_tier(tier), fingerprint()
    job_name = training_job_name("srl_checkpoint", tier, fp)
    result = launch(aws, tier, fp, instance, init_from=tier == "bronze")
    assert result.success, failure(result)
    [params] = aws.created
    name = f"{job_name}-a1"
    assert params["TrainingJobName"] == name
    sagemaker, s3 = aws.session.client("sagemaker"), aws.session.client("s3")
    described = sagemaker.describe_training_job(TrainingJobName=name)
    assert described["EnableManagedSpotTraining"] is spec.use_spot_instances is True
    assert described["StoppingCondition"] == {"MaxRuntimeInSeconds": spec.max_run_seconds,
                                              "MaxWaitTimeInSeconds": spec.max_wait_seconds}
    assert described["StoppingCondition"]["MaxWaitTimeInSeconds"] >= spec.max_run_seconds
    assert described["CheckpointConfig"] == {
        "S3Uri": f"s3://{aws.bucket}/runs/checkpoints/{job_name}", "LocalPath": "/opt/ml/checkpoints"}
    assert (described["ResourceConfig"]["InstanceType"], described["ResourceConfig"]["InstanceCount"]) == (
        spec.instance_type, spec.instance_count)
    assert described["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    expected_flags = {"stage": "srl", "tier": tier, "max-steps": "2"}
    if tier == "bronze":
        expected_flags["init-from"] = "/opt/ml/input/data/init_from"
    assert described["HyperParameters"] == expected_flags
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in described["InputDataConfig"]}
    assert set(channels) == {"train", "code", "sm_drivers"} | ({"init_from"} if tier == "bronze" else set())
    assert aws.container.channel_files["train"] == ["data.jsonl"]
    if tier == "bronze":
        assert aws.container.channel_files["init_from"] == ["adapter_model.safetensors"]

    # Torchrun is not a CreateTrainingJob field: ModelTrainer writes it into the sm_drivers channel
    # (distributed.json, and sm_train.sh runs the torchrun driver instead of the plain one).
    bucket, drivers = jobs.split_s3_uri(channels["sm_drivers"])
    def driver_file(name):
        return s3.get_object(Bucket=bucket, Key=f"{drivers}/{name}")["Body"].read().decode()
    script, distributed = driver_file("sm_train.sh"), json.loads(driver_file("distributed.json"))
    if tier == "bronze":
        assert "torchrun_driver.py" in script and "process_count_per_node" in distributed
        assert params["Environment"]["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "110"
    else:
        assert "basic_script_driver.py" in script and distributed == {}
        assert "TORCH_ELASTIC_SHUTDOWN_TIMEOUT" not in params["Environment"]
    # The init that passes SageMaker's SIGTERM on runs the SDK's entrypoint (tests/test_container_init.py).
    spec = params["AlgorithmSpecification"]
    assert spec["ContainerEntrypoint"] == [*jobs.CONTAINER_INIT, "/bin/bash"]
    assert spec["ContainerArguments"][0] == "-c" and "sm_drivers/sm_train.sh" in spec["ContainerArguments"][1]
    assert json.loads(driver_file("sourcecode.json"))["entry_script"] == jobs.ENTRY_SCRIPT
    assert "tar -xzf srl_code.tar.gz" in script
    bucket, code = jobs.split_s3_uri(channels["code"])
    assert code.endswith("/srl_code.tar.gz")  # one object: the channel is the archive itself
    archive = s3.get_object(Bucket=bucket, Key=code)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        assert {jobs.ENTRY_SCRIPT, "srl_platform/train.py", "srl_platform/reporting.py"} <= set(tar.getnames())

    # moto drops Environment: the recorded request carries the Pipes bootstrap variables.
    context_params = decode_env_var(params["Environment"]["DAGSTER_PIPES_CONTEXT"])
    message_params = decode_env_var(params["Environment"]["DAGSTER_PIPES_MESSAGES"])
    assert context_params["bucket"] == message_params["bucket"] == aws.bucket
    assert message_params["key_prefix"] == f"runs/pipes/{name}/messages"
    tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=described["TrainingJobArn"])["Tags"]}
    data_sha = hashlib.sha256((aws.inputs / "steps.jsonl").read_bytes()).hexdigest()
    assert {k: tags.get(k) for k in ("dagster/run-id", "srl:asset", "srl:partition", "srl:data-sha256",
                                     "srl:job", "srl:attempt")} == {
        "dagster/run-id": result.run_id, "srl:asset": "srl_checkpoint", "srl:partition": tier,
        "srl:data-sha256": data_sha, "srl:job": job_name, "srl:attempt": "1"}

    # Completed: the adapter and metrics downloaded, the trainer's Pipes messages and log received,
    # the final checkpoint found in S3.
    meta = materialized(result)
    assert meta["adapter_files"] == ["adapter_config.json", "adapter_model.safetensors", "metrics.jsonl",
                                     "training_summary.json"]
    assert (meta["global_step"], meta["metrics_rows"], meta["metrics_streamed"]) == (2, 2, 2)
    assert "step 2/2 reward=0.5" in meta["log_tail"]
    assert meta["sagemaker/checkpoint_verified"] is True
    assert meta["sagemaker/checkpoints_reported"] == 1 and meta["sagemaker/checkpoints_not_in_s3"] == []
    assert meta["sagemaker/state"] == "completed"
    assert meta["sagemaker/last_checkpoint"] == f"s3://{aws.bucket}/runs/checkpoints/{job_name}/checkpoint-2"


def test_a_second_launch_reattaches_to_a_running_job_and_reuses_a_completed_one(aws, instance):
    fp = fingerprint()
    name = f"{training_job_name('srl_checkpoint', 'gold', fp)}-a1"
    # The first run's worker dies while the job trains (no interrupt reaches it, nothing is stopped).
    aws.script[name] = [IN_PROGRESS, RuntimeError("run worker lost")]
    first = launch(aws, "gold", fp, instance)
    assert not first.success and aws.stopped == [] and len(aws.created) == 1

    aws.script[name] = [IN_PROGRESS, IN_PROGRESS, IN_PROGRESS, {}]  # still training, then Completed
    polled = aws.describes[name]
    second = launch(aws, "gold", fp, instance)
    assert second.success, failure(second)
    assert len(aws.created) == 1  # reattached: no second CreateTrainingJob
    assert aws.describes[name] - polled >= 4
    assert materialized(second)["metrics_streamed"] == 2  # the job's Pipes stream, read again

    third = launch(aws, "gold", fp, instance)  # Completed: its output is reused
    assert third.success and len(aws.created) == 1
    listed = aws.session.client("sagemaker").list_training_jobs(NameContains=name[:-3])
    assert [j["TrainingJobName"] for j in listed["TrainingJobSummaries"]] == [name]


def test_a_max_wait_stop_is_resumed_by_attempt_2_on_the_same_checkpoints(aws, instance):
    fp = fingerprint()
    job_name = training_job_name("srl_checkpoint", "gold", fp)
    aws.script[f"{job_name}-a1"] = [IN_PROGRESS, STOPPED_AT_MAX_WAIT]
    first = launch(aws, "gold", fp, instance)
    assert not first.success
    assert "MaxWaitTimeExceeded" in failure(first) and "spot_interruption_sensor" in failure(first)
    with pytest.raises(jobs.TrainingJobNotFound):
        aws.backend.job_status(training_job_name("srl_checkpoint", "gold", fingerprint()))
    status = aws.backend.job_status(job_name)
    assert (status.state, status.resumable, status.max_wait_exceeded, status.interruptions) == (
        "stopped", True, True, 1)
    assert status.spot_saving_pct == 60.0
    assert status.last_checkpoint == f"s3://{aws.bucket}/runs/checkpoints/{job_name}/checkpoint-2"

    second = launch(aws, "gold", fp, instance)
    assert second.success, failure(second)
    assert [p["TrainingJobName"] for p in aws.created] == [f"{job_name}-a1", f"{job_name}-a2"]
    assert aws.created[0]["CheckpointConfig"] == aws.created[1]["CheckpointConfig"]
    assert aws.created[1]["Tags"] != aws.created[0]["Tags"]  # attempt 2, launched by run 2
    merged = aws.backend.job_status(job_name)
    assert (merged.state, merged.interruptions, [e.status for e in merged.events]) == (
        "completed", 1, ["Interrupted", "MaxWaitTimeExceeded"])
    [ref] = [r for r in aws.backend.list_jobs() if r.job_name == job_name]
    assert (ref.asset, ref.partition, ref.run_id) == ("srl_checkpoint", "gold", second.run_id)


def test_a_job_that_failed_for_good_is_not_relaunched(aws, instance):
    fp = fingerprint()
    name = f"{training_job_name('srl_checkpoint', 'silver', fp)}-a1"
    aws.script[name] = [{"TrainingJobStatus": "Failed", "SecondaryStatus": "Failed",
                         "FailureReason": "AlgorithmError: error: --data: no usable records, exit code 2"}]
    first = launch(aws, "silver", fp, instance)
    assert not first.success and "AlgorithmError: error: --data" in failure(first)
    second = launch(aws, "silver", fp, instance)
    assert not second.success and "AlgorithmError" in failure(second)
    assert len(aws.created) == 1


def test_terminating_the_run_stops_the_job_and_a_rerun_resumes_it(aws, instance):
    fp = fingerprint()
    job_name = training_job_name("srl_checkpoint", "gold", fp)
    name = f"{job_name}-a1"
    aws.script[name] = [IN_PROGRESS, IN_PROGRESS, DagsterExecutionInterruptedError()]
    result = launch(aws, "gold", fp, instance)
    assert not result.success
    assert aws.stopped == [name]

    aws.script[name] = [{"TrainingJobStatus": "Stopped", "SecondaryStatus": "Stopped"}]
    assert aws.backend.job_status(job_name).resumable is False  # the sensor leaves a deliberate stop
    rerun = launch(aws, "gold", fp, instance)  # a person re-runs the partition: attempt 2 resumes
    assert rerun.success, failure(rerun)
    assert [p["TrainingJobName"] for p in aws.created] == [name, f"{job_name}-a2"]
    assert aws.created[1]["CheckpointConfig"]["S3Uri"] == aws.created[0]["CheckpointConfig"]["S3Uri"]


def test_a_run_that_loses_the_race_to_create_an_attempt_reattaches_to_it(aws, instance):
    def lose_the_race(**kwargs):
        raise ClientError({"Error": {"Code": "ResourceInUse", "Message": "Training job names must be "
                                     "unique within an AWS account and region"}}, "CreateTrainingJob")

    aws.session.events.register("after-call.sagemaker.CreateTrainingJob", lose_the_race)
    result = launch(aws, "gold", fingerprint(), instance)
    assert result.success, failure(result)
    assert len(aws.created) == 1 and materialized(result)["global_step"] == 2


def test_a_checkpoint_missing_from_s3_is_reported_not_hidden(aws, instance):
    aws.container.write_checkpoint = False  # the trainer saved it; SageMaker's upload never came
    result = launch(aws, "gold", fingerprint(), instance)
    assert result.success, failure(result)
    meta = materialized(result)
    assert meta["sagemaker/checkpoint_verified"] is False and meta["sagemaker/last_checkpoint"] is None
    assert meta["sagemaker/checkpoints_reported"] == 1
    assert meta["sagemaker/checkpoints_not_in_s3"] == ["checkpoint-2"]
    assert any(entry.level == logging.ERROR and "is not complete in S3" in entry.user_message
               for entry in instance.all_logs(result.run_id))


def test_each_reported_checkpoint_is_checked_in_s3_with_every_rank_s_files(aws, monkeypatch):
    monkeypatch.setattr(_CheckpointWatch, "GRACE_SECONDS", 0.05)
    s3 = aws.session.client("s3")
    uri = f"s3://{aws.bucket}/runs/checkpoints/stalled"
    files = ["adapter_model.safetensors", "rng_state_0.pth", "rng_state_1.pth", "srl_state.json"]
    def put(step, name):
        body = json.dumps({"files": files}).encode() if name == "srl_state.json" else b"w"
        s3.put_object(Bucket=aws.bucket, Key=f"runs/checkpoints/stalled/checkpoint-{step}/{name}", Body=body)
    for name in files:
        put(4, name)
    for name in files[:2] + files[3:]:  # node 1's upload of checkpoint-8 never came
        put(8, name)
    said = []
    context = SimpleNamespace(log=SimpleNamespace(info=lambda m: said.append(("info", m)),
                                                  warning=lambda m: said.append(("warning", m))))
    watch = _CheckpointWatch(s3, uri)
    watch.poll(context, [4])
    watch.poll(context, [4, 8])  # within the grace period: no verdict yet
    time.sleep(0.1)
    watch.poll(context, [4, 8])
    watch.poll(context, [4, 8])  # warned once per checkpoint
    assert watch.unverified == [8]
    put(8, "rng_state_1.pth")
    watch.poll(context, [4, 8])
    assert [level for level, _ in said] == ["info", "warning", "info"]
    assert "checkpoint-4 already in S3" in said[0][1]
    assert "checkpoint-8, saved by the trainer" in said[1][1] and "newest there: checkpoint-4" in said[1][1]
    assert "checkpoint-8 reached S3" in said[2][1]
    assert watch.unverified == []


def test_under_torchrun_only_rank_0_opens_the_pipes_stream(monkeypatch):
    """Every rank would write the same numbered message chunks; ranks other than 0 report nothing."""
    monkeypatch.setenv("DAGSTER_PIPES_CONTEXT", encode_env_var({"bucket": "b", "key": "context.json"}))
    monkeypatch.setenv("DAGSTER_PIPES_MESSAGES", encode_env_var({"bucket": "b", "key_prefix": "m"}))
    monkeypatch.setenv("RANK", "3")
    with open_reporter() as report:
        assert type(report) is Reporter


def test_throttled_aws_calls_are_retried_with_backoff(aws, instance, monkeypatch):
    """Throttling answered by 'AWS' (a `before-send` hook: botocore's real retry handler runs) on
    the first CreateTrainingJob and twice on DescribeTrainingJob: the launch still succeeds, once."""
    from botocore.awsrequest import AWSResponse

    throttles = {"CreateTrainingJob": 1, "DescribeTrainingJob": 2}
    sent = []
    body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()

    def throttle(request, **kwargs):
        operation = request.headers.get("X-Amz-Target", b"").decode().rsplit(".", 1)[-1]
        sent.append(operation)
        if throttles.get(operation, 0) > 0:
            throttles[operation] -= 1
            return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"},
                               SimpleNamespace(stream=lambda **kw: iter([body]), read=lambda *a: body,
                                               content=body))
        return None

    monkeypatch.setattr("botocore.retries.standard.ExponentialBackoff.delay_amount", lambda self, ctx: 0.01)
    aws.session.events.register("before-send.sagemaker", throttle)
    result = launch(aws, "gold", fingerprint(), instance)
    assert result.success, failure(result)
    assert sent.count("CreateTrainingJob") == 2 and throttles == {"CreateTrainingJob": 0, "DescribeTrainingJob": 0}
