"""Tiers: where and with what budget each model size trains.

Bronze is the largest model (the teacher), silver the medium one, gold the smallest and cheapest to
serve. Each `TierSpec` carries both its SageMaker settings (used by the SageMaker backend) and the
small budgets used on the embedded default (one CPU, the SmolLM2-135M base for every tier).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

TierName = Literal["gold", "silver", "bronze"]
TIER_NAMES: tuple[TierName, ...] = ("gold", "silver", "bronze")


@dataclass(frozen=True)
class LoRASpec:
    """The LoRA adapter trained on top of the tier's base model."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class Budget:
    """Optimizer steps and batch shape of one training stage."""

    max_steps: int
    prompts_per_step: int
    """Distinct prompts per optimizer step; each gets the stage's `num_generations` rollouts."""


@dataclass(frozen=True)
class TierSpec:
    """Everything that differs between tiers. Field names follow SageMaker's API where one exists."""

    name: TierName
    base_model: str
    """Catalogue name or directory of the tier's base model (embedded default: SmolLM2-135M)."""
    instance_type: str
    """SageMaker training instance type."""
    instance_count: int
    """Nodes; > 1 launches `torchrun` across nodes (`distribution="torchrun"`)."""
    use_spot_instances: bool
    """SageMaker managed spot training (`enable_managed_spot_training`)."""
    spot_fraction: float
    """Share of the tier's training capacity expected on spot (gold 1.0, silver >= 0.8)."""
    max_run_seconds: int
    """SageMaker `MaxRuntimeInSeconds`."""
    max_wait_seconds: int
    """SageMaker `MaxWaitTimeInSeconds` (>= max_run_seconds; spot waits count against it)."""
    distribution: Literal["none", "torchrun"]
    checkpoint_interval_minutes: float = 30.0
    """Wall-clock minutes between checkpoints (plus one on SIGTERM and one at the end)."""
    lora: LoRASpec = field(default_factory=LoRASpec)
    srl_budget: Budget = field(default_factory=lambda: Budget(max_steps=8, prompts_per_step=1))
    """Embedded-default budget of the SRL stage."""
    rlvr_budget: Budget = field(default_factory=lambda: Budget(max_steps=4, prompts_per_step=1))
    """Embedded-default budget of the RLVR stage."""
    distill_budget: Budget = field(default_factory=lambda: Budget(max_steps=4, prompts_per_step=2))
    """Embedded-default budget of distilling this tier from its teacher (silver and gold)."""
    min_quality_ratio: float = 0.9
    """Quality gate: the distilled student must keep at least this fraction of its teacher's
    quality on held-out problems to be approved (`retains_teacher_quality`)."""

    def __post_init__(self) -> None:
        if self.max_wait_seconds < self.max_run_seconds:
            raise ValueError(
                f"tier {self.name}: max_wait_seconds={self.max_wait_seconds} must be >= "
                f"max_run_seconds={self.max_run_seconds} (SageMaker rejects the job otherwise)"
            )
        if self.distribution == "torchrun" and self.instance_count < 2:
            raise ValueError(f"tier {self.name}: torchrun distribution needs instance_count >= 2")

    def as_dict(self) -> dict:
        return asdict(self)


