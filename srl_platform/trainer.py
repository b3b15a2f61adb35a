"""GRPO with dynamic sampling, wall-clock/SIGTERM checkpoints and atomic, resumable saves.

`SRLGRPOTrainer` extends TRL's `GRPOTrainer` at two named hooks instead of copying its loop:

- `_generate_and_score_completions`: after each generation round, groups whose reward std is
  <= epsilon are dropped and more prompts are drawn until the batch has as many groups as asked
  (or `max_refill_rounds` is spent). TRL 1.16 has no such filter.
- `_save_checkpoint`: the Hugging Face checkpoint (adapter, optimizer, scheduler, RNG, trainer
  state) is written into a staging directory and renamed into place, so a kill during a save never
  leaves a checkpoint that a resume would load.
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
    handler then restores the default action, so a second SIGTERM kills at once.
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


class CheckpointPolicy(TrainerCallback):
    """Asks the trainer to save every `interval_minutes` of wall clock, on SIGTERM and at the end."""

    def __init__(self, interval_minutes: float, stop: StopRequest) -> None:
        self.interval_s = interval_minutes * 60.0
        self.stop = stop
        self.last_save = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        due = time.monotonic() - self.last_save >= self.interval_s
        if due or self.stop.requested or state.global_step >= state.max_steps:
            control.should_save = True
        if self.stop.requested:
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()


class MetricsRecorder(TrainerCallback):
    """Appends every logged row (with its optimizer step) to a JSONL file and forwards it."""

    def __init__(self, path: Path, forward=None) -> None:
        self.path = path
        self.forward = forward

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
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
        rows = []
        for _ in range(n_prompts):
            index = self._refill_order[self._refill_cursor % len(self._refill_order)]
            self._refill_cursor += 1
            rows.extend([self.train_dataset[index]] * self.num_generations)
        return rows

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        size = self.num_generations
        wanted = len(inputs) // size
        kept_parts, kept, rounds, batch = [], 0, 0, inputs
        while True:
            output = super()._generate_and_score_completions(batch)
            keep = groups_with_signal(self._last_rewards.tolist(), size, self.epsilon)
            self.sampling.groups_seen += len(keep)
            self.sampling.groups_dropped += keep.count(False)
            if any(keep):
                kept_parts.append(_select_groups(output, keep, size))
                kept += sum(keep)
            if kept >= wanted or rounds >= self.max_refill_rounds:
                break
            rounds += 1
            self.sampling.refill_rounds += 1
            batch = self._refill_batch(wanted - kept)
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
        shutil.rmtree(staged, ignore_errors=True)
        super()._save_checkpoint(model, trial)
        state = {
            "global_step": self.state.global_step,
            "run_plan": self.run_plan,
            "refill_cursor": self._refill_cursor,
            "sampling": vars(self.sampling),
            "saved_at": time.time(),
        }
        (staged / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        final = self.checkpoint_root / name
        if final.exists():  # a re-save of the same step (e.g. the end-of-run save after a resume)
            shutil.rmtree(final)
        os.replace(staged, final)
        for old in complete_checkpoints(self.checkpoint_root)[: -self.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def restore_extra_state(self, checkpoint: Path) -> None:
        """Restore what Hugging Face's checkpoint does not hold: refill position and filter counts."""
        state = json.loads((checkpoint / STATE_FILE).read_text())
        self._refill_cursor = state["refill_cursor"]
        self.sampling = SamplingStats(**state["sampling"])


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
