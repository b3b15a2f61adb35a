"""GRPO with dynamic sampling, wall-clock/SIGTERM checkpoints and atomic, resumable saves.

`SRLGRPOTrainer` extends TRL's `GRPOTrainer` at two named hooks instead of copying its loop:

- `_generate_and_score_completions`: after each generation round, groups whose reward std is
  <= epsilon are dropped and more prompts are drawn until the batch has as many groups as asked
  (or `max_refill_rounds` is spent). TRL 1.16 has no such filter. Under torchrun each rank judges
  its own groups of the gathered rewards, and all ranks refill in lockstep.
- `_save_checkpoint`: atomic, rank-aware checkpoints (`srl_platform.checkpointing.AtomicCheckpoints`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from trl import GRPOTrainer
from trl.trainer.utils import pad

from srl_platform.checkpointing import (  # noqa: F401 (re-exported: what srl train uses)
    AtomicCheckpoints,
    CheckpointPolicy,
    MetricsRecorder,
    StopRequest,
    max_over_ranks,
)
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


class SRLGRPOTrainer(AtomicCheckpoints, GRPOTrainer):
    """`GRPOTrainer` with dynamic sampling and atomic checkpoints under `checkpoint_root`."""

    def __init__(
        self,
        *args,
        epsilon: float,
        max_refill_rounds: int,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.num_generations < 2:
            raise ValueError("dynamic sampling needs num_generations >= 2")
        self.epsilon = epsilon
        self.max_refill_rounds = max_refill_rounds
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

    def extra_checkpoint_state(self) -> dict:
        return {"refill_cursor": self._refill_cursor, "sampling": vars(self.sampling)}

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
