"""Training-job status, normalized over the two launchers (SageMaker and the local subprocess).

A sensor or an asset asks one question of either backend: is the job running, done, or ended by
something outside the training code (a spot reclaim, no capacity, the max-wait budget, a killed
process), and should a new attempt resume it? `JobStatus` answers it with SageMaker's vocabulary
(`Interrupted`, `MaxWaitTimeExceeded`, ...) so the metadata reads the same for both.

- SageMaker: `sagemaker_job_status(describe)` reads a `DescribeTrainingJob` response as boto3
  returns it. A spot interruption is an `Interrupted` entry in `SecondaryStatusTransitions`; while
  the job is `InProgress` SageMaker restarts it itself, so an interruption there is an observation,
  not a reason to relaunch.
- Local: the launcher records each attempt in `job.json` in the job's work directory
  (`record_local_launch`, `record_local_exit`) and `local_job_status(job_dir)` reads it back,
  together with the newest complete checkpoint under `checkpoints/`; `list_local_jobs(work_root)`
  names each job's asset partition (`JobRef`).

`job.json` (written only by the launching process, always whole: a temp file renamed into place):

    job_name         the work directory's name
    state            "running" | "completed" | "stopped" | "failed" (the latest attempt)
    attempts         launches so far
    pid              the latest attempt's trainer process
    pid_start_ticks  its start time in clock ticks after boot (/proc/<pid>/stat field 22), so a pid
                     the kernel reused is not taken for the trainer; null without /proc
    launcher_pid     the process that started it (and records its exit)
    started_at       ISO 8601 UTC launch time of the latest attempt
    ended_at         ISO 8601 UTC exit time of the latest attempt, null while running
    returncode       the latest attempt's exit status (negative: killed by that signal), or null
    failure_reason   a failed attempt's exit code and last lines of train.log, else null
    stopped_by       who stopped the latest attempt when it was not an interruption (the launching
                     Dagster run was terminated), else null: such a stop is not resumed automatically
    events           [{status, start_time, message, checkpoint_step?, lost_steps?, lost_seconds?}]
                     every interruption of every attempt, oldest first, with what it cost when the
                     launcher knew; appended, never cleared, so a job resumed to completion still
                     counts them
    asset, partition, stage, run_id
                     what launched the job (the asset key as a user string, its partition, the
                     training stage, the Dagster run of the latest attempt): `list_local_jobs`
                     lists only jobs that name their asset

A local job whose record says "running" but whose process is gone (the Dagster run worker died and
took the trainer with it) reads as stopped with an `Interrupted` event dated at that attempt's launch
(when it died is unknown); the next launch appends that event to `events`, so it is counted once.
"""

from __future__ import annotations

import json
import os
import re
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from srl_platform.checkpoints import STATE_FILE, checkpoint_step, latest_checkpoint

from srl_platform.train import EXIT_PREEMPTED

JOB_FILE = "job.json"
INTERRUPTED = "Interrupted"
MAX_WAIT_EXCEEDED = "MaxWaitTimeExceeded"

# Secondary statuses worth a line in the run log or a sensor observation.
REPORTABLE_STATUSES = frozenset({INTERRUPTED, "Restarting", MAX_WAIT_EXCEEDED, "MaxRuntimeExceeded"})

_SAGEMAKER_STATES = {
    "InProgress": "running",
    "Stopping": "stopping",
    "Completed": "completed",
    "Failed": "failed",
    "Stopped": "stopped",
    "Deleting": "stopped",  # a job being deleted has ended; nothing to resume
}

# SageMaker's FailureReason for a job that never got instances starts with "CapacityError"
# ("Unable to provision requested ML compute capacity..."); EC2's wording is "insufficient capacity".
_CAPACITY_ERROR = re.compile(r"capacityerror|insufficient[ _-]?capacity|unable to provision", re.IGNORECASE)

