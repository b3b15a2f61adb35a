"""`spot_interruption_sensor`: an interrupted training job becomes an observation on its tier's
checkpoint asset and, once the job has ended, one run that resumes it from its last checkpoint.

Each tick asks the training backend for the jobs training assets launched (`list_jobs`) and where
each stands (`job_status`: the same `JobStatus` for a local subprocess and a SageMaker job):

- every reportable event not yet in the cursor (`Interrupted`: a spot reclaim or a killed trainer;
  `MaxWaitTimeExceeded`; SageMaker's `Restarting`) is recorded as an `AssetObservation` on the job's
  asset partition: the event, the interruptions so far, the newest checkpoint and, where the backend
  knows them, the steps and seconds trained since it (lost) and the spot saving;
- a job that has ended `resumable` (interrupted after a checkpoint, stopped at max wait, failed
  for capacity) gets a `RunRequest` for its asset partition with the launching run's config, so the
  asset computes the same job name and the trainer resumes from the newest checkpoint. Its `run_key`
  names the stop it answers: one interruption, one resumed run. A job still running is only
  observed (SageMaker restarts an interrupted managed-spot job itself).

No request, and the observation says why, when: the launching run will be retried by Dagster's run
retries (`dagster.yaml` `run_retries`: that retry resumes the job, and a second resume would only
collide with it); another run has since planned the same partition (someone re-ran it); or the
launching run is not on this instance (its config is unknown, and the defaults would start another
job from scratch). While the launching run is still finishing, the decision waits for a later tick.

The cursor maps each listed job to the event keys and run keys already handled; a job the backend
no longer lists is forgotten, so the cursor is as small as that list.
"""

from __future__ import annotations

import hashlib
import json
import re

