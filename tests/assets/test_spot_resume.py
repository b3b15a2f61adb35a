"""The spot-interruption loop end to end on the local backend: a Dagster run of `srl_checkpoint`
for gold loses its trainer to SIGKILL, `spot_interruption_sensor` requests the resume, and the
resumed run trains only the steps after the last checkpoint (the tiny model, ~0.5 s per optimizer
step, a checkpoint every ~0.6 s of wall clock)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from dagster import DagsterInstance, Definitions, build_sensor_context, materialize

from assets.training import rlvr_checkpoint, srl_checkpoint
from resources.monitoring import MonitoringResource
from resources.storage import ArtifactStore
from resources.training import LocalTrainingBackend
from sensors.spot import spot_interruption_sensor
from srl_platform.checkpoints import checkpoint_step, latest_checkpoint
from srl_platform.jobs import JOB_FILE, local_job_status

MAX_STEPS = 6
KILL_AFTER_CHECKPOINT = 2  # SIGKILL once a checkpoint of at least this step is complete


def test_a_killed_trainer_is_resumed_by_the_sensor_without_redoing_checkpointed_steps(
        tmp_path, tiny_training, seeded_store):
    store_root, work_root = tmp_path / "artifacts", tmp_path / "work"
    seeded_store(store_root)
    resources = {"store": ArtifactStore(root=str(store_root)), "monitoring": MonitoringResource(),
                 "training_backend": LocalTrainingBackend(work_root=str(work_root))}
    defs = Definitions(assets=[srl_checkpoint, rlvr_checkpoint], sensors=[spot_interruption_sensor],
                       resources=resources)
    # About every other step is checkpointed, so the kill usually lands between checkpoints.
    config = {**tiny_training, "max_steps": MAX_STEPS, "checkpoint_interval_minutes": 0.01}
    killed: list[int] = []
    killer = threading.Thread(target=_sigkill_between_checkpoints, args=(work_root, killed),
                              daemon=True)

    (tmp_path / "dagster-home").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster-home")) as instance:
        killer.start()
        interrupted = materialize([srl_checkpoint, rlvr_checkpoint], selection=[srl_checkpoint],
                                  partition_key="gold", instance=instance, resources=resources,
                                  run_config={"ops": {"srl_checkpoint": {"config": config}}},
                                  raise_on_error=False)
        killer.join(timeout=5)

        assert killed, f"the trainer never saved checkpoint-{KILL_AFTER_CHECKPOINT}"
        assert not interrupted.success
        (failure,) = interrupted.get_step_failure_events()
        message = failure.step_failure_data.user_failure_data.description
        assert f"was killed by signal {signal.SIGKILL}" in message
        assert "spot_interruption_sensor requests the run that resumes it" in message
        assert interrupted.retry_attempts_for_node("srl_checkpoint") == 0  # the sensor resumes, once
        (job,) = work_root.iterdir()
        status = local_job_status(job)
        assert (status.state, status.resumable, status.interruptions) == ("stopped", True, 1)
        (event,) = status.events
        saved = event.checkpoint_step  # the newest complete checkpoint when the trainer died
        assert saved >= KILL_AFTER_CHECKPOINT
        assert saved == checkpoint_step(latest_checkpoint(job / "checkpoints"))
        trained = _trained_steps(job / "output" / "metrics.jsonl")
        assert trained == list(range(1, len(trained) + 1))
        assert event.lost_steps == len(trained) - saved  # trained after the checkpoint: done again

        with build_sensor_context(instance=instance, definitions=defs, resources=resources) as context:
            tick = spot_interruption_sensor.evaluate_tick(context)
        (observation,) = tick.asset_events
        assert (observation.asset_key, observation.partition) == (srl_checkpoint.key, "gold")
        assert observation.metadata["checkpoint_step"].value == saved
        (request,) = tick.run_requests
        assert request.asset_selection == [srl_checkpoint.key] and request.partition_key == "gold"

        resumed = materialize([srl_checkpoint, rlvr_checkpoint], selection=request.asset_selection,
                              partition_key=request.partition_key, run_config=request.run_config,
                              tags=request.tags, instance=instance, resources=resources)

        assert resumed.success
        (materialization,) = resumed.asset_materializations_for_node("srl_checkpoint")
        meta = {key: value.value for key, value in materialization.metadata.items()}
        assert meta["training_job"] == job.name  # the same job, found by the same run config
        assert meta["resumed_from"] == str(job / "checkpoints" / f"checkpoint-{saved}")
        assert meta["global_step"] == MAX_STEPS
        assert meta["metrics_streamed"] == MAX_STEPS - saved  # no checkpointed step trained again
        adapter = Path(meta["adapter_uri"].removeprefix("file://"))
        assert _trained_steps(adapter / "metrics.jsonl") == list(range(1, MAX_STEPS + 1))  # each once
        assert json.loads((job / JOB_FILE).read_text())["attempts"] == 2

        with build_sensor_context(instance=instance, definitions=defs, resources=resources,
                                  cursor=tick.cursor) as context:
            after = spot_interruption_sensor.evaluate_tick(context)
        assert not after.asset_events and not after.run_requests


def _trained_steps(metrics: Path) -> list[int]:
    """Optimizer steps in a metrics file (a row being written as it is read is left out)."""
    steps = []
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in row:
            steps.append(row["step"])
    return steps


def _sigkill_between_checkpoints(work_root: Path, killed: list[int]) -> None:
    """SIGKILL the trainer (the pid in job.json) once it has a complete checkpoint of step
    KILL_AFTER_CHECKPOINT or later and has trained a step past it; on a machine so slow that every
    step gets its checkpoint, at step MAX_STEPS - 1 with nothing lost."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for record in work_root.glob(f"*/{JOB_FILE}"):
            newest = latest_checkpoint(record.parent / "checkpoints")
            metrics = record.parent / "output" / "metrics.jsonl"
            trained = len(_trained_steps(metrics)) if metrics.is_file() else 0
            saved = checkpoint_step(newest) if newest else 0
            if saved >= KILL_AFTER_CHECKPOINT and (trained > saved or trained >= MAX_STEPS - 1):
                pid = json.loads(record.read_text())["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.02)
