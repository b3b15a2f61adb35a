"""What every trainer of the platform shares: SIGTERM and wall-clock checkpoints, atomic and rank-aware
saves, and the metrics record. `SRLGRPOTrainer` (SRL, RLVR) and the distillation trainers mix
`AtomicCheckpoints` in at Hugging Face's `_save_checkpoint` hook, so `srl train` checkpoints, stops
and resumes the same way whatever it trains.

Saves are atomic: the Hugging Face checkpoint (adapter, optimizer, scheduler, RNG, trainer state) is
written into a staging directory and renamed into place, so a kill during a save never leaves a
checkpoint that a resume would load.

Under torchrun (the multi-node bronze tier) every node has its own checkpoint directory, and
SageMaker syncs all of them to one S3 prefix, so no two ranks may write a file of the same name:
global rank 0 writes the adapter, optimizer, trainer state and `srl_state.json`, every rank its own
`rng_state_<rank>.pth`; each node's local rank 0 renames its staging directory once every rank has
written. The decisions to save and to stop are agreed across ranks, so all save the same step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from srl_platform.checkpoints import (
    CHECKPOINT_PREFIX,
    STAGING_DIR,
    STATE_FILE,
    checkpoint_dirs,
    complete_checkpoints,
)


class StopRequest:
    """Set by SIGTERM (SageMaker spot reclaim, `docker stop`, Dagster run termination).

    The first SIGTERM asks training to finish the current optimizer step, checkpoint and exit; the
    handler then restores the default action, so a second SIGTERM kills at once. Under torchrun the
    agent forwards its SIGTERM to every worker and kills them when `TORCH_ELASTIC_SHUTDOWN_TIMEOUT`
    runs out; the ranks agree on the step to stop at (`CheckpointPolicy`).
    """

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.event.set()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    @property
    def requested(self) -> bool:
        return self.event.is_set()


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def max_over_ranks(value: int, device) -> int:
    """The largest `value` of all ranks (`value` itself when not distributed)."""
    if not _distributed():
        return value
    tensor = torch.tensor([value], device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return int(tensor.item())


def agreed(flag: bool, device) -> bool:
    """True on every rank when any rank has `flag`, so all ranks save or stop at the same step
    (each rank's SIGTERM and wall clock arrive a little apart)."""
    return bool(max_over_ranks(int(flag), device))


def barrier() -> None:
    if _distributed():
        torch.distributed.barrier()


class CheckpointPolicy(TrainerCallback):
    """Asks the trainer to save every `interval_minutes` of wall clock, on SIGTERM and at the end."""

    def __init__(self, interval_minutes: float, stop: StopRequest) -> None:
        self.interval_s = interval_minutes * 60.0
        self.stop = stop
        self.last_save = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        due = agreed(time.monotonic() - self.last_save >= self.interval_s, args.device)
        if agreed(self.stop.requested, args.device):
            self.stop.event.set()  # a rank that got no SIGTERM of its own stops with the others
        if due or self.stop.requested or state.global_step >= state.max_steps:
            control.should_save = True
        if self.stop.requested:
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()


class MetricsRecorder(TrainerCallback):
    """Appends every logged row (with its optimizer step) to a JSONL file and forwards it (global
    rank 0 only: the rows are the same on every rank)."""

    def __init__(self, path: Path, forward=None) -> None:
        self.path = path
        self.forward = forward

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if _is_number(v)}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.forward is not None:
            self.forward(row)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class AtomicCheckpoints:
    """Mixin for a Hugging Face `Trainer` subclass: checkpoints under `checkpoint_root`, saved
    atomically and rank-aware. Takes its own keyword arguments and passes the rest to the trainer;
    a subclass may add to `extra_checkpoint_state`."""

    def __init__(self, *args, checkpoint_root: Path, run_plan: dict, keep_checkpoints: int = 2,
                 on_checkpoint=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.checkpoint_root = Path(checkpoint_root)
        self.run_plan = run_plan
        self.keep_checkpoints = keep_checkpoints
        self.on_checkpoint = on_checkpoint
        """Called on global rank 0 with each new checkpoint directory (the launcher verifies that
        it reaches S3)."""

    def extra_checkpoint_state(self) -> dict:
        """What the trainer needs on resume beyond Hugging Face's checkpoint (in `srl_state.json`)."""
        return {}

    def _get_output_dir(self, trial) -> str:
        return str(self.checkpoint_root / STAGING_DIR)

    def _save_checkpoint(self, model, trial) -> None:
        name = f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        staged = self.checkpoint_root / STAGING_DIR / name
        node_leader = self.args.local_process_index == 0
        if node_leader:
            shutil.rmtree(staged, ignore_errors=True)
        barrier()  # no rank writes into the staging directory before it is empty
        super()._save_checkpoint(model, trial)
        barrier()  # every rank has written its files (rng_state_<rank>.pth under torchrun)
        if self.args.process_index == 0:
            state = {
                "global_step": self.state.global_step,
                "run_plan": self.run_plan,
                **self.extra_checkpoint_state(),
                "saved_at": time.time(),
                # What a complete checkpoint holds across all nodes, for a check of the S3 copy.
                "files": sorted({p.name for p in staged.iterdir()} | {STATE_FILE}
                                | set(_rng_files(self.args.world_size))),
            }
            (staged / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        final = self.checkpoint_root / name
        if node_leader:
            if final.exists():  # a re-save of the same step (e.g. the end-of-run save after a resume)
                shutil.rmtree(final)
            os.replace(staged, final)
            # The first node rotates complete checkpoints; the others hold only RNG files.
            listed = complete_checkpoints if self.args.process_index == 0 else checkpoint_dirs
            for old in listed(self.checkpoint_root)[: -self.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        barrier()
        if self.args.process_index == 0 and self.on_checkpoint is not None:
            self.on_checkpoint(final)


def _rng_files(world_size: int) -> list[str]:
    """Hugging Face's RNG file names: one per rank when distributed."""
    return [f"rng_state_{rank}.pth" for rank in range(world_size)] if world_size > 1 else ["rng_state.pth"]
