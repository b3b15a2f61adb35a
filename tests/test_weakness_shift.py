"""A weakness profile with one weak skill shifts what the real proposer writes toward that skill.

SmolLM2-135M proposes 32 arithmetic problems twice with the same seed: once with no profile
(targets spread uniformly over the six templates), once with a profile where only farm problems
were answered wrong. What it wrote is read back with the family's classifier. Measured on the
development machine: farm in 9 of 32 replies without a profile, 20 of 32 with it; the test asks
for a rise of at least 20 points to a share of at least 45%.
"""

from __future__ import annotations

import pytest

from srl_platform.clients import GenerationParams, TransformersClient
from srl_platform.collaboration import CollaborationConfig, propose
from srl_platform.models import DEFAULT_BASE_MODEL
from srl_platform.tasks import get_family
from srl_platform.weakness import WeaknessProfile

TEMPLATES = ("farm", "inventory", "recipe", "savings", "shopping", "travel")


@pytest.mark.slow
def test_one_weak_skill_shifts_the_proposers_output(base_model_dir) -> None:
    family = get_family("arithmetic")
    proposer = TransformersClient(DEFAULT_BASE_MODEL)
    config = CollaborationConfig(proposals=32, seed=1,
                                 proposer_params=GenerationParams(max_tokens=96, temperature=0.6))
    weak_at_farm = WeaknessProfile({"template": {t: float(t == "farm") for t in TEMPLATES}})

    def farm_share(profile: WeaknessProfile) -> tuple[float, int]:
        proposals = propose(family, proposer, profile, config)
        written = proposals.written(family)["template"]
        targeted = sum(t["template"] == "farm" for t in proposals.targets)
        return written.get("farm", 0) / config.proposals, targeted

    uniform, uniform_targets = farm_share(WeaknessProfile())
    steered, steered_targets = farm_share(weak_at_farm)
    proposer.close()
    assert steered_targets > 2 * uniform_targets  # the plan: ≈ 79% farm targets instead of ≈ 17%
    assert steered >= 0.45 and steered - uniform >= 0.20, (
        f"farm share of written problems: {uniform:.2f} without a profile, {steered:.2f} with one")
