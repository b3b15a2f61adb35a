"""`TrainingBackend`: where `python -m srl_platform.train` runs for a training asset.

One interface with a local variant (the embedded default: a subprocess on this machine, launched
through Dagster Pipes) and, later, a SageMaker one (same entrypoint in a training container):

- `run_training(context, request) -> TrainingOutcome`: an asset says *what* to train (stage, tier,
  data file, adapter to continue from, CLI overrides) and a deterministic job name; the backend
  decides where inputs, checkpoints and outputs live, so a re-run of the same job finds its
  checkpoints and resumes instead of starting over.
- `list_jobs()` and `job_status(job_name)`: the jobs training assets launched and where each
  stands, normalized (`srl_platform.jobs.JobStatus`), for `spot_interruption_sensor`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    Failure,
    MetadataValue,
    PipesTempFileContextInjector,
    PipesTempFileMessageReader,
    open_pipes_session,
)
from pydantic import Field

from srl_platform.checkpoints import checkpoint_step, latest_checkpoint
from srl_platform.config import Stage
from srl_platform.jobs import (
    JobRef,
    JobStatus,
    list_local_jobs,
    local_job_status,
    record_local_exit,
    record_local_job,
    record_local_launch,
)


@dataclass(frozen=True)
class TrainingRequest:
    """One training job, as an asset asks for it."""

    job_name: str
    """Deterministic per (asset, tier, inputs, config): the checkpoint identity. The same name means
    the same plan, so a re-run resumes; SageMaker uses it as the training job name (≤ 63 chars)."""
    stage: Stage
    tier: str
    data_file: Path
    """Local JSONL/Parquet file: SRL step instances (srl) or RLVR problems / traces (rlvr)."""
    init_from: Path | None = None
    """Local adapter directory to continue from (RLVR continues the SRL adapter)."""
    teacher: Path | None = None
    """Local adapter directory of the teacher (stage `distill`)."""
    args: tuple[str, ...] = ()
    """Extra `srl_platform.train` flags (`--max-steps 2`, `--base-model DIR`, ...)."""


@dataclass(frozen=True)
class TrainingOutcome:
    """A finished job: the adapter on local disk and what the trainer reported."""

    job_name: str
    adapter_dir: Path
    """adapter_model.safetensors, adapter_config.json, training_summary.json, metrics.jsonl."""
    summary: dict
    """`training_summary.json` (global_step, reward_curve, drop_rate, resumed_from, ...)."""
    metrics: list[dict]
    """Every optimizer step's metrics row of the job, across resumes (`metrics.jsonl`)."""
    metrics_streamed: int
    """Optimizer steps whose metrics reached the run live through Dagster Pipes in this launch
    (a resumed launch streams only the steps it trained)."""
    wall_seconds: float
    log_tail: str
    checkpoint_dir: str


def training_job_name(asset_name: str, tier: str, fingerprint: str) -> str:
    """`srl-checkpoint-gold-<fingerprint>`: valid as a directory name and a SageMaker job name."""
    name = f"{asset_name.replace('_', '-')}-{tier}-{fingerprint}"
    if len(name) > 63:
        raise ValueError(f"training job name {name!r} is {len(name)} characters; SageMaker allows 63")
    return name


class TrainingBackend(ConfigurableResource, ABC):
    """Runs `python -m srl_platform.train` for a training asset and reports what it produced."""

    @abstractmethod
    def run_training(self, context: AssetExecutionContext, request: TrainingRequest) -> TrainingOutcome:
        """Train to the planned `max_steps` and return the adapter, or raise `dagster.Failure`
        saying what went wrong (a preempted job: that its checkpoint is saved and a re-run resumes).
        Records the job's asset key, partition and Dagster run so `list_jobs` can name them."""

    @abstractmethod
    def list_jobs(self) -> list[JobRef]:
        """Every job `run_training` launched that this backend still knows of, with the asset
        partition it trains and the run that launched its latest attempt."""

    @abstractmethod
    def job_status(self, job_name: str) -> JobStatus:
        """Where the job stands now: its state, every interruption so far, whether a new attempt
        should resume it. Raises `FileNotFoundError` / the backend's not-found error for an
        unknown job."""