TIERS: dict[TierName, TierSpec] = {
    "bronze": TierSpec(
        name="bronze",
        base_model="smollm2-135m-instruct",
        instance_type="ml.p5.48xlarge",
        instance_count=2,
        use_spot_instances=True,
        spot_fraction=1.0,
        max_run_seconds=72 * 3600,
        max_wait_seconds=96 * 3600,
        distribution="torchrun",
        lora=LoRASpec(r=32, alpha=64),
        srl_budget=Budget(max_steps=12, prompts_per_step=1),
        rlvr_budget=Budget(max_steps=6, prompts_per_step=1),
    ),
    "silver": TierSpec(
        name="silver",
        base_model="smollm2-135m-instruct",
        instance_type="ml.p5.48xlarge",
        instance_count=1,
        use_spot_instances=True,
        spot_fraction=0.8,
        max_run_seconds=24 * 3600,
        max_wait_seconds=36 * 3600,
        distribution="none",
        lora=LoRASpec(r=16, alpha=32),
        srl_budget=Budget(max_steps=8, prompts_per_step=1),
        rlvr_budget=Budget(max_steps=4, prompts_per_step=1),
        distill_budget=Budget(max_steps=6, prompts_per_step=2),
    ),
    "gold": TierSpec(
        name="gold",
        base_model="smollm2-135m-instruct",
        instance_type="ml.g6.12xlarge",
        instance_count=1,
        use_spot_instances=True,
        spot_fraction=1.0,
        max_run_seconds=12 * 3600,
        max_wait_seconds=24 * 3600,
        distribution="none",
        lora=LoRASpec(r=8, alpha=16),
        srl_budget=Budget(max_steps=6, prompts_per_step=1),
        rlvr_budget=Budget(max_steps=3, prompts_per_step=1),
        distill_budget=Budget(max_steps=4, prompts_per_step=2),
    ),
}

TEACHER_OF: dict[TierName, TierName] = {"silver": "bronze", "gold": "silver"}
"""The cascade: each student tier is distilled from the next larger tier."""
STUDENT_TIERS: tuple[TierName, ...] = tuple(TEACHER_OF)
TEACHER_TIERS: tuple[TierName, ...] = tuple(TEACHER_OF.values())


def teacher_of(tier: str) -> TierName:
    try:
        return TEACHER_OF[tier]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"tier {tier!r} has no teacher: only {', '.join(STUDENT_TIERS)} are distilled "
                         f"(bronze is trained with SRL→RLVR)") from None


def get_tier(name: str) -> TierSpec:
    try:
        return TIERS[name]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown tier {name!r}; choose one of {', '.join(TIER_NAMES)}") from None


ADAPTER_WEIGHTS = "adapter_model.safetensors"
"""The weights file of a saved LoRA adapter (peft), present only once an adapter is complete."""


def adapter_key(tier: str, stage: str) -> str:
    """Artefact-store key (a directory) of a tier's adapter for one stage (`srl` or `rlvr`)."""
    return f"adapters/{tier}/{stage}"


@dataclass(frozen=True)
class ServingSpec:
    """Where a tier serves traffic and what an hour of it costs: with the tier's measured tokens/s,
    its cost per 1M generated tokens (`srl_platform.router_table.cost_per_1m_tokens`). Kept apart
    from `TierSpec` on purpose: training job identities hash `TierSpec.as_dict()`, and a new price
    must never start a new training job."""

    instance_type: str
    """SageMaker real-time inference instance type."""
    price_per_hour: float
    """USD per hour of `instance_type`: the SageMaker real-time inference on-demand list price in
    us-east-1 (2025), a list price, not a quote. The rate you pay (savings plans, another region)
    overrides it in `RouterSettings.serving_price_per_hour`."""

    def __post_init__(self) -> None:
        if isinstance(self.price_per_hour, bool) or not isinstance(self.price_per_hour, int | float) \
                or not self.price_per_hour > 0:
            raise ValueError(f"serving instance {self.instance_type}: price_per_hour={self.price_per_hour!r} "
                             "must be a number > 0 (USD per hour)")


SERVING: dict[TierName, ServingSpec] = {
    # The largest model on 8x A100 40 GB; the medium one on 4x A10G; the smallest on one A10G.
    "bronze": ServingSpec(instance_type="ml.p4d.24xlarge", price_per_hour=37.688),
    "silver": ServingSpec(instance_type="ml.g5.12xlarge", price_per_hour=7.09),
    "gold": ServingSpec(instance_type="ml.g5.xlarge", price_per_hour=1.408),
}


def get_serving(name: str) -> ServingSpec:
    """The serving instance and list price of a tier."""
    get_tier(name)
    return SERVING[name]  # type: ignore[index]
