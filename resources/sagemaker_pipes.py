"""`PipesSageMakerClient`: a SageMaker training job as a Dagster Pipes external process.

dagster-aws has no SageMaker Pipes client; this one follows `PipesECSClient` (launch, wait, forward
termination) with what SageMaker offers: Pipes context and messages through S3 (the job's
`Environment` carries the bootstrap variables), `DescribeTrainingJob` polling, the CloudWatch log
streams of `/aws/sagemaker/TrainingJobs`, `StopTrainingJob`. It knows nothing of tiers or attempts:
`resources.sagemaker.SageMakerTrainingBackend` decides what to launch.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from contextlib import contextmanager

from botocore.exceptions import ClientError
from dagster import (
    AssetExecutionContext,
    DagsterExecutionInterruptedError,
    MetadataValue,
    PipesClient,
    PipesClientCompletedInvocation,
    open_pipes_session,
)
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

from srl_platform import sagemaker_jobs as jobs
from srl_platform.checkpoints import CHECKPOINT_PREFIX
from srl_platform.jobs import REPORTABLE_STATUSES


class SageMakerInvocation(PipesClientCompletedInvocation):
    """A finished (or reattached and finished) training job: the Pipes results and its last describe."""

    def __init__(self, session, describe: dict, log_tail: str, metadata=None):
        super().__init__(session, metadata=metadata)
        self.describe = describe
        self.log_tail = log_tail


class _AttemptMessageReader(PipesS3MessageReader):
    """Pipes message chunks under a key prefix fixed per attempt instead of a random one, so a run
    that reattaches to a running job reads the stream the job is writing (from its first chunk)."""

    def __init__(self, *, key_prefix: str, **kwargs):
        super().__init__(**kwargs)
        self.key_prefix = key_prefix

    @contextmanager
    def get_params(self):
        yield {"bucket": self.bucket, "key_prefix": self.key_prefix, "include_stdio_in_messages": False}


class PipesSageMakerClient(PipesClient):
    """Launches (or reattaches to) a SageMaker training job and waits for it, through Dagster Pipes.

    Modelled on `PipesECSClient`: the Pipes bootstrap variables go into the job's `Environment`
    (context and messages through S3: the trainer opens them with `PipesS3ContextLoader` and
    `PipesS3MessageWriter`), Dagster's run tags into its `Tags`; completion is awaited by polling
    `DescribeTrainingJob` (never the SDK's blocking wait), each new secondary status and spot
    interruption is logged, CloudWatch logs are forwarded to the run's stdout, and when the run is
    terminated the job is stopped (`StopTrainingJob`; SageMaker sends SIGTERM, and checkpoints in
    /opt/ml/checkpoints are uploaded before the instances go).
    """

    def __init__(self, client, s3_client, logs_client, *, s3_prefix: str, poll_interval: float = 30.0,
                 forward_termination: bool = True, checkpoint_uri: str | None = None,
                 log_tail_lines: int = 40):
        self._client = client
        self._s3 = s3_client
        self._logs = logs_client
        self.s3_prefix = s3_prefix
        self.poll_interval = poll_interval
        self.forward_termination = forward_termination
        self.checkpoint_uri = checkpoint_uri
        self.log_tail_lines = log_tail_lines

    def run(self, *, context: AssetExecutionContext, training_job_name: str,  # type: ignore[override]
            create_training_job_params: dict | None = None, extras: dict | None = None
            ) -> SageMakerInvocation:
        """Create `training_job_name` from `create_training_job_params` (a boto3 CreateTrainingJob
        request), or with None reattach to the existing job of that name; wait until it ends."""
        bucket, context_key = jobs.split_s3_uri(jobs.s3_join(self.s3_prefix, "pipes", training_job_name, "context"))
        injector = PipesS3ContextInjector(bucket=bucket, client=self._s3, key_prefix=f"{context_key}/")
        reader = _AttemptMessageReader(
            bucket=bucket, client=self._s3, interval=min(self.poll_interval, 10.0),
            key_prefix=jobs.pipes_messages_prefix(self.s3_prefix, training_job_name))
        logs = _LogForwarder(self._logs, training_job_name, self.log_tail_lines)
        watch = _CheckpointWatch(self._s3, self.checkpoint_uri) if self.checkpoint_uri else None
        with open_pipes_session(context=context, context_injector=injector, message_reader=reader,
                                extras=extras) as session:
            if create_training_job_params is not None:
                params = dict(create_training_job_params, TrainingJobName=training_job_name)
                params["Environment"] = {**params.get("Environment", {}), **session.get_bootstrap_env_vars()}
                tags = {t["Key"]: t["Value"] for t in params.get("Tags", [])}
                tags.update(session.default_remote_invocation_info)
                params["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
                try:
                    self._client.create_training_job(**params)
                    context.log.info(f"[pipes] created SageMaker training job {training_job_name}")
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "ResourceInUse":
                        raise
                    # Another run created this attempt between our look and our create.
                    context.log.info(f"[pipes] SageMaker training job {training_job_name} already "
                                     "exists (another run launched it): reattaching")
            else:
                context.log.info(f"[pipes] reattached to SageMaker training job {training_job_name}")
            try:
                describe = self._wait(context, training_job_name, session, logs, watch)
            except (DagsterExecutionInterruptedError, KeyboardInterrupt):
                if self.forward_termination:
                    context.log.warning(f"[pipes] Dagster run interrupted: stopping SageMaker training "
                                        f"job {training_job_name} (it gets SIGTERM and 120 s to checkpoint)")
                    self._stop(context, training_job_name)
                raise
        context.log.info(f"[pipes] SageMaker training job {training_job_name} ended "
                         f"{describe['TrainingJobStatus']} ({describe.get('SecondaryStatus')})")
        metadata = {"sagemaker/console": MetadataValue.url(self._console_url(training_job_name))}
        if watch is not None:  # once more: the session has now read every message the job wrote
            watch.poll(context, _reported_checkpoints(session.get_custom_messages()))
            metadata["sagemaker/checkpoints_reported"] = len(watch.reported)
            metadata["sagemaker/checkpoints_not_in_s3"] = MetadataValue.json(
                [f"{CHECKPOINT_PREFIX}{step}" for step in watch.unverified])
        return SageMakerInvocation(session, describe=describe, log_tail=logs.tail(), metadata=metadata)

    def _wait(self, context, name: str, session, logs: _LogForwarder, watch: _CheckpointWatch | None) -> dict:
        shown_status, shown_events = None, set()
        while True:
            describe = self._client.describe_training_job(TrainingJobName=name)
            status = (describe["TrainingJobStatus"], describe.get("SecondaryStatus"))
            if status != shown_status:
                context.log.info(f"[pipes] {name}: {status[0]} / {status[1]}")
                shown_status = status
            for transition in describe.get("SecondaryStatusTransitions", []):
                key = (transition["Status"], str(transition["StartTime"]))
                if transition["Status"] in REPORTABLE_STATUSES and key not in shown_events:
                    shown_events.add(key)
                    context.log.warning(f"[pipes] {name}: {transition['Status']} at {key[1]}: "
                                        f"{transition.get('StatusMessage', '')}")
            logs.forward(context)
            if watch is not None:
                watch.poll(context, _reported_checkpoints(session.get_custom_messages()))
            if status[0] in jobs.TERMINAL_STATES:
                return describe
            time.sleep(self.poll_interval)

    def _stop(self, context, name: str) -> None:
        try:
            self._client.stop_training_job(TrainingJobName=name)
        except ClientError as exc:
            context.log.warning(f"[pipes] could not stop SageMaker training job {name}: {exc}")

    def _console_url(self, name: str) -> str:
        region = self._client.meta.region_name
        return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{name}"


def _reported_checkpoints(messages) -> list[int]:
    return [m["step"] for m in messages if isinstance(m, dict) and m.get("kind") == "checkpoint"
            and isinstance(m.get("step"), int)]


class _LogForwarder:
    """Copies the job's CloudWatch streams (`/aws/sagemaker/TrainingJobs`, `<job>/algo-<i>-<epoch>`,
    one per host, named only once the host starts) to stdout, the run's compute log, on every poll.

    Not dagster-aws's `PipesCloudWatchLogReader`: that tails one stream known in advance, on a
    thread that checks for the session's end only after a non-empty batch.
    """

    def __init__(self, client, job_name: str, tail_lines: int):
        self.client, self.job_name = client, job_name
        self.tokens: dict[str, str] = {}
        self.lines: deque[str] = deque(maxlen=tail_lines)
        self.disabled = False

    def forward(self, context) -> None:
        if self.disabled:
            return
        try:
            pages = self.client.get_paginator("describe_log_streams").paginate(
                logGroupName=jobs.LOG_GROUP, logStreamNamePrefix=f"{self.job_name}/")
            streams = [s["logStreamName"] for page in pages for s in page.get("logStreams", [])]
            for stream in sorted(streams):
                self._forward_stream(stream)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code != "ResourceNotFoundException":  # no log group or stream yet: try again later
                context.log.warning(f"[pipes] not forwarding CloudWatch logs of {self.job_name}: {exc}")
                self.disabled = True
        sys.stdout.flush()

    def _forward_stream(self, stream: str) -> None:
        host = stream[len(self.job_name) + 1:].rsplit("-", 1)[0]
        while True:
            kwargs = {"logGroupName": jobs.LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if stream in self.tokens:
                kwargs["nextToken"] = self.tokens[stream]
            page = self.client.get_log_events(**kwargs)
            for event in page.get("events", []):
                for line in event["message"].splitlines():
                    sys.stdout.write(f"[{host}] {line}\n")
                    self.lines.append(line)
            done = not page.get("events") or page.get("nextForwardToken") == self.tokens.get(stream)
            self.tokens[stream] = page.get("nextForwardToken", self.tokens.get(stream))
            if done:
                return

    def tail(self) -> str:
        return "\n".join(self.lines)


class _CheckpointWatch:
    """Checks every checkpoint the trainer reports (a Pipes `checkpoint` message, sent once the
    checkpoint is complete in /opt/ml/checkpoints) against its S3 copy: logged when it is complete
    there, warned about once when it is not `GRACE_SECONDS` after the report. SageMaker's upload can
    stop silently, and a spot reclaim would then lose every step since the newest copy in S3."""

    GRACE_SECONDS = 300.0  # SageMaker uploads asynchronously; a large checkpoint takes minutes

    def __init__(self, s3, uri: str):
        self.s3, self.uri = s3, uri
        self.seen: set[int] = set()
        self.reported: dict[int, float] = {}  # step -> when the trainer reported it (monotonic)
        self.warned: set[int] = set()
        self.first = True

    def poll(self, context, reported_steps) -> None:
        now = time.monotonic()
        for step in reported_steps:
            self.reported.setdefault(step, now)
        new = [s for s in jobs.checkpoint_steps(self.s3, self.uri)
               if s not in self.seen and jobs.checkpoint_in_s3(self.s3, self.uri, s)]
        if new:
            self.seen.update(new)
            what = "already in S3 (a resume starts there)" if self.first else "reached S3"
            context.log.info(f"checkpoint {CHECKPOINT_PREFIX}{max(new)} {what}: {self.uri}")
        self.first = False
        for step, at in sorted(self.reported.items()):
            if step in self.seen or step in self.warned or now - at <= self.GRACE_SECONDS:
                continue
            newest = max(self.seen, default=None)
            context.log.warning(
                f"checkpoint {CHECKPOINT_PREFIX}{step}, saved by the trainer {(now - at) / 60:.0f} min "
                f"ago, is not complete in {self.uri} (newest there: "
                f"{CHECKPOINT_PREFIX + str(newest) if newest is not None else 'none'}): SageMaker's "
                "checkpoint upload may have stopped; an interruption now would lose every step since")
            self.warned.add(step)

    @property
    def unverified(self) -> list[int]:
        """Reported checkpoints not (yet) seen complete in S3."""
        return sorted(step for step in self.reported if step not in self.seen)