_FAILURE_LOG_LINES = 5
_FAILURE_REASON_CHARS = 1024  # SageMaker's FailureReason limit; the same bound locally


@dataclass(frozen=True)
class JobEvent:
    """One secondary-status transition worth reporting: a spot interruption, a restart, a max-wait stop."""

    status: str
    """SageMaker's secondary status name ("Interrupted", "MaxWaitTimeExceeded", "Restarting", ...);
    a local job reports only "Interrupted"."""
    start_time: str
    """ISO 8601 UTC, millisecond precision (SageMaker's own)."""
    message: str
    checkpoint_step: int | None = None
    """The newest complete checkpoint's step when it happened (known to a local launcher)."""
    lost_steps: int | None = None
    """Optimizer steps trained after that checkpoint, to be trained again by the resume."""
    lost_seconds: float | None = None
    """Wall clock of the attempt after its newest checkpoint (or after its launch, when it had saved
    none yet): compute paid for and thrown away."""

    def key(self, job_name: str) -> str:
        """Dedup key for a sensor cursor: the same transition gives the same key on every describe."""
        return f"{job_name}|{self.status}|{self.start_time}"

    def as_dict(self) -> dict:
        known = {name: getattr(self, name) for name in _EVENT_COSTS if getattr(self, name) is not None}
        return {"status": self.status, "start_time": self.start_time, "message": self.message, **known}


_EVENT_COSTS = ("checkpoint_step", "lost_steps", "lost_seconds")


@dataclass(frozen=True)
class JobStatus:
    """Where a training job stands, the same fields for both backends."""

    backend: str
    """"sagemaker" | "local"."""
    job_name: str
    state: str
    """"running" | "stopping" | "completed" | "failed" | "stopped"."""
    secondary_status: str | None
    """SageMaker's SecondaryStatus; locally "Training", "Completed", "Failed", "Interrupted" or
    "Stopped" (by its launcher)."""
    interruptions: int
    """Interrupted transitions over the job's life (locally: across all its attempts)."""
    events: tuple[JobEvent, ...]
    """Reportable transitions, oldest first."""
    max_wait_exceeded: bool
    capacity_error: bool
    """The job failed because no instances could be had (FailureReason says so)."""
    resumable: bool
    """The job ended for a reason outside the training code, so a new attempt with the same name
    should run and resume from the newest checkpoint: SageMaker stopped at max wait or failed
    for capacity; a local trainer that checkpointed on SIGTERM (exit 75), or was killed or lost after
    saving a checkpoint (a kill before any checkpoint looks like a crash, e.g. the OOM killer, and
    would only repeat). Never true while the job runs: SageMaker restarts an interrupted spot job
    itself. Not after MaxRuntimeExceeded (a budget to raise first) or a user's stop (SageMaker's
    StopTrainingJob; locally, the launching Dagster run terminated)."""
    billable_seconds: int | None
    training_seconds: int | None
    spot_saving_pct: float | None
    """(1 - billable / training) * 100, for a managed spot job once both are known."""
    last_checkpoint: str | None
    """Local path or S3 URI of the newest complete checkpoint seen."""
    failure_reason: str | None

    def as_metadata(self) -> dict:
        """Flat, JSON-serialisable: Dagster metadata (`None` shows as null) or a sensor log line."""
        return {
            "backend": self.backend,
            "job_name": self.job_name,
            "state": self.state,
            "secondary_status": self.secondary_status,
            "interruptions": self.interruptions,
            "events": [f"{e.start_time} {e.status}: {e.message}" if e.message else f"{e.start_time} {e.status}"
                       for e in self.events],
            "max_wait_exceeded": self.max_wait_exceeded,
            "capacity_error": self.capacity_error,
            "resumable": self.resumable,
            "billable_seconds": self.billable_seconds,
            "training_seconds": self.training_seconds,
            "spot_saving_pct": self.spot_saving_pct,
            "last_checkpoint": self.last_checkpoint,
            "failure_reason": self.failure_reason,
        }