class LocalTrainingBackend(TrainingBackend):
    """Trains in a subprocess on this machine (the embedded default), through Dagster Pipes: the
    trainer's per-step log lines and metrics stream into the run as they happen.

    Each job gets `work_root/<job_name>/` with its staged inputs, `checkpoints/`, `output/` (the
    adapter) and `train.log`. Checkpoints are kept after success, so materializing the same job
    again resumes at its last step, trains nothing and yields the same adapter bytes.
    """

    work_root: str = Field(
        default=".state/work",
        description="Directory holding one work directory per training job (inputs, checkpoints, "
                    "output, train.log). Must persist between runs for preempted jobs to resume.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment for the trainer (e.g. SRL_HOME, OMP_NUM_THREADS).",
    )
    termination_timeout_seconds: float = Field(
        default=120.0,
        description="When the Dagster run is terminated, how long the trainer gets after SIGTERM to "
                    "finish its optimizer step and checkpoint before it is killed.",
    )
    log_tail_lines: int = Field(default=40, description="Trainer output lines kept for errors.")

    def job_dir(self, job_name: str) -> Path:
        return Path(self.work_root).expanduser().resolve() / job_name

    def list_jobs(self) -> list[JobRef]:
        """The work directories whose `job.json` names the asset that launched them."""
        return list_local_jobs(Path(self.work_root).expanduser().resolve())

    def job_status(self, job_name: str) -> JobStatus:
        return local_job_status(self.job_dir(job_name))

    def run_training(self, context: AssetExecutionContext, request: TrainingRequest) -> TrainingOutcome:
        from srl_platform.train import EXIT_PREEMPTED

        job = self.job_dir(request.job_name)
        inputs, checkpoints, output = job / "inputs", job / "checkpoints", job / "output"
        # Inputs are staged at fixed paths: the trainer's resume check compares the plan, and the
        # plan names the init-from directory.
        data_file = _stage_file(request.data_file, inputs / f"data{request.data_file.suffix}")
        command = [sys.executable, "-m", "srl_platform.train", "--stage", request.stage,
                   "--tier", request.tier, "--data", str(data_file), "--output-dir", str(output),
                   "--checkpoint-dir", str(checkpoints)]
        if request.init_from is not None:
            command += ["--init-from", str(_stage_dir(request.init_from, inputs / "init_from"))]
        if request.teacher is not None:
            command += ["--teacher", str(_stage_dir(request.teacher, inputs / "teacher"))]
        command += list(request.args)

        context.log.info(f"training job {request.job_name} in {job}: {' '.join(command[1:])}")
        started = time.monotonic()
        identity = {"asset": context.asset_key.to_user_string(),
                    "partition": context.partition_key if context.has_partition_key else None,
                    "stage": request.stage, "run_id": context.run.run_id}
        returncode, tail, messages = _launch(
            context, command, {**self.env, "PYTHONUNBUFFERED": "1"}, job, identity,
            self.log_tail_lines, self.termination_timeout_seconds)
        wall_seconds = time.monotonic() - started
        # Optimizer-step rows (the trainer's closing row of runtime totals has no loss).
        streamed = [m for m in messages
                    if isinstance(m, dict) and m.get("kind") == "metrics" and "loss" in m]

        failure_metadata = {
            "job_name": request.job_name,
            "work_dir": MetadataValue.path(str(job)),
            "train_log": MetadataValue.path(str(job / "train.log")),
            "log_tail": MetadataValue.md(f"```\n{tail}\n```"),
        }
        if returncode == EXIT_PREEMPTED:
            saved = latest_checkpoint(checkpoints)
            where = (f"at step {checkpoint_step(saved)}: its checkpoint was saved at {saved}. "
                     "Re-run this partition with the same inputs and config to resume from that "
                     "checkpoint (spot_interruption_sensor requests that run when it is on); no "
                     "completed optimizer step is lost." if saved else
                     f"before its first checkpoint (none under {checkpoints}): a re-run starts over.")
            # No step retry: a SIGTERM from outside Dagster means someone is stopping the trainer
            # or the machine; the next run (a run retry, or by hand) resumes.
            raise Failure(
                description=f"training job {request.job_name} was preempted (SIGTERM, exit "
                            f"{EXIT_PREEMPTED}) {where}",
                metadata={**failure_metadata, "checkpoint": MetadataValue.path(str(saved or "none"))},
                allow_retries=False,
            )
        if returncode < 0 and local_job_status(job).resumable:
            saved = latest_checkpoint(checkpoints)
            # An interruption, like a spot reclaim: no step retry, so that one interruption gives
            # one resumed run, the one spot_interruption_sensor requests (or a re-run by hand).
            raise Failure(
                description=f"training job {request.job_name} was killed by signal {-returncode} "
                            f"after saving {saved}: spot_interruption_sensor requests the run "
                            "that resumes it, or re-run this partition with the same inputs and "
                            "config; optimizer steps after that checkpoint are trained again.",
                metadata={**failure_metadata, "checkpoint": MetadataValue.path(str(saved))},
                allow_retries=False,
            )
        if returncode != 0:
            what = (f"was killed by signal {-returncode}" if returncode < 0
                    else "rejected its input (exit 2)" if returncode == 2
                    else f"exited with code {returncode}")
            last = tail.strip().splitlines()[-1] if tail.strip() else "(no output)"
            raise Failure(
                description=f"training job {request.job_name} {what}: {last}. Full log: "
                            f"{job / 'train.log'}",
                metadata=failure_metadata,
                allow_retries=returncode != 2,
            )
        summary_path = output / "training_summary.json"
        if not summary_path.is_file():
            raise Failure(description=f"training job {request.job_name} exited 0 but wrote no "
                                      f"{summary_path}; see {job / 'train.log'}",
                          metadata=failure_metadata)
        metrics_path = output / "metrics.jsonl"
        metrics = ([json.loads(line) for line in metrics_path.read_text().splitlines() if line]
                   if metrics_path.is_file() else [])
        return TrainingOutcome(
            job_name=request.job_name,
            adapter_dir=output,
            summary=json.loads(summary_path.read_text()),
            metrics=metrics,
            metrics_streamed=len(streamed),
            wall_seconds=round(wall_seconds, 2),
            log_tail=tail,
            checkpoint_dir=str(checkpoints),
        )


