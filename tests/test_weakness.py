"""Weakness profiles: error rates from an evaluation, and the proposal weights they give."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from srl_platform.tasks.arithmetic import dims
from srl_platform.weakness import WeaknessProfile, plan_targets

TEMPLATES = ["farm", "inventory", "recipe", "savings", "shopping", "travel"]


def test_error_rates_from_evaluation_results() -> None:
    traces = [{"id": f"t{i}", "meta": {"template": t, "num_ops": 2}} for i, t in
              enumerate(["farm", "farm", "travel", "travel"])]
    report = {"results": [{"id": "t0", "correct": False}, {"id": "t1", "correct": False},
                          {"id": "t2", "correct": True}, {"id": "t3", "correct": False},
                          {"id": "unknown", "correct": False}]}
    profile = WeaknessProfile.from_evaluation(report, traces, dims, source="reports/x.json")
    assert profile.error_rates["template"] == {"farm": 1.0, "travel": 0.5}
    assert profile.counts["template"] == {"farm": 2, "travel": 2}
    assert profile.error_rates["num_ops"] == {"2": 0.75}
    assert WeaknessProfile.from_dict(profile.as_dict()) == profile


def test_weights_mix_uniform_and_errors() -> None:
    profile = WeaknessProfile({"template": {"farm": 0.9, "travel": 0.3}})
    weights = profile.weights("template", ["farm", "travel", "recipe"], focus=0.6)
    # recipe was not evaluated: it counts at the mean error (0.6); total error 1.8.
    assert weights == pytest.approx({"farm": 0.4 / 3 + 0.6 * 0.5, "travel": 0.4 / 3 + 0.6 / 6,
                                     "recipe": 0.4 / 3 + 0.6 / 3})
    assert sum(weights.values()) == pytest.approx(1.0)
    assert WeaknessProfile().weights("template", TEMPLATES, 0.75) == {t: 1 / 6 for t in TEMPLATES}
    no_errors = WeaknessProfile({"template": {t: 0.0 for t in TEMPLATES}})
    assert no_errors.weights("template", TEMPLATES, 0.75) == {t: 1 / 6 for t in TEMPLATES}
    with pytest.raises(ValueError, match="focus=1.5"):
        profile.weights("template", TEMPLATES, 1.5)


def test_one_weak_skill_concentrates_the_plan() -> None:
    """With farm the only skill answered wrong and focus 0.75, farm should get
    0.25/6 + 0.75 ≈ 79% of the targets instead of 1/6 ≈ 17%."""
    weak = WeaknessProfile({"template": {t: float(t == "farm") for t in TEMPLATES}})
    values = {"template": TEMPLATES, "num_ops": ["2", "3", "4", "5"]}
    uniform = Counter(t["template"] for t in plan_targets(WeaknessProfile(), values, 2000, 0.75,
                                                          random.Random(0)))
    steered = Counter(t["template"] for t in plan_targets(weak, values, 2000, 0.75, random.Random(0)))
    assert 0.13 < uniform["farm"] / 2000 < 0.21
    assert 0.75 < steered["farm"] / 2000 < 0.83
    # The other dimension is untouched (no profile for it): still spread over its values.
    assert len({t["num_ops"] for t in plan_targets(weak, values, 200, 0.75, random.Random(1))}) == 4
