"""Method configuration: one dataclass per training stage (SRL, RLVR, distillation), documented, with
sane defaults.

Infrastructure (instance types, spot, budgets) lives in `srl_platform.tiers.TierSpec`; these
dataclasses say *what* is optimised and how rollouts are scored and filtered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

from srl_platform.rewards import FormatPolicy

Stage = Literal["srl", "rlvr", "distill"]
DistillMethod = Literal["auto", "on_policy", "sequence"]


@dataclass(frozen=True)
class GRPOSettings:
    """The GRPO knobs both stages share (TRL `GRPOConfig` is built from these)."""

    num_generations: int = 8
    """Rollouts per prompt (G). Advantages are normalised within each group of G."""
    temperature: float = 1.0
    """Sampling temperature of rollouts (the paper's 1.0)."""
    beta: float = 0.0
    """KL coefficient against the reference model. 0 (as in the paper) also skips loading a reference."""
    learning_rate: float = 1e-4
    """Peak learning rate of the LoRA parameters."""
    lr_scheduler_type: str = "linear"
    """Schedule planned over the whole run's `max_steps`; a resume continues it, never restarts it."""
    warmup_steps: int = 0
    epsilon: float = 1e-4
    """Dynamic sampling: a group whose reward standard deviation (population std) is <= epsilon
    carries no learning signal and is dropped, and the batch is refilled with fresh prompts."""
    max_refill_rounds: int = 4
    """How many extra generation rounds may refill a batch before training on what was kept."""
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SRLConfig(GRPOSettings):
    """Step-wise Supervised RL: reward = similarity of the generated step to the expert step."""

    format_policy: FormatPolicy = "none"
    """How the `<think>…</think>` rule is enforced. `strict` is the paper's rule (-1 without a closed
    think block); `prefill` ends the prompt in `<think>`; `none` scores the whole completion. The
    default is `none` because SmolLM2-135M closes `</think>` in 0 of 96 samples, so under `strict`
    every rollout scores -1 and no group carries signal (DESIGN.md). Use `strict` for larger models."""
    autojunk: bool = False
    """difflib's autojunk heuristic. Off by default: on with strings of 200+ characters it changes the
    score and makes it depend on argument order."""
    include_next_title: bool = False
    """Show the title of the step to be written in the prompt (a hint the paper makes optional)."""
    max_completion_length: int = 64
    """Tokens per rollout: one step (plus any inner monologue) must fit."""


@dataclass(frozen=True)
class RLVRConfig(GRPOSettings):
    """RL with verifiable rewards: 1 when the final answer verifies against the reference, else 0."""

    epsilon: float = 0.0
    """DAPO-style filter: groups whose rewards are all equal (std 0) are dropped and refilled."""
    max_refill_rounds: int = 2
    """Fewer than SRL: a 0/1 reward on a small model leaves most groups all-equal (DESIGN.md measured
    11 of 12), so refills are costly; the drop rate in the metrics shows how often that happens."""
    max_completion_length: int = 128
    """Tokens per rollout: a whole solution must fit before the answer is checked."""


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation of a student tier from its teacher tier (silver from bronze, gold from
    silver) into a fresh LoRA adapter on the student's base model."""

    method: DistillMethod = "auto"
    """`on_policy`: TRL's `DistillationTrainer` (the student samples, the teacher's next-token
    distribution is matched under a generalized JSD); needs one vocabulary. `sequence`: SFT on the
    teacher's verified traces (works across tokenizers). `auto` picks `on_policy` when teacher and
    student tokenizers are the same and `sequence` otherwise; the choice is recorded."""
    beta: float = 0.5
    """Generalized JSD interpolation (on-policy): 0 forward KL, 1 reverse KL, 0.5 the JSD."""
    temperature: float = 1.0
    """Sampling temperature of the student's rollouts and of the divergence."""
    max_completion_length: int = 64
    """Tokens the student generates per prompt (on-policy)."""
    learning_rate: float = 1e-4
    lr_scheduler_type: str = "linear"
    """Planned over the whole run's `max_steps`, as in the GRPO stages; a resume continues it."""
    warmup_steps: int = 0
    verified_only: bool = True
    """Sequence-level: train only on teacher traces whose final answer verified (a wrong teacher
    answer is not worth imitating). With none verified the run fails and says so."""
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def stage_config(stage: Stage, **overrides) -> SRLConfig | RLVRConfig | DistillConfig:
    """The stage's config with the given non-None overrides applied (unknown names are an error)."""
    cls = {"srl": SRLConfig, "rlvr": RLVRConfig, "distill": DistillConfig}[stage]
    known = {f.name for f in fields(cls)}
    unknown = sorted(k for k, v in overrides.items() if v is not None and k not in known)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; known: {sorted(known)}")
    return cls(**{k: v for k, v in overrides.items() if v is not None})


__all__ = ["DistillConfig", "GRPOSettings", "SRLConfig", "RLVRConfig", "Stage", "stage_config"]
