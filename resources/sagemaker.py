"""`SageMakerTrainingBackend`: `python -m srl_platform.train` as a SageMaker training job.

The job is built with the v3 SDK's `ModelTrainer` from the tier's `TierSpec` (instance type and
count, managed spot, MaxRuntime/MaxWait, `Torchrun` across nodes for bronze), with the request's
data file and init adapter as input channels and one S3 checkpoint prefix per checkpoint identity
(`srl_platform.sagemaker_jobs` has the names, the S3 layout and the attempt decisions). It is
launched and watched by `resources.sagemaker_pipes.PipesSageMakerClient`, the SageMaker counterpart
of dagster-aws's `PipesECSClient`: Pipes context and messages through S3, polling
`DescribeTrainingJob`, CloudWatch log forwarding, `StopTrainingJob` when the Dagster run is
terminated.

Re-running a partition never pays for a duplicate: a running attempt is reattached, a completed one
is reused, a stopped one is resumed by a new attempt on the same checkpoint prefix.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from dagster import AssetExecutionContext, Failure, MetadataValue
from pydantic import Field

from resources.sagemaker_pipes import PipesSageMakerClient
from resources.training import TrainingBackend, TrainingOutcome, TrainingRequest
from srl_platform import sagemaker_jobs as jobs
from srl_platform.checkpoints import CHECKPOINT_PREFIX
from srl_platform.jobs import JobRef, JobStatus, sagemaker_job_status
from srl_platform.storage import S3ArtifactStore
from srl_platform.tiers import TierSpec, get_tier


class SageMakerTrainingBackend(TrainingBackend):
    """Trains in a SageMaker training job per attempt, with managed spot and S3 checkpoints.

    Inputs, checkpoints, outputs and the Pipes message stream live under `s3_prefix`; the finished
    adapter is downloaded into `work_root/<job_name>/output/`. The image needs the trainer's
    dependencies (torch, transformers, peft, trl, datasets, dagster-pipes, boto3): the
    `srl_platform` package itself is uploaded with each new attempt.
    """

    role: str = Field(description="IAM role ARN the training jobs run as (S3 access to s3_prefix).")
    training_image: str = Field(description="ECR image URI with the trainer's dependencies.")
    s3_prefix: str = Field(description="s3://bucket/prefix holding inputs, checkpoints, outputs and "
                                       "Pipes messages of every job.")
    region_name: str | None = Field(default=None, description="AWS region (default: boto3's).")
    work_root: str = Field(default=".state/sagemaker",
                           description="Local directory the finished adapters are downloaded into.")
    environment: dict[str, str] = Field(default_factory=dict,
                                        description="Extra environment for the trainer container.")
    base_model_uris: dict[str, str] = Field(
        default_factory=dict,
        description="Tier -> S3 URI of its base model directory, mounted as the `base_model` "
                    "channel (the trainer reads SM_CHANNEL_BASE_MODEL); unset: the tier's name.")
    volume_size_gb: int = Field(default=100, description="ML storage volume per instance.")
    container_init: list[str] = Field(
        default_factory=lambda: list(jobs.CONTAINER_INIT),
        description="Prepended to the container entrypoint. The SDK runs /bin/bash as PID 1, which "
                    "does not pass SageMaker's SIGTERM on; the default (a few lines of python3, "
                    "srl_platform.sagemaker_jobs.CONTAINER_INIT) signals the process group and "
                    "waits for the trainer's checkpoint. [] runs the SDK's entrypoint as it is "
                    "(only interval checkpoints survive a stop); ['tini', '-g', '--'] also "
                    "forwards, where the image has tini.")
    poll_interval_seconds: float = Field(default=30.0, description="DescribeTrainingJob interval.")
    job_name_contains: str = Field(
        default="-checkpoint-",
        description="ListTrainingJobs NameContains filter for list_jobs: a part of every training "
                    "job name (training_job_name gives `<asset>-<tier>-<hash>`; the training "
                    "assets are srl_checkpoint and rlvr_checkpoint).")

    max_attempts: int = Field(
        default=10,
        description="Attempts per AWS call of this backend (botocore's standard retry mode: "
                    "exponential backoff with full jitter on throttling, 5xx and connection errors).")

    def boto_session(self) -> boto3.Session:
        """The session every AWS client of this backend comes from (AWS_ENDPOINT_URL is honoured)."""
        return boto3.Session(region_name=self.region_name)

    def aws_client(self, boto: boto3.Session, service: str):
        return boto.client(service, config=BotoConfig(retries={"mode": "standard",
                                                               "max_attempts": self.max_attempts}))

    # ---- TrainingBackend ---------------------------------------------------------------------

    def run_training(self, context: AssetExecutionContext, request: TrainingRequest) -> TrainingOutcome:
        started = time.monotonic()
        tier = get_tier(request.tier)
        if tier.instance_count > 1 and tier.distribution != "torchrun":
            raise Failure(description=f"tier {tier.name} asks for {tier.instance_count} instances without "
                                      "distribution='torchrun': every node would train the whole job and "
                                      "overwrite the others' checkpoints. Set distribution='torchrun' or "
                                      "instance_count=1 in its TierSpec.", allow_retries=False)
        boto = self.boto_session()
        sagemaker, s3 = self.aws_client(boto, "sagemaker"), self.aws_client(boto, "s3")
        checkpoints = jobs.checkpoint_uri(self.s3_prefix, request.job_name)
        attempts = self._attempts(sagemaker, request.job_name)
        latest = (sagemaker_job_status(sagemaker.describe_training_job(TrainingJobName=attempts[-1][1]))
                  if attempts else None)
        plan = jobs.plan_launch(request.job_name, latest, attempts[-1][0] if attempts else 0)
        context.log.info(f"training job {request.job_name}: {plan.reason}: "
                         f"{'creating' if plan.action == 'create' else plan.action} {plan.attempt_name}")
        if plan.action == "fail":
            raise Failure(description=f"training job {request.job_name}: {plan.reason}. Its checkpoints "
                                      f"stay at {checkpoints}.",
                          metadata={"sagemaker/training_job": plan.attempt_name}, allow_retries=False)
        params = None
        if plan.action == "create":
            params = self._create_params(boto, s3, context, request, tier, plan.attempt_name,
                                         plan.attempt, checkpoints)
        client = PipesSageMakerClient(
            sagemaker, s3, self.aws_client(boto, "logs"), s3_prefix=self.s3_prefix,
            poll_interval=self.poll_interval_seconds, checkpoint_uri=checkpoints)
        invocation = client.run(context=context, training_job_name=plan.attempt_name,
                                create_training_job_params=params)
        describe = invocation.describe
        status = sagemaker_job_status(describe, jobs.newest_s3_checkpoint(s3, checkpoints))
        metadata = {**invocation.metadata, **_status_metadata(status, plan.attempt_name, checkpoints)}
        if describe["TrainingJobStatus"] != "Completed":
            raise Failure(description=_ended_early(request.job_name, plan.attempt_name, status),
                          metadata={**metadata, "log_tail": MetadataValue.md(f"```\n{invocation.log_tail}\n```")},
                          allow_retries=False)
        outcome_dir = Path(self.work_root).expanduser().resolve() / request.job_name
        summary, metrics = self._download(s3, describe, outcome_dir, invocation.get_custom_messages())
        step = summary.get("global_step")
        verified = isinstance(step, int) and jobs.checkpoint_in_s3(s3, checkpoints, step)
        metadata["sagemaker/checkpoint_verified"] = verified
        if not verified:
            context.log.error(f"training job {request.job_name} finished at step {step} but "
                              f"{checkpoints}/{CHECKPOINT_PREFIX}{step}/ is not complete in S3 (newest "
                              f"there: {status.last_checkpoint or 'none'}): SageMaker's checkpoint "
                              "upload stopped. The adapter is complete; an interruption would have "
                              "lost every step since that checkpoint.")
        context.add_output_metadata(metadata)
        streamed = [m for m in invocation.get_custom_messages()
                    if isinstance(m, dict) and m.get("kind") == "metrics" and "loss" in m]
        return TrainingOutcome(
            job_name=request.job_name,
            adapter_dir=outcome_dir / "output",
            summary=summary,
            metrics=metrics,
            metrics_streamed=len(streamed),
            wall_seconds=round(time.monotonic() - started, 2),
            log_tail=invocation.log_tail,
            checkpoint_dir=checkpoints,
        )

    def list_jobs(self) -> list[JobRef]:
        """The newest attempt of every job this backend launched (by name, then by its tags)."""
        sagemaker = self.aws_client(self.boto_session(), "sagemaker")
        newest: dict[str, tuple[int, str]] = {}
        for page in sagemaker.get_paginator("list_training_jobs").paginate(NameContains=self.job_name_contains):
            for summary in page["TrainingJobSummaries"]:
                parsed = jobs.split_attempt(summary["TrainingJobName"])
                if parsed and parsed[1] > newest.get(parsed[0], (0, ""))[0]:
                    newest[parsed[0]] = (parsed[1], summary["TrainingJobArn"])
        refs = []
        for _, arn in newest.values():
            tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=arn).get("Tags", [])}
            if jobs.TAG_ASSET in tags and jobs.TAG_JOB in tags:  # launched by an asset through us
                refs.append(JobRef(job_name=tags[jobs.TAG_JOB], asset=tags[jobs.TAG_ASSET],
                                   partition=tags.get(jobs.TAG_PARTITION), run_id=tags.get(jobs.TAG_RUN_ID)))
        return sorted(refs, key=lambda ref: ref.job_name)

    def job_status(self, job_name: str) -> JobStatus:
        """Every attempt of the checkpoint identity `job_name` folded into one status (the newest
        attempt's state, all attempts' interruptions); `TrainingJobNotFound` when none exists."""
        boto = self.boto_session()
        sagemaker, s3 = self.aws_client(boto, "sagemaker"), self.aws_client(boto, "s3")
        attempts = self._attempts(sagemaker, job_name)
        statuses = []
        for index, (_, name) in enumerate(attempts):
            newest = (jobs.newest_s3_checkpoint(s3, jobs.checkpoint_uri(self.s3_prefix, job_name))
                      if index == len(attempts) - 1 else None)
            statuses.append(sagemaker_job_status(sagemaker.describe_training_job(TrainingJobName=name),
                                                 newest))
        return jobs.merge_attempts(job_name, statuses)

    # ---- helpers -----------------------------------------------------------------------------

    def _attempts(self, sagemaker, job_name: str) -> list[tuple[int, str]]:
        """(N, SageMaker name) of every attempt of `job_name`, oldest first."""
        found = []
        pages = sagemaker.get_paginator("list_training_jobs").paginate(NameContains=jobs.attempt_base(job_name))
        for page in pages:
            for summary in page["TrainingJobSummaries"]:
                number = jobs.attempt_number(job_name, summary["TrainingJobName"])
                if number is not None:
                    found.append((number, summary["TrainingJobName"]))
        return sorted(found)

    def _create_params(self, boto, s3, context, request: TrainingRequest, tier: TierSpec,
                       attempt_name: str, attempt: int, checkpoints: str) -> dict:
        """Upload the inputs and build the boto3 CreateTrainingJob request with ModelTrainer."""
        from sagemaker.core.helper.session_helper import Session
        from sagemaker.core.training.configs import (
            CheckpointConfig,
            Compute,
            InputData,
            OutputDataConfig,
            SourceCode,
            StoppingCondition,
            Tag,
        )
        from sagemaker.train import ModelTrainer
        from sagemaker.train.distributed import Torchrun

        store = S3ArtifactStore(self.s3_prefix, s3)
        inputs = f"inputs/{request.job_name}"
        store.put_file(f"{inputs}/{jobs.TRAIN_CHANNEL}/data{request.data_file.suffix}", request.data_file)
        channels = {jobs.TRAIN_CHANNEL: store.uri(f"{inputs}/{jobs.TRAIN_CHANNEL}") + "/"}
        # The teacher adapter of a distillation arrives as SM_CHANNEL_TEACHER, the trainer's default.
        for channel, directory in ((jobs.INIT_FROM_CHANNEL, request.init_from),
                                   (jobs.TEACHER_CHANNEL, request.teacher)):
            if directory is None:
                continue
            for path in sorted(directory.rglob("*")):
                if path.is_file():
                    store.put_file(f"{inputs}/{channel}/{path.relative_to(directory).as_posix()}", path)
            channels[channel] = store.uri(f"{inputs}/{channel}") + "/"
        if request.tier in self.base_model_uris:
            channels[jobs.BASE_MODEL_CHANNEL] = self.base_model_uris[request.tier].rstrip("/") + "/"
        tags = {
            jobs.TAG_JOB: request.job_name,
            jobs.TAG_ATTEMPT: str(attempt),
            jobs.TAG_ASSET: context.asset_key.to_user_string(),
            jobs.TAG_STAGE: request.stage,
            jobs.TAG_TIER: request.tier,
            jobs.TAG_DATA_SHA256: hashlib.sha256(request.data_file.read_bytes()).hexdigest(),
        }
        if context.has_partition_key:
            tags[jobs.TAG_PARTITION] = context.partition_key
        bucket, prefix = jobs.split_s3_uri(self.s3_prefix)
        with tempfile.TemporaryDirectory(prefix="srl-sagemaker-code-") as tmp:
            trainer = ModelTrainer(
                sagemaker_session=Session(boto_session=boto, default_bucket=bucket,
                                          default_bucket_prefix=prefix or None),
                role=self.role,
                training_image=self.training_image,
                base_job_name=attempt_name,
                input_s3_key_prefix="code",
                source_code=SourceCode(source_dir=str(jobs.stage_source_archive(Path(tmp))),
                                       entry_script=jobs.ENTRY_SCRIPT),
                distributed=Torchrun() if tier.distribution == "torchrun" else None,
                compute=Compute(instance_type=tier.instance_type, instance_count=tier.instance_count,
                                volume_size_in_gb=self.volume_size_gb,
                                enable_managed_spot_training=tier.use_spot_instances),
                stopping_condition=StoppingCondition(
                    max_runtime_in_seconds=tier.max_run_seconds,
                    # AWS accepts MaxWaitTimeInSeconds only with managed spot.
                    max_wait_time_in_seconds=tier.max_wait_seconds if tier.use_spot_instances else None),
                checkpoint_config=CheckpointConfig(s3_uri=checkpoints, local_path=jobs.CONTAINER_CHECKPOINT_DIR),
                output_data_config=OutputDataConfig(s3_output_path=jobs.s3_join(self.s3_prefix, "output"),
                                                    compression_type="GZIP"),
                environment={"PYTHONUNBUFFERED": "1", **_torchrun_environment(tier), **self.environment},
                hyperparameters=jobs.trainer_hyperparameters(request.stage, request.tier,
                                                             request.init_from is not None, request.args),
                tags=[Tag(key=key, value=value) for key, value in tags.items()],
            )
            try:
                # ModelTrainer.train() names the job `<base>-<timestamp>`; a deterministic attempt name
                # needs the request it would send (code and SDK drivers uploaded), sent by the Pipes
                # client under our name.
                params = trainer._create_training_job_args(
                    input_data_config=[InputData(channel_name=name, data_source=uri)
                                       for name, uri in channels.items()],
                    boto3=True)
            finally:
                if trainer._temp_code_dir is not None:
                    trainer._temp_code_dir.cleanup()
        if self.container_init:
            spec = params["AlgorithmSpecification"]
            spec["ContainerEntrypoint"] = [*self.container_init, *spec["ContainerEntrypoint"]]
        return params

    def _download(self, s3, describe: dict, outcome_dir: Path, messages) -> tuple[dict, list[dict]]:
        """The adapter (model.tar.gz, what the trainer saved to SM_MODEL_DIR) into `output/`, with
        metrics.jsonl from output.tar.gz (SM_OUTPUT_DATA_DIR); (training summary, metrics rows)."""
        name = describe["TrainingJobName"]
        output = outcome_dir / "output"
        shutil.rmtree(output, ignore_errors=True)
        model_uri = describe.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        data_uri = jobs.s3_join(describe["OutputDataConfig"]["S3OutputPath"], name, "output", "output.tar.gz")
        with tempfile.TemporaryDirectory(prefix="srl-sagemaker-out-") as tmp:
            for uri, target in ((model_uri, output), (data_uri, outcome_dir / "output-data")):
                if uri is None:
                    continue
                bucket, key = jobs.split_s3_uri(uri)
                archive = Path(tmp) / Path(key).name
                try:
                    s3.download_file(bucket, key, str(archive))
                except ClientError as exc:
                    if target is output:
                        raise Failure(description=f"training job {name} completed but its model "
                                                  f"artefact {uri} cannot be read: {exc}") from exc
                    continue  # no SM_OUTPUT_DATA_DIR archive: the metrics come from Pipes only
                shutil.rmtree(target, ignore_errors=True)
                jobs.extract_tar_gz(archive, target)
        metrics_file = outcome_dir / "output-data" / "metrics.jsonl"
        if metrics_file.is_file() and not (output / "metrics.jsonl").is_file():
            shutil.copyfile(metrics_file, output / "metrics.jsonl")
        summary_file = output / "training_summary.json"
        reported = [m for m in messages if isinstance(m, dict) and m.get("kind") == "summary"]
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
        elif reported:
            summary = {k: v for k, v in reported[-1].items() if k != "kind"}
        else:
            raise Failure(description=f"training job {name} completed but {model_uri} holds no "
                                      "training_summary.json and the trainer reported no summary")
        rows = (output / "metrics.jsonl").read_text().splitlines() if (output / "metrics.jsonl").is_file() else []
        return summary, [json.loads(line) for line in rows if line.strip()]


def _torchrun_environment(tier: TierSpec) -> dict[str, str]:
    """torchrun kills its workers 30 s after forwarding a SIGTERM unless told otherwise; SageMaker
    allows 120 s between its SIGTERM and the end, which a checkpoint of a large model needs."""
    return {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "110"} if tier.distribution == "torchrun" else {}


def _status_metadata(status: JobStatus, attempt_name: str, checkpoints: str) -> dict:
    metadata = {f"sagemaker/{key}": value for key, value in status.as_metadata().items()}
    metadata["sagemaker/training_job"] = attempt_name
    metadata["sagemaker/checkpoint_uri"] = MetadataValue.path(checkpoints)
    return metadata


def _ended_early(job_name: str, attempt_name: str, status: JobStatus) -> str:
    where = (f"its newest checkpoint is {status.last_checkpoint}" if status.last_checkpoint
             else "it had no checkpoint in S3 yet, so a new attempt starts over")
    if status.resumable:
        why = "stopped at MaxWaitTimeExceeded" if status.max_wait_exceeded else "failed for capacity"
        return (f"training job {attempt_name} {why} ({status.failure_reason or status.secondary_status}); "
                f"{where}. spot_interruption_sensor requests the run that resumes it, or re-run this "
                f"partition with the same inputs and config: a new attempt of {job_name} resumes there.")
    if status.state == "stopped" and status.secondary_status == "MaxRuntimeExceeded":
        return (f"training job {attempt_name} hit MaxRuntimeInSeconds; {where}. Raise the tier's "
                "max_run_seconds before running it again.")
    if status.state == "stopped":
        return (f"training job {attempt_name} was stopped ({status.secondary_status}); {where}. "
                f"Re-run this partition to resume it in a new attempt of {job_name}.")
    return (f"training job {attempt_name} failed: {status.failure_reason or 'no FailureReason'}; "
            f"{where}. Fix the cause and change the inputs or config: this job name will not be "
            "retried.")
