"""Weakness profiles: where the latest evaluation went wrong, and how that steers problem proposals.

A profile holds, for each weakness dimension of a task family (skill, size, step count), the error
rate of every value the evaluation saw. Proposals are then aimed with weights that mix a uniform
spread (so nothing is starved) with the error rates (so most effort goes where models fail):

    weight(v) = (1 - focus) / k + focus * error(v) / sum(error)

over the k values of the dimension. With no errors at all, or no profile, the weights are uniform.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WeaknessProfile:
    error_rates: dict[str, dict[str, float]] = field(default_factory=dict)
    """dimension → value → share of evaluated problems with that value that were answered wrong."""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """dimension → value → problems evaluated (how much each error rate rests on)."""
    source: str = ""
    """Where the profile came from (an evaluation report's URI), for lineage."""

    @classmethod
    def from_results(cls, results: Iterable[tuple[dict[str, str], bool]], source: str = ""
                     ) -> WeaknessProfile:
        """From (dimension values, answered correctly) per evaluated problem."""
        wrong: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        seen: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for values, correct in results:
            for dimension, value in values.items():
                seen[dimension][value] += 1
                wrong[dimension][value] += not correct
        rates = {d: {v: wrong[d][v] / n for v, n in sorted(vs.items())} for d, vs in sorted(seen.items())}
        counts = {d: dict(sorted(vs.items())) for d, vs in sorted(seen.items())}
        return cls(rates, counts, source)

    @classmethod
    def from_evaluation(cls, report: dict, traces: list[dict], dims: Callable[[dict], dict[str, str]],
                        source: str = "") -> WeaknessProfile:
        """From an evaluation report's per-problem `results` ({id, correct}) joined with the traces
        they were computed on (for their dimension values); ids not among `traces` are skipped."""
        by_id = {trace["id"]: trace for trace in traces}
        return cls.from_results(((dims(by_id[r["id"]]), bool(r["correct"]))
                                 for r in report.get("results", []) if r["id"] in by_id), source)

    def weights(self, dimension: str, values: Iterable[str], focus: float) -> dict[str, float]:
        """Sampling weights over `values` (summing to 1); values the profile never saw count as
        erring at the mean rate of those it did."""
        if not 0.0 <= focus <= 1.0:
            raise ValueError(f"focus={focus}: must be between 0 and 1")
        values = sorted(set(values))
        if not values:
            return {}
        rates = self.error_rates.get(dimension, {})
        mean = sum(rates.values()) / len(rates) if rates else 0.0
        errors = {v: rates.get(v, mean) for v in values}
        total = sum(errors.values())
        if total == 0:
            return {v: 1 / len(values) for v in values}
        return {v: (1 - focus) / len(values) + focus * errors[v] / total for v in values}

    def as_dict(self) -> dict:
        return {"error_rates": self.error_rates, "counts": self.counts, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> WeaknessProfile:
        return cls(data.get("error_rates", {}), data.get("counts", {}), data.get("source", ""))


def plan_targets(profile: WeaknessProfile, values: dict[str, list[str]], n: int, focus: float,
                 rng: random.Random) -> list[dict[str, str]]:
    """`n` proposal targets: for each dimension, a value drawn from the profile's weights over the
    values the examples offer (dimensions drawn independently)."""
    weights = {d: profile.weights(d, vs, focus) for d, vs in values.items()}
    targets = []
    for _ in range(n):
        targets.append({d: rng.choices(list(w), weights=list(w.values()))[0]
                        for d, w in weights.items() if w})
    return targets