# ---- SageMaker ------------------------------------------------------------------------------------


def sagemaker_job_status(describe: dict, last_checkpoint: str | None = None) -> JobStatus:
    """Normalize a `describe_training_job` response (timestamps as boto3's datetimes or ISO strings).

    `last_checkpoint` is the caller's: the newest checkpoint it found under `CheckpointConfig.S3Uri`.
    """
    name = describe["TrainingJobName"]
    primary = describe["TrainingJobStatus"]
    state = _SAGEMAKER_STATES.get(primary)
    if state is None:
        raise ValueError(f"training job {name}: TrainingJobStatus {primary!r} is not one of "
                         f"{sorted(_SAGEMAKER_STATES)}; update srl_platform.jobs for the new status")
    secondary = describe.get("SecondaryStatus")
    transitions = describe.get("SecondaryStatusTransitions", [])
    events = tuple(
        JobEvent(t["Status"], _iso_utc(t["StartTime"]), t.get("StatusMessage", ""))
        for t in transitions if t["Status"] in REPORTABLE_STATUSES
    )
    failure_reason = describe.get("FailureReason") or None
    max_wait_exceeded = secondary == MAX_WAIT_EXCEEDED or any(e.status == MAX_WAIT_EXCEEDED for e in events)
    capacity_error = bool(failure_reason and _CAPACITY_ERROR.search(failure_reason))
    resumable = (state == "stopped" and max_wait_exceeded) or (state == "failed" and capacity_error)
    billable = describe.get("BillableTimeInSeconds")
    training = describe.get("TrainingTimeInSeconds")
    saving = None
    if describe.get("EnableManagedSpotTraining") and billable is not None and training:
        saving = round((1 - billable / training) * 100, 1)
    return JobStatus(
        backend="sagemaker",
        job_name=name,
        state=state,
        secondary_status=secondary,
        interruptions=sum(t["Status"] == INTERRUPTED for t in transitions),
        events=events,
        max_wait_exceeded=max_wait_exceeded,
        capacity_error=capacity_error,
        resumable=resumable,
        billable_seconds=billable,
        training_seconds=training,
        spot_saving_pct=saving,
        last_checkpoint=last_checkpoint,
        failure_reason=failure_reason,
    )


