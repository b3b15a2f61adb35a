"""SageMaker training jobs without Dagster: names, S3 layout, what to do with an existing attempt.

A training request's `job_name` (deterministic per asset, tier, inputs and config) is the
**checkpoint identity**: one S3 checkpoint prefix, `<s3_prefix>/checkpoints/<job_name>/`, shared
by every attempt. SageMaker training job names are unique forever (a finished job's name cannot be
reused), so each attempt is its own job, `<job_name>-a<N>` (`attempt_job_name`). A launch looks at
the newest attempt first (`plan_launch`):

    none yet                          create attempt 1
    InProgress / Stopping             reattach: wait for it, create nothing
    Completed                         reuse its output
    Stopped at MaxWaitTimeExceeded,   create attempt N+1 with the same checkpoint prefix, so the
    Failed for capacity, or stopped   trainer resumes from the newest checkpoint SageMaker synced
    by a person / a terminated run
    Stopped at MaxRuntimeExceeded     refuse: the same budget would stop it again; raise the
                                      tier's max_run_seconds (a new job identity) first
    Failed otherwise                  refuse with SageMaker's FailureReason

`merge_attempts` folds the attempts' `JobStatus`es into one for the checkpoint identity (events and
interruptions of every attempt, billable and training seconds summed), the way a local job's
`job.json` counts every attempt.

S3 layout under the backend's `s3_prefix` (`s3://bucket/prefix`):

    inputs/<job_name>/train/<data file>    the `train` channel (SM_CHANNEL_TRAIN)
    inputs/<job_name>/init_from/...        the `init_from` channel: the adapter RLVR continues
    inputs/<job_name>/teacher/...          the `teacher` channel: a distillation's teacher adapter
    checkpoints/<job_name>/checkpoint-N/   CheckpointConfig.S3Uri (SageMaker syncs /opt/ml/checkpoints)
    output/<attempt>/output/model.tar.gz   SM_MODEL_DIR: the adapter
    output/<attempt>/output/output.tar.gz  SM_OUTPUT_DATA_DIR: metrics.jsonl, training_summary.json
    pipes/<attempt>/messages/<i>.json      Dagster Pipes message chunks (deterministic per attempt,
                                           so a run that reattaches reads the same stream)
    code/<attempt>-<time>/input/...        the `srl_platform` package (one archive) and SDK drivers
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

from srl_platform.checkpoints import CHECKPOINT_PREFIX, STATE_FILE
from srl_platform.jobs import JobStatus

MAX_JOB_NAME = 63  # SageMaker's limit on TrainingJobName
MAX_ATTEMPTS = 999
_ATTEMPT_SUFFIX_ROOM = len("-a999")
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")  # SageMaker's TrainingJobName pattern
_ATTEMPT = re.compile(r"^(?P<base>.+)-a(?P<n>[1-9][0-9]{0,2})$")

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
"""CloudWatch log group of every training job; one stream per host, `<job>/algo-<i>-<epoch>`."""
CONTAINER_CHECKPOINT_DIR = "/opt/ml/checkpoints"
CONTAINER_CHANNEL_ROOT = "/opt/ml/input/data"
TRAIN_CHANNEL = "train"
INIT_FROM_CHANNEL = "init_from"
TEACHER_CHANNEL = "teacher"
BASE_MODEL_CHANNEL = "base_model"  # the trainer reads SM_CHANNEL_BASE_MODEL when --base-model is unset
ENTRY_SCRIPT = "srl_train_entry.py"
ENTRY_SCRIPT_TEXT = '''"""SageMaker entry script: `python -m srl_platform.train`, the hyperparameters as its flags.

