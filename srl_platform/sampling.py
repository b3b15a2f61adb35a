"""Dynamic sampling: which GRPO groups carry a learning signal.

A group is the `num_generations` rollouts of one prompt. GRPO's advantage is each reward minus its
group's mean, so a group whose rewards are (nearly) all equal contributes zero advantage: it costs a
forward/backward pass and teaches nothing. SRL drops groups whose reward std is <= epsilon and refills
the batch; RLVR does the same with epsilon 0 (DAPO's all-equal filter).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def group_std(rewards: Sequence[float]) -> float:
    """Population standard deviation of one group's rewards.

    `statistics.pstdev` computes exactly, so a group of identical rewards has std exactly 0 (a naive
    mean can leave ~1e-17 and slip past an epsilon of 0)."""
    return statistics.pstdev(rewards)


def groups_with_signal(rewards: Sequence[float], group_size: int, epsilon: float) -> list[bool]:
    """One flag per consecutive group of `group_size` rewards: keep it (std > epsilon) or drop it."""
    if group_size < 2:
        raise ValueError(f"group_size={group_size}: a group needs at least 2 rollouts to have a spread")
    if len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    return [
        group_std(rewards[start : start + group_size]) > epsilon
        for start in range(0, len(rewards), group_size)
    ]


@dataclass
class SamplingStats:
    """Running counts of the filter, logged every step and saved with each checkpoint."""

    groups_seen: int = 0
    groups_dropped: int = 0
    refill_rounds: int = 0
    unfilled_steps: int = 0
    """Steps that trained on fewer groups than asked because refills ran out."""

    @property
    def drop_rate(self) -> float:
        return self.groups_dropped / self.groups_seen if self.groups_seen else 0.0