def _iso_utc(value: datetime | str) -> str:
    """boto3 returns timezone-aware datetimes (tzlocal); a naive one or a bare string is taken as UTC."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


# ---- local ----------------------------------------------------------------------------------------


def record_local_job(job_dir: Path, **fields) -> None:
    """Merge `fields` into `job_dir/job.json`, atomically. `events` given are appended to the stored
    ones (dicts with status, start_time, message), never replacing them."""
    job_dir.mkdir(parents=True, exist_ok=True)
    record = _read_record(job_dir) or {"job_name": job_dir.name, "attempts": 0, "events": []}
    new_events = fields.pop("events", [])
    record.update(fields)
    record["events"] = [*record.get("events", []), *new_events]
    staged = job_dir / f".{JOB_FILE}.{os.getpid()}.tmp"
    staged.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(staged, job_dir / JOB_FILE)


def record_local_launch(job_dir: Path, pid: int) -> None:
    """Record a new attempt's trainer process; call it from the process that started the trainer,
    right after starting it. A previous attempt still marked running whose process is gone is counted
    as interrupted first, so its interruption survives this launch."""
    previous = _read_record(job_dir)
    lost = ([_lost_event(previous).as_dict()]
            if previous and previous.get("state") == "running" and not _alive(previous) else [])
    record_local_job(
        job_dir, state="running", pid=pid, pid_start_ticks=_start_ticks(pid), launcher_pid=os.getpid(),
        started_at=_now(), ended_at=None, returncode=None, failure_reason=None, stopped_by=None,
        attempts=(previous or {}).get("attempts", 0) + 1, events=lost,
    )


def record_local_exit(job_dir: Path, returncode: int, *, trained_step: int | None = None,
                      stopped_by: str | None = None) -> None:
    """Record how the latest attempt ended: 0 completed; 75 (EXIT_PREEMPTED: checkpointed on SIGTERM)
    or killed by a signal: stopped, with an Interrupted event; anything else failed, with the exit
    code and the last lines of train.log as the reason.

    `trained_step`: the last optimizer step the attempt finished (its metrics say), so an
    interruption records the steps it lost. `stopped_by`: the launcher itself stopped the trainer
    (its Dagster run was terminated): stopped, but no interruption and nothing to resume on its own.
    """
    ended_at = _now()
    fields: dict = {"returncode": returncode, "ended_at": ended_at, "failure_reason": None,
                    "stopped_by": stopped_by}
    if returncode == 0:
        fields["state"] = "completed"
    elif stopped_by is not None:
        fields["state"] = "stopped"
    elif returncode == EXIT_PREEMPTED or returncode < 0:
        checkpoint = _latest_checkpoint(job_dir)
        where = f"newest checkpoint {checkpoint}" if checkpoint else "no checkpoint yet"
        what = (f"SIGTERM: the trainer stopped cleanly and exited {EXIT_PREEMPTED} (EXIT_PREEMPTED)"
                if returncode == EXIT_PREEMPTED else f"killed by {_signal_name(-returncode)}")
        fields["state"] = "stopped"
        fields["events"] = [JobEvent(INTERRUPTED, ended_at, f"{what}; {where}",
                                     **_interruption_cost(job_dir, checkpoint, ended_at,
                                                          trained_step)).as_dict()]
    else:
        fields["state"] = "failed"
        tail = _log_tail(job_dir / "train.log")
        reason = f"exit code {returncode}: {tail}" if tail else f"exit code {returncode} (train.log is empty)"
        fields["failure_reason"] = reason[-_FAILURE_REASON_CHARS:]
    record_local_job(job_dir, **fields)


def local_job_status(job_dir: Path) -> JobStatus:
    """Read a local job's `job.json`; a "running" record whose process is gone reads as stopped."""
    record = _read_record(job_dir)
    if record is None:
        raise FileNotFoundError(f"no {job_dir / JOB_FILE}: the job was never launched by a backend "
                                "that records it (LocalTrainingBackend writes it at launch)")
    events = [JobEvent(e["status"], e["start_time"], e.get("message", ""),
                       **{name: e.get(name) for name in _EVENT_COSTS})
              for e in record.get("events", [])]
    state = record["state"]
    if state == "running" and not _alive(record):
        state = "stopped"
        events.append(_lost_event(record))
    checkpoint = _latest_checkpoint(job_dir)
    stopped_by = record.get("stopped_by") if state == "stopped" else None
    resumable = state == "stopped" and not stopped_by and (
        record.get("returncode") == EXIT_PREEMPTED or checkpoint is not None)
    return JobStatus(
        backend="local",
        job_name=record.get("job_name", job_dir.name),
        state=state,
        secondary_status=("Stopped" if stopped_by else
                          {"running": "Training", "completed": "Completed", "failed": "Failed",
                           "stopped": INTERRUPTED}[state]),
        interruptions=sum(e.status == INTERRUPTED for e in events),
        events=tuple(events),
        max_wait_exceeded=False,
        capacity_error=False,
        resumable=resumable,
        billable_seconds=None,
        training_seconds=None,
        spot_saving_pct=None,
        last_checkpoint=str(checkpoint) if checkpoint else None,
        failure_reason=record.get("failure_reason") if state == "failed" else None,
    )