The SDK's drivers run a script file (plain, or under torchrun for several nodes), not a module;
`srl_platform/` is uploaded beside this file, so it is importable from here.
"""
import sys

from srl_platform.train import main

sys.exit(main())
'''

TERMINAL_STATES = frozenset({"Completed", "Failed", "Stopped"})

# Tags on every attempt: what launched it, so `list_jobs` can name the asset partition.
TAG_JOB = "srl:job"
TAG_ATTEMPT = "srl:attempt"
TAG_ASSET = "srl:asset"
TAG_PARTITION = "srl:partition"
TAG_STAGE = "srl:stage"
TAG_TIER = "srl:tier"
TAG_DATA_SHA256 = "srl:data-sha256"
TAG_RUN_ID = "dagster/run-id"  # set by the Pipes session's remote invocation info


class TrainingJobNotFound(LookupError):
    """No SageMaker training job (attempt) exists for a checkpoint identity."""


# ---- names ----------------------------------------------------------------------------------------


def attempt_base(job_name: str) -> str:
    """The part of every attempt's name before `-a<N>`: `job_name` itself when it leaves room for
    the suffix, else its first characters and a hash of the whole (deterministic, distinct)."""
    if not _JOB_NAME.match(job_name):
        raise ValueError(f"training job name {job_name!r} is not a valid SageMaker job name (letters, "
                         "digits and hyphens, starting and ending with a letter or digit)")
    budget = MAX_JOB_NAME - _ATTEMPT_SUFFIX_ROOM
    if len(job_name) <= budget:
        return job_name
    digest = hashlib.sha256(job_name.encode()).hexdigest()[:8]
    head = job_name[: budget - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


def attempt_job_name(job_name: str, attempt: int) -> str:
    """SageMaker name of attempt `attempt` (1, 2, ...) of the checkpoint identity `job_name`."""
    if not 1 <= attempt <= MAX_ATTEMPTS:
        raise ValueError(f"training job {job_name}: attempt {attempt} is outside 1..{MAX_ATTEMPTS}")
    return f"{attempt_base(job_name)}-a{attempt}"


def attempt_number(job_name: str, sagemaker_name: str) -> int | None:
    """N when `sagemaker_name` is attempt N of `job_name`, else None."""
    match = _ATTEMPT.match(sagemaker_name)
    if match is None or match["base"] != attempt_base(job_name):
        return None
    return int(match["n"])


def split_attempt(sagemaker_name: str) -> tuple[str, int] | None:
    """(the attempts' common base, N) for a name of the `<base>-a<N>` form, else None."""
    match = _ATTEMPT.match(sagemaker_name)
    return (match["base"], int(match["n"])) if match else None


# ---- S3 layout ------------------------------------------------------------------------------------


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> ("bucket", "some/key")."""
    if not uri.startswith("s3://") or not uri[len("s3://"):].split("/", 1)[0]:
        raise ValueError(f"{uri!r} is not an S3 URI (s3://bucket/key)")
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key.strip("/")


def s3_join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def checkpoint_uri(s3_prefix: str, job_name: str) -> str:
    """`CheckpointConfig.S3Uri` of every attempt of `job_name`."""
    return s3_join(s3_prefix, "checkpoints", job_name)


def input_uri(s3_prefix: str, job_name: str, channel: str) -> str:
    return s3_join(s3_prefix, "inputs", job_name, channel)


def pipes_messages_prefix(s3_prefix: str, attempt_name: str) -> str:
    """Key prefix (within the bucket) of an attempt's Pipes message chunks."""
    _, key = split_s3_uri(s3_join(s3_prefix, "pipes", attempt_name, "messages"))
    return key


def checkpoint_steps(s3_client, uri: str) -> list[int]:
    """Steps of the `checkpoint-N/` folders under the checkpoint URI (complete or not), ascending."""
    bucket, key = split_s3_uri(uri)
    prefix = f"{key}/{CHECKPOINT_PREFIX}"
    steps = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix,
                                                                    Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            tail = common["Prefix"][len(prefix):].rstrip("/")
            if tail.isdigit():
                steps.append(int(tail))
    return sorted(steps)


def checkpoint_in_s3(s3_client, uri: str, step: int) -> bool:
    """Whether `checkpoint-<step>/` is complete in S3: its `srl_state.json` is there and so is every
    file that state lists (the files of all ranks, uploaded by every node in any order)."""
    bucket, key = split_s3_uri(uri)
    prefix = f"{key}/{CHECKPOINT_PREFIX}{step}/"
    present = {obj["Key"][len(prefix):]
               for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
               for obj in page.get("Contents", [])}
    if STATE_FILE not in present:
        return False
    try:
        state = json.loads(s3_client.get_object(Bucket=bucket, Key=prefix + STATE_FILE)["Body"].read())
    except ValueError:
        return False  # torn or partly uploaded
    return set(state.get("files", [])) <= present if isinstance(state, dict) else False


def newest_s3_checkpoint(s3_client, uri: str) -> str | None:
    """S3 URI of the newest complete checkpoint under `uri`, or None."""
    for step in reversed(checkpoint_steps(s3_client, uri)):
        if checkpoint_in_s3(s3_client, uri, step):
            return s3_join(uri, f"{CHECKPOINT_PREFIX}{step}")
    return None


# ---- what the container runs ----------------------------------------------------------------------


def trainer_hyperparameters(stage: str, tier: str, has_init_from: bool,
                            args: tuple[str, ...]) -> dict[str, str]:
    """`srl_platform.train` flags as SageMaker hyperparameters: the SDK's drivers pass each as
    `--<name> <value>` to the entry script. Data, output and checkpoint directories are left to the
    trainer's SageMaker defaults (SM_CHANNEL_TRAIN, SM_MODEL_DIR, /opt/ml/checkpoints)."""
    flags = {"stage": stage, "tier": tier}
    if has_init_from:
        flags["init-from"] = f"{CONTAINER_CHANNEL_ROOT}/{INIT_FROM_CHANNEL}"
    if len(args) % 2:
        raise ValueError(f"trainer args {args!r}: expected --flag value pairs")
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if not flag.startswith("--"):
            raise ValueError(f"trainer args {args!r}: {flag!r} is not a --flag")
        flags[flag[2:]] = str(value)
    return flags


# The container's init. The SDK's entrypoint (`/bin/bash .../sm_train.sh`) runs as PID 1, and PID 1
# ignores every signal it has no handler for: the SIGTERM of a stop or spot reclaim would never reach
# the trainer, which would lose every step since its last interval checkpoint. This init runs the
# entrypoint, passes SIGTERM to its process group (shell, SDK driver, trainer or torchrun, which
# forwards it to its workers), then waits for every descendant (it is their subreaper: the trainer
# outlives the shell and driver that die of the same signal) and exits with the entrypoint's status.
# Python, as in every training image; CreateTrainingJob allows 256 characters per entrypoint item.
CONTAINER_INIT_CODE = (
    "import os,signal as g,subprocess as p,sys,ctypes as t\n"
    "t.CDLL(None).prctl(36,1)\n"  # PR_SET_CHILD_SUBREAPER (implied for PID 1)
    "c=p.Popen(sys.argv[1:])\n"
    "g.signal(15,lambda*a:(g.signal(15,1),os.killpg(0,15)))\n"  # 1: SIG_IGN
    "r=c.wait()\n"
    "try:\n while 1:os.wait()\nexcept ChildProcessError:0\n"
    "sys.exit(r if r>=0 else 128-r)"
)
CONTAINER_INIT = ("python3", "-c", CONTAINER_INIT_CODE)
"""Prepended to the SDK's container entrypoint (`SageMakerTrainingBackend.container_init`)."""


def stage_source_archive(directory: Path) -> Path:
    """A `SourceCode.source_dir` archive: this `srl_platform` package and the entry script, so the
    job runs the launching code version (the image needs only the dependencies). One archive is
    one S3 upload; the SDK's container script unpacks it in the code channel."""
    package = Path(__file__).resolve().parent
    archive = directory / "srl_code.tar.gz"
    entry = directory / ENTRY_SCRIPT
    entry.write_text(ENTRY_SCRIPT_TEXT)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(entry, arcname=ENTRY_SCRIPT)
        for path in sorted(package.rglob("*.py")):
            tar.add(path, arcname=f"{package.name}/{path.relative_to(package).as_posix()}")
    return archive


def extract_tar_gz(archive: Path, target: Path) -> list[str]:
    """Unpack a SageMaker `*.tar.gz` into `target` (regular files and folders only); names unpacked."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        tar.extractall(target, filter="data")
    return sorted(m.name for m in members if m.isfile())


# ---- decisions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch does about the checkpoint identity's attempts."""

    action: str
    """"create" | "attach" (wait for a running or finished attempt) | "fail"."""
    attempt: int
    attempt_name: str
    reason: str


def plan_launch(job_name: str, latest: JobStatus | None, latest_attempt: int = 0) -> LaunchPlan:
    """Decide from the newest attempt's status (None: no attempt yet). See the module docstring."""
    if latest is None:
        return LaunchPlan("create", 1, attempt_job_name(job_name, 1), "no attempt yet")
    current = attempt_job_name(job_name, latest_attempt)
    if latest.state in ("running", "stopping"):
        return LaunchPlan("attach", latest_attempt, current,
                          f"attempt {latest_attempt} is {latest.state} ({latest.secondary_status})")
    if latest.state == "completed":
        return LaunchPlan("attach", latest_attempt, current, f"attempt {latest_attempt} completed")
    resume = LaunchPlan("create", latest_attempt + 1, attempt_job_name(job_name, latest_attempt + 1), "")
    if latest.resumable:
        why = ("stopped at MaxWaitTimeExceeded" if latest.max_wait_exceeded
               else f"failed for capacity: {latest.failure_reason}")
        return replace(resume, reason=f"attempt {latest_attempt} {why}; resuming from its checkpoints")
    if latest.state == "stopped" and latest.secondary_status == "MaxRuntimeExceeded":
        return LaunchPlan("fail", latest_attempt, current,
                          f"attempt {current} hit MaxRuntimeInSeconds: the same budget would stop "
                          "the next attempt too. Raise the tier's max_run_seconds (a new job) or "
                          "its checkpoint frequency")
    if latest.state == "stopped":
        # Stopped by a person or by the Dagster run that launched it: this launch is a re-run.
        return replace(resume, reason=f"attempt {latest_attempt} was stopped "
                                      f"({latest.secondary_status}); this re-run resumes it")
    return LaunchPlan("fail", latest_attempt, current,
                      f"attempt {current} failed: {latest.failure_reason or 'no FailureReason given'}")


def merge_attempts(job_name: str, statuses: list[JobStatus]) -> JobStatus:
    """One `JobStatus` for the checkpoint identity from its attempts' statuses, oldest first: the
    newest attempt's state, every attempt's events, and the seconds of all attempts."""
    if not statuses:
        raise TrainingJobNotFound(f"no SageMaker training job for {job_name}")
    latest = statuses[-1]
    billable = [s.billable_seconds for s in statuses if s.billable_seconds is not None]
    training = [s.training_seconds for s in statuses if s.training_seconds is not None]
    total_billable = sum(billable) if billable else None
    total_training = sum(training) if training else None
    saving = latest.spot_saving_pct
    if len(statuses) > 1 and all(s.spot_saving_pct is not None for s in statuses) and total_training:
        saving = round((1 - total_billable / total_training) * 100, 1)
    return replace(
        latest,
        job_name=job_name,
        interruptions=sum(s.interruptions for s in statuses),
        events=tuple(e for s in statuses for e in s.events),
        billable_seconds=total_billable,
        training_seconds=total_training,
        spot_saving_pct=saving,
    )