def _stage_file(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
    return target


def _stage_dir(source: Path, target: Path) -> Path:
    if source.resolve() != target.resolve():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    return target


def _launch(context: AssetExecutionContext, command: list[str], env: dict[str, str], job: Path,
            identity: dict, tail_lines: int, termination_timeout: float) -> tuple[int, str, list]:
    """Run `command` in a Pipes session; (exit code, last output lines, Pipes custom messages).
    The attempt is recorded in `job/job.json` (`srl_platform.jobs`): its launch with `identity`
    (asset, partition, stage, run id), then how it ended.

    Not `PipesSubprocessClient.run`: that forwards run termination as SIGINT, which the trainer
    does not turn into a checkpoint (SIGTERM does); it hides the exit code inside an exception
    message, and it cannot keep a tail of the output for error messages.
    """
    job.mkdir(parents=True, exist_ok=True)
    # A lock the trainer inherits: held while any trainer of this job is alive, even one whose
    # launching run died, so two trainers never write the same checkpoint directory.
    lock = open(job / "train.lock", "w")  # noqa: SIM115 (closed in finally)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid_file = job / "train.pid"
            pid = pid_file.read_text().strip() if pid_file.is_file() else "unknown"
            raise Failure(
                description=f"training job {job.name} is already running (pid {pid}): wait for it "
                            f"to finish, or stop it with `kill -TERM {pid}` (it checkpoints) and "
                            "re-run to resume.",
                allow_retries=False,
            ) from None
        tail: deque[str] = deque(maxlen=tail_lines)
        with open_pipes_session(context=context, context_injector=PipesTempFileContextInjector(),
                                message_reader=PipesTempFileMessageReader()) as session:
            process = subprocess.Popen(
                command, env={**os.environ, **env, **session.get_bootstrap_env_vars()},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                # Own session: a Ctrl-C meant for Dagster reaches the trainer only as our SIGTERM.
                start_new_session=True, pass_fds=(lock.fileno(),),
            )
            (job / "train.pid").write_text(f"{process.pid}\n")
            record_local_launch(job, process.pid)
            record_local_job(job, **identity)
            pump = threading.Thread(target=_pump, args=(process.stdout, job / "train.log", tail),
                                    daemon=True)
            pump.start()
            try:
                process.wait()
                record_local_exit(job, process.returncode, trained_step=_last_step(job / "output"))
            except BaseException:  # run terminated (DagsterExecutionInterruptedError) or Ctrl-C
                _stop(context, process, termination_timeout)
                if process.returncode is not None:
                    # Stopped on purpose, not interrupted: the sensor leaves it; a re-run resumes it.
                    record_local_exit(job, process.returncode, trained_step=_last_step(job / "output"),
                                      stopped_by="the launching Dagster run was interrupted "
                                                 "(terminated or Ctrl-C)")
                raise
            finally:
                pump.join(timeout=10)
                (job / "train.pid").unlink(missing_ok=True)
        return process.returncode, "".join(tail), list(session.get_custom_messages())
    finally:
        lock.close()


def _last_step(output: Path) -> int | None:
    """The last optimizer step in the trainer's `metrics.jsonl` (rows with a loss), if any."""
    path = output / "metrics.jsonl"
    if not path.is_file():
        return None
    steps = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a row torn by the kill
            continue
        if "loss" in row:
            steps.append(row["step"])
    return max(steps, default=None)


def _pump(stream: IO[str], log_path: Path, tail: deque[str]) -> None:
    """Copy the trainer's output to our stdout (Dagster's compute log), train.log and the tail."""
    with open(log_path, "a", encoding="utf-8") as log:
        for line in stream:
            sys.stdout.write(line)
            log.write(line)
            log.flush()
            tail.append(line)
    sys.stdout.flush()


def _stop(context: AssetExecutionContext, process: subprocess.Popen, timeout: float) -> None:
    if process.poll() is not None:
        return
    context.log.info(f"run interrupted: SIGTERM to trainer pid {process.pid} so it checkpoints "
                     f"(up to {timeout:g}s); re-running the partition resumes from that checkpoint")
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
