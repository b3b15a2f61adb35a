"""Drift and weakness detection on what a served tier answered, against its approved version's baseline.

The baseline of an approved version is the first `DriftSettings.baseline_rows` collected serving rows
it answered (oldest first), frozen once it exists so later traffic never moves it. The recent
window is its newest `window_rows` rows after those. Both are summarised the same way
(`window_stats`):

- `pass_rate`: share of verifiable rows (a math family and a reference answer in the log) whose
  final answer verifies (`rewards.outcome_reward`);
- `mean_step_reward`: mean of the `step_reward` a row's `extra` carries (rows scored by a judge or
  an SRL step scorer); absent from the logs, it is None and not compared;
- `mean_output_tokens`: mean `completion_tokens`;
- `refusal_rate`: share of completions that read as a refusal (`REFUSAL`);
- `escalation_rate`: share of the rows carrying the router's `escalated` flag (in `extra`) that
  escalated to a larger tier; None when no row carries it.

`detect` compares the two with `DriftSettings`' thresholds and names every metric that moved past
its threshold. `weakness_profile` turns the recent window into a `WeaknessProfile` (the family's
`classify(prompt)` dimensions, a verifiable row counting as wrong when it did not verify), which
steers the proposer towards what the served model now gets wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from srl_platform.rewards import outcome_reward
from srl_platform.tasks import arithmetic
from srl_platform.weakness import WeaknessProfile

MATH_FAMILIES = ("arithmetic", "gsm8k", "s1k")
"""Families whose rows are verified by their final answer (the code family needs its test harness)."""
REFUSAL = re.compile(
    r"\b(i\s*(?:'m|am)\s+(?:sorry|unable|not able)|i\s+(?:can(?:'|no)t|cannot|won'?t)\s+(?:help|answer|assist|do)"
    r"|as an ai\b)", re.IGNORECASE)
"""What reads as a refusal in a completion (English; the rate is compared, so a stable miss cancels)."""
CLASSIFIERS = {"arithmetic": arithmetic.classify}
"""Families whose weakness dimensions can be read from a prompt alone (the rest count by family)."""


@dataclass(frozen=True)
class DriftSettings:
    """How much traffic a comparison needs and how far each metric may move before it is drift."""

    baseline_rows: int = 50
    """Rows of an approved version's first traffic that make its baseline."""
    window_rows: int = 50
    """Newest rows compared with the baseline."""
    min_rows: int = 20
    """Fewer verifiable rows (pass rate) or rows (the rest) on either side: that metric is not judged."""
    pass_rate_drop: float = 0.25
    """Drift when the recent pass rate is below the baseline's by more than this fraction of it."""
    step_reward_drop: float = 0.25
    """Likewise for the mean step reward (relative drop)."""
    output_length_change: float = 0.5
    """Drift when the mean output length moves by more than this fraction of the baseline's, either way."""
    refusal_rate_rise: float = 0.10
    """Drift when the refusal rate rises by more than this (absolute)."""
    escalation_rate_rise: float = 0.15
    """Drift when the router escalates this much more often (absolute)."""

    def __post_init__(self) -> None:
        for name in ("baseline_rows", "window_rows", "min_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"DriftSettings.{name}={getattr(self, name)}: must be >= 1")
        for name in ("pass_rate_drop", "step_reward_drop", "output_length_change", "refusal_rate_rise",
                     "escalation_rate_rise"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"DriftSettings.{name}={value!r}: must be a finite number >= 0")


@dataclass(frozen=True)
class WindowStats:
    rows: int
    verifiable: int
    pass_rate: float | None
    mean_step_reward: float | None
    mean_output_tokens: float | None
    refusal_rate: float | None
    escalation_rate: float | None
    first_row: str | None
    """row_digest of the window's first and last rows: which traffic the numbers describe."""
    last_row: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def _extra(row: dict) -> dict:
    extra = row.get("extra")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            return {}
    return extra if isinstance(extra, dict) else {}


def verified(row: dict) -> bool | None:
    """Whether a row's final answer verifies against its reference; None when it cannot be checked."""
    if row.get("task_family") not in MATH_FAMILIES or not row.get("reference_answer"):
        return None
    return outcome_reward(row.get("completion") or "", row["reference_answer"]) == 1.0


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def window_stats(rows: Sequence[dict]) -> WindowStats:
    checks = [ok for ok in (verified(row) for row in rows) if ok is not None]
    extras = [_extra(row) for row in rows]
    step_rewards = [float(e["step_reward"]) for e in extras
                    if isinstance(e.get("step_reward"), (int, float)) and math.isfinite(e["step_reward"])]
    escalations = [bool(e["escalated"]) for e in extras if isinstance(e.get("escalated"), bool)]
    return WindowStats(
        rows=len(rows),
        verifiable=len(checks),
        pass_rate=_mean([float(ok) for ok in checks]),
        mean_step_reward=_mean(step_rewards),
        mean_output_tokens=_mean([float(row.get("completion_tokens") or 0) for row in rows]),
        refusal_rate=_mean([float(bool(REFUSAL.search(row.get("completion") or ""))) for row in rows]),
        escalation_rate=_mean([float(e) for e in escalations]),
        first_row=rows[0].get("row_digest") if rows else None,
        last_row=rows[-1].get("row_digest") if rows else None,
    )


def split_windows(rows: Sequence[dict], settings: DriftSettings) -> tuple[list[dict], list[dict]]:
    """(baseline, recent) of one version's rows in serving order; recent is empty until traffic
    beyond the baseline exists."""
    baseline = list(rows[: settings.baseline_rows])
    after = list(rows[settings.baseline_rows:])
    return baseline, after[-settings.window_rows:]


def detect(baseline: WindowStats, recent: WindowStats, settings: DriftSettings = DriftSettings()) -> dict:
    """Every metric's baseline and recent value, whether it was judged, and the ones that drifted."""
    enough_rows = min(baseline.rows, recent.rows) >= settings.min_rows
    enough_checks = min(baseline.verifiable, recent.verifiable) >= settings.min_rows
    rules = {
        "pass_rate": (enough_checks, lambda b, r: r < b * (1 - settings.pass_rate_drop),
                      f"dropped by more than {settings.pass_rate_drop:.0%} of the baseline"),
        "mean_step_reward": (enough_rows, lambda b, r: r < b - abs(b) * settings.step_reward_drop,
                             f"dropped by more than {settings.step_reward_drop:.0%} of the baseline"),
        "mean_output_tokens": (enough_rows, lambda b, r: abs(r - b) > b * settings.output_length_change,
                               f"moved by more than {settings.output_length_change:.0%} of the baseline"),
        "refusal_rate": (enough_rows, lambda b, r: r > b + settings.refusal_rate_rise,
                         f"rose by more than {settings.refusal_rate_rise:.2f}"),
        "escalation_rate": (enough_rows, lambda b, r: r > b + settings.escalation_rate_rise,
                            f"rose by more than {settings.escalation_rate_rise:.2f}"),
    }
    metrics, drifted = {}, []
    for name, (enough, moved, rule) in rules.items():
        b, r = getattr(baseline, name), getattr(recent, name)
        judged = enough and b is not None and r is not None
        is_drift = judged and moved(b, r)
        metrics[name] = {"baseline": b, "recent": r, "judged": judged, "drifted": is_drift, "rule": rule}
        if is_drift:
            drifted.append(name)
    return {"drifted": drifted, "metrics": metrics, "baseline": baseline.as_dict(), "recent": recent.as_dict()}


def describe(result: dict) -> str:
    if not result["drifted"]:
        judged = [n for n, m in result["metrics"].items() if m["judged"]]
        return f"no drift ({', '.join(judged) or 'nothing'} judged)"
    parts = []
    for name in result["drifted"]:
        m = result["metrics"][name]
        parts.append(f"{name} {m['baseline']:.3g} → {m['recent']:.3g} ({m['rule']})")
    return "; ".join(parts)


def window_id(rows: Iterable[dict]) -> str:
    """A short identity of a window's rows, for run keys and the sensor's cursor."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(str(row.get("row_digest")).encode())
    return digest.hexdigest()[:16]


def weakness_profile(rows: Iterable[dict], source: str = "") -> WeaknessProfile:
    """The recent window as a weakness profile: every verifiable row, by the dimensions its
    family reads from the prompt (`classify`), wrong when its final answer did not verify."""
    results = []
    for row in rows:
        ok = verified(row)
        if ok is not None:
            classify = CLASSIFIERS.get(row["task_family"], lambda question: {})
            results.append(({"family": row["task_family"], **classify(row["prompt"])}, ok))
    return WeaknessProfile.from_results(results, source)