from dagster import (
    AssetKey,
    AssetObservation,
    AssetSelection,
    DagsterInstance,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from assets.training import rlvr_checkpoint, srl_checkpoint
from resources.training import TrainingBackend
from srl_platform.jobs import INTERRUPTED, JobEvent, JobRef, JobStatus

RESUMABLE_ASSETS = (srl_checkpoint.key, rlvr_checkpoint.key)
ENDED = frozenset({"stopped", "failed"})
RESUME_OF_TAG = "srl/resume_of"
WILL_RETRY_TAG = "dagster/will_retry"  # set on a failed run that Dagster's run retries will re-run
_CHECKPOINT_STEP = re.compile(r"checkpoint-(\d+)/?$")


@sensor(
    name="spot_interruption_sensor",
    minimum_interval_seconds=30,
    target=AssetSelection.assets(*RESUMABLE_ASSETS),
    default_status=DefaultSensorStatus.STOPPED,
    description="Watches the training jobs that srl_checkpoint and rlvr_checkpoint launched (local "
                "subprocess or SageMaker): records each spot interruption, killed trainer or "
                "max-wait stop as an observation on the tier's checkpoint asset (lost steps and "
                "seconds, spot saving), and requests one run per interruption that resumes an "
                "ended job from its last checkpoint.",
)
def spot_interruption_sensor(context: SensorEvaluationContext, training_backend: TrainingBackend):
    handled: dict[str, list[str]] = json.loads(context.cursor) if context.cursor else {}
    cursor: dict[str, list[str]] = {}
    observations: list[AssetObservation] = []
    requests: list[RunRequest] = []
    for ref in training_backend.list_jobs():
        status = training_backend.job_status(ref.job_name)
        done = set(handled.get(ref.job_name, []))
        asset_key = AssetKey.from_user_string(ref.asset)
        run_key, resume_note = resume_run_key(status), None
        if status.state in ENDED and status.resumable and run_key not in done:
            request, resume_note = _resume(context.instance, ref, asset_key, status)
            if request is not None:
                requests.append(request)
            if resume_note is not None:  # decided; None: wait for the launching run to finish
                done.add(run_key)
                context.log.info(f"{ref.job_name}: {resume_note}")
        interrupted = 0
        for index, event in enumerate(status.events):
            interrupted += event.status == INTERRUPTED
            if event.key(ref.job_name) in done:
                continue
            done.add(event.key(ref.job_name))
            newest = index == len(status.events) - 1
            observations.append(AssetObservation(
                asset_key=asset_key, partition=ref.partition,
                description=f"{event.status} of training job {ref.job_name}",
                metadata=_event_metadata(ref, status, event, interrupted, newest,
                                         resume_note if newest else None)))
        cursor[ref.job_name] = sorted(done)
    new_cursor = json.dumps(cursor, sort_keys=True)
    if not observations and not requests:
        return SensorResult(skip_reason=f"no new interruption among {len(cursor)} training jobs",
                            cursor=new_cursor)
    return SensorResult(run_requests=requests, asset_events=observations, cursor=new_cursor)


def resume_run_key(status: JobStatus) -> str:
    """The run key of the resume that answers the job's latest stop: its newest event (each
    interruption has its own), or for a stop without one its state and failure reason."""
    basis = (status.events[-1].key(status.job_name) if status.events
             else f"{status.job_name}|{status.state}|{status.failure_reason}")
    return f"resume-{status.job_name}-{hashlib.sha256(basis.encode()).hexdigest()[:12]}"


def _resume(instance: DagsterInstance, ref: JobRef, asset_key: AssetKey,
            status: JobStatus) -> tuple[RunRequest | None, str | None]:
    """(the run request or None, what was decided); (None, None) while the launching run is not
    finished, since whether run retries will re-run it is only known then."""
    what = f"{ref.asset}[{ref.partition}]" if ref.partition else ref.asset
    if asset_key not in RESUMABLE_ASSETS:
        return None, f"not requested: {ref.asset} is not a target of spot_interruption_sensor"
    run = instance.get_run_by_id(ref.run_id) if ref.run_id else None
    if run is None:
        return None, (f"not requested: the launching run {ref.run_id} is not on this instance, so "
                      f"its run config is unknown; re-run {what} with the original config to resume")
    if not run.is_finished:
        return None, None
    if run.tags.get(WILL_RETRY_TAG) == "true":
        return None, (f"not requested: Dagster's run retries will re-run {run.run_id}, which "
                      "resumes the job")
    planned = instance.get_latest_planned_materialization_info(asset_key, ref.partition)
    if planned is not None and planned.run_id != run.run_id:
        return None, f"not requested: run {planned.run_id} has since been launched for {what}"
    op_name = asset_key.to_python_identifier()
    run_config = {}
    if op_name in run.run_config.get("ops", {}):
        run_config["ops"] = {op_name: run.run_config["ops"][op_name]}
    if "resources" in run.run_config:
        run_config["resources"] = run.run_config["resources"]
    tags = {RESUME_OF_TAG: ref.job_name, "srl/interrupted_run": run.run_id}
    if status.events:
        tags["srl/interrupted_at"] = status.events[-1].start_time
    request = RunRequest(run_key=resume_run_key(status), asset_selection=[asset_key],
                         partition_key=ref.partition, run_config=run_config, tags=tags)
    return request, f"requested: run key {request.run_key} resumes {what} from {status.last_checkpoint}"


def _event_metadata(ref: JobRef, status: JobStatus, event: JobEvent, interruptions: int,
                    newest: bool, resume_note: str | None) -> dict:
    metadata = {
        "training_job": MetadataValue.text(ref.job_name),
        "backend": MetadataValue.text(status.backend),
        "event": MetadataValue.text(event.status),
        "event_time": MetadataValue.text(event.start_time),
        "message": MetadataValue.text(event.message),
        "job_state": MetadataValue.text(status.state),
        "interruptions": MetadataValue.int(interruptions),
    }
    step = event.checkpoint_step
    if newest and status.last_checkpoint:
        metadata["last_checkpoint"] = MetadataValue.path(status.last_checkpoint)
        if step is None and (match := _CHECKPOINT_STEP.search(status.last_checkpoint)):
            step = int(match.group(1))
    if step is not None:
        metadata["checkpoint_step"] = MetadataValue.int(step)
    if event.lost_steps is not None:
        metadata["lost_steps"] = MetadataValue.int(event.lost_steps)
    if event.lost_seconds is not None:
        metadata["lost_seconds"] = MetadataValue.float(float(event.lost_seconds))
    if status.spot_saving_pct is not None:
        metadata["spot_saving_pct"] = MetadataValue.float(status.spot_saving_pct)
    if resume_note is not None:
        metadata["resume"] = MetadataValue.text(resume_note)
    return metadata
