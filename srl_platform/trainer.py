"""GRPO with dynamic sampling, wall-clock/SIGTERM checkpoints and atomic, resumable saves.

`SRLGRPOTrainer` extends TRL's `GRPOTrainer` at two named hooks instead of copying its loop:

- `_generate_and_score_completions`: after each generation round, groups whose reward std is
  <= epsilon are dropped and more prompts are drawn until the batch has as many groups as asked
  (or `max_refill_rounds` is spent). TRL 1.16 has no such filter.
- `_save_checkpoint`: the Hugging Face checkpoint (adapter, optimizer, scheduler, RNG, trainer
  state) is written into a staging directory and renamed into place, so a kill during a save never
  leaves a checkpoint that a resume would load.

Under torchrun (the multi-node bronze tier) every node has its own checkpoint directory, and
SageMaker syncs all of them to one S3 prefix, so no two ranks may write a file of the same name:
global rank 0 writes the adapter, optimizer, trainer state and `srl_state.json`, every rank its own
`rng_state_<rank>.pth`; each node's local rank 0 renames its staging directory once every rank has
written. The decisions to save and to stop are agreed across ranks, so all save the same step.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer
from trl.trainer.utils import pad

from srl_platform.checkpoints import (  # noqa: F401 (the checkpoint layout, re-exported)
    CHECKPOINT_PREFIX,
    STAGING_DIR,
    STATE_FILE,
    checkpoint_dirs,
    checkpoint_step,
    complete_checkpoints,
    latest_checkpoint,
)
from srl_platform.sampling import SamplingStats, groups_with_signal

# Keys of TRL's generation output that are (batch, seq) tensors padded on the left / on the right.
_LEFT_PADDED = {"prompt_ids": "pad", "prompt_mask": 0}
_RIGHT_PADDED = {
    "completion_ids": "pad",
    "completion_mask": 0,
    "old_per_token_logps": 0.0,
    "ref_per_token_logps": 0.0,
    "sampling_per_token_logps": 0.0,
    "importance_sampling_ratio": 1.0,
    "tool_mask": 0,
}


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


class SRLGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` with dynamic sampling and atomic checkpoints under `checkpoint_root`."""

    def __init__(
        self,
        *args,
        epsilon: float,
        max_refill_rounds: int,
        checkpoint_root: Path,
        run_plan: dict,
        keep_checkpoints: int = 2,
        on_checkpoint=None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.num_generations < 2:
            raise ValueError("dynamic sampling needs num_generations >= 2")
        self.epsilon = epsilon
        self.max_refill_rounds = max_refill_rounds
        self.checkpoint_root = Path(checkpoint_root)
        self.keep_checkpoints = keep_checkpoints
        self.run_plan = run_plan
        self.on_checkpoint = on_checkpoint
        """Called on global rank 0 with each new checkpoint directory (the launcher verifies that
        it reaches S3)."""
        self.sampling = SamplingStats()
        order = list(range(len(self.train_dataset)))
        random.Random(self.args.seed + 1).shuffle(order)
        self._refill_order = order
        self._refill_cursor = 0
        self._last_rewards: torch.Tensor | None = None

    # ---- dynamic sampling -------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        self._last_rewards = (rewards_per_func * weights).nansum(dim=1)
        return rewards_per_func

    def _refill_batch(self, n_prompts: int) -> list[dict]:
        """The next `n_prompts` refill prompts of this rank (ranks take turns through one order)."""
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        rows = []
        for _ in range(n_prompts):
            index = self._refill_order[(self._refill_cursor * world + rank) % len(self._refill_order)]
            self._refill_cursor += 1
            rows.extend([self.train_dataset[index]] * self.num_generations)
        return rows

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        size = self.num_generations
        wanted = len(inputs) // size
        rank = self.accelerator.process_index
        kept_parts, kept, rounds, batch = [], 0, 0, inputs
        while True:
            output = super()._generate_and_score_completions(batch)
            # The rewards are gathered from every rank (rank 0's groups first); `output` is this rank's.
            every_keep = groups_with_signal(self._last_rewards.tolist(), size, self.epsilon)
            local = len(batch) // size
            keep = every_keep[rank * local:(rank + 1) * local]
            self.sampling.groups_seen += len(every_keep)
            self.sampling.groups_dropped += every_keep.count(False)
            if any(keep):
                kept_parts.append(_select_groups(output, keep, size))
                kept += sum(keep)
            # Generation and reward gathering are collective: every rank refills as many prompts as
            # the rank shortest of groups needs, for the same number of rounds.
            short = max_over_ranks(wanted - min(kept, wanted), self.accelerator.device)
            if short == 0 or rounds >= self.max_refill_rounds:
                break
            rounds += 1
            self.sampling.refill_rounds += 1
            batch = self._refill_batch(short)
        if kept < wanted:
            self.sampling.unfilled_steps += 1
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/drop_rate"].append(self.sampling.drop_rate)
        metrics["dynamic_sampling/kept_groups"].append(float(min(kept, wanted)))
        metrics["dynamic_sampling/refill_rounds"].append(float(rounds))
        if not kept_parts:
            # No group had signal even after refills: every advantage is 0, so this step's gradient
            # is 0. Train on it anyway (the step is counted and logged as unfilled).
            return output
        merged = _concat_groups(kept_parts, self._tokenizer.pad_token_id)
        return _take_groups(merged, wanted, size)

    # ---- atomic checkpoints -------------------------------------------------------------------

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
                "refill_cursor": self._refill_cursor,
                "sampling": vars(self.sampling),
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

    def restore_extra_state(self, checkpoint: Path) -> None:
        """Restore what Hugging Face's checkpoint does not hold: refill position and filter counts."""
        state = json.loads((checkpoint / STATE_FILE).read_text())
        self._refill_cursor = state["refill_cursor"]
        self.sampling = SamplingStats(**state["sampling"])


def _rng_files(world_size: int) -> list[str]:
    """Hugging Face's RNG file names: one per rank when distributed."""
    return [f"rng_state_{rank}.pth" for rank in range(world_size)] if world_size > 1 else ["rng_state.pth"]


def _select_groups(output: dict, keep: list[bool], size: int) -> dict:
    rows = torch.tensor([k for k in keep for _ in range(size)], dtype=torch.bool)
    return {
        key: value[rows.to(value.device)] if _is_row_tensor(value, len(rows)) else value
        for key, value in output.items()
    }


def _take_groups(output: dict, n_groups: int, size: int) -> dict:
    n_rows = n_groups * size
    sliced = {
        key: value[:n_rows] if _is_row_tensor(value, None) else value for key, value in output.items()
    }
    # Loss normalisation (DAPO / token-level losses) divides by the tokens actually kept.
    mask = sliced["completion_mask"]
    if "tool_mask" in sliced:
        mask = mask * sliced["tool_mask"]
    sliced["num_items_in_batch"] = mask.sum()
    return sliced


def _is_row_tensor(value, n_rows: int | None) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() >= 1 and (n_rows is None or len(value) == n_rows)


def _concat_groups(parts: list[dict], pad_token_id: int) -> dict:
    if len(parts) == 1:
        return parts[0]
    merged = {}
    for key, first in parts[0].items():
        values = [part[key] for part in parts]
        if key in _LEFT_PADDED or key in _RIGHT_PADDED:
            fill = {**_LEFT_PADDED, **_RIGHT_PADDED}[key]
            fill = pad_token_id if fill == "pad" else fill
            side = "left" if key in _LEFT_PADDED else "right"
            rows = [row for value in values for row in value]
            merged[key] = pad(rows, padding_value=fill, padding_side=side)
        elif _is_row_tensor(first, None):
            merged[key] = torch.cat(values)
        else:
            merged[key] = first
    return merged