@dataclass(frozen=True)
class JobRef:
    """A training job and the asset partition it trains: what a sensor needs to observe an
    interruption on the right asset and to request the run that resumes it."""

    job_name: str
    asset: str
    """The asset key as a user string (`srl_checkpoint`; a multi-part key `a/b`)."""
    partition: str | None
    run_id: str | None
    """The Dagster run of the job's latest attempt: its run config is the resume's."""


def list_local_jobs(work_root: Path) -> list[JobRef]:
    """The jobs under `work_root/*/job.json` that an asset launched, by job name. A directory whose
    record names no asset (launched outside Dagster) is skipped: there is no asset to report on."""
    refs = []
    for path in sorted(Path(work_root).glob(f"*/{JOB_FILE}")):
        record = _read_record(path.parent)
        if record and record.get("asset"):
            refs.append(JobRef(job_name=record.get("job_name", path.parent.name), asset=record["asset"],
                               partition=record.get("partition"), run_id=record.get("run_id")))
    return refs


def _read_record(job_dir: Path) -> dict | None:
    path = job_dir / JOB_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _latest_checkpoint(job_dir: Path) -> Path | None:
    return latest_checkpoint(job_dir / "checkpoints")


def _interruption_cost(job_dir: Path, checkpoint: Path | None, ended_at: str,
                       trained_step: int | None) -> dict:
    """What an interruption at `ended_at` threw away: the steps after the newest checkpoint and the
    wall clock since that checkpoint was saved (or since this attempt's launch, if later)."""
    saved_step = checkpoint_step(checkpoint) if checkpoint else 0
    record = _read_record(job_dir) or {}
    since = [datetime.fromisoformat(record["started_at"]).timestamp()] if record.get("started_at") else []
    if checkpoint:
        saved_at = json.loads((checkpoint / STATE_FILE).read_text()).get("saved_at")
        since += [saved_at] if isinstance(saved_at, int | float) else []
    return {
        "checkpoint_step": saved_step if checkpoint else None,
        "lost_steps": max(0, trained_step - saved_step) if trained_step is not None else None,
        "lost_seconds": (round(datetime.fromisoformat(ended_at).timestamp() - max(since), 3)
                         if since else None),
    }


def _lost_event(record: dict) -> JobEvent:
    """The interruption of an attempt whose process vanished without an exit record. When it died is
    unknown; its launch time stands in, so the event, and its key, is the same on every read and
    when the next launch stores it."""
    return JobEvent(INTERRUPTED, record["started_at"],
                    f"trainer pid {record.get('pid')} is gone and no exit was recorded (its launching "
                    "run died with it)")


def _alive(record: dict) -> bool:
    """Whether the recorded trainer process still runs.

    `os.kill(pid, 0)` sends nothing: ESRCH (ProcessLookupError) means no such process; EPERM means
    one exists under another user. The kernel reuses pids, so where /proc is readable the process's
    start time (field 22 of /proc/<pid>/stat) must match the one recorded at launch; without /proc a
    reused pid reads as alive. A zombie (exited, not yet reaped) still counts while its parent is the
    launcher that recorded it: that launcher is alive and records the exit as soon as it reaps it.
    A zombie left to an orphan reaper that never reaps (PID 1 in some containers) counts as gone.
    """
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, parent, start_ticks = stat
    recorded = record.get("pid_start_ticks")
    if recorded is not None and start_ticks != recorded:
        return False
    return state != "Z" or parent == record.get("launcher_pid")


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state letter, parent pid, start time in clock ticks after boot) from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the last.
    rest = text[text.rindex(")") + 2:].split()  # rest[0] is field 3
    return rest[0], int(rest[1]), int(rest[19])  # fields 3 (state), 4 (ppid), 22 (starttime)


def _start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[2] if stat else None


def _log_tail(log: Path) -> str:
    if not log.is_file():
        return ""
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - 16384))
        lines = [line for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return "\n".join(lines[-_FAILURE_LOG_LINES:])


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _now() -> str:
    return _iso_utc(datetime.now(UTC))
