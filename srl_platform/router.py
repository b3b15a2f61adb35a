"""Cost-benefit routing (dynamic model selection): each request to the cheapest tier expected to
answer it well enough.

`Router.route(family, difficulty, target)` reads the router table (`srl_platform.router_table`:
each tier's expected quality per task family and difficulty, smoothed, and its cost per request)
and picks, among the tiers it may use, the one with the lowest expected cost per request whose
expected quality clears `target`. When none clears, it picks the tier with the best expected
quality and says so. No model is called to decide.

`Router.cascade` (FrugalGPT-style, Chen, Zaharia & Zou 2023): try the cheapest tier, check its
answer with the task family's verifier (`srl_platform.tasks.VERIFIERS`), escalate to the next
tier by cost on failure, stop at the first answer that verifies. It needs a request whose answer
can be checked (a code task's tests, a known answer when replaying held-out problems). When no
answer verifies, the best-quality tier's answer is kept and the decision says so.
`Router.answer` does one or the other as `RouterSettings.cascade` says.

Every `Decision` is explainable: the chosen tier, why, and for every candidate its expected
quality (and what that rests on), its cost, and whether it cleared the target; in a cascade, every
attempt with its verdict, and whether it escalated (the drift sensor's escalation rate reads that
flag from serving logs). No I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace

from srl_platform.router_table import (
    DIFFICULTY_DIMENSION,
    RouterTable,
    TierEntry,
    TierEvaluation,
    build_table,
    cost_per_1m_tokens,
)
from srl_platform.tasks import FAMILY_NAMES, VERIFIERS
from srl_platform.tasks.verdict import Verdict
from srl_platform.tiers import TIER_NAMES

QUALITY_RANGE = {"accuracy": (0.0, 1.0), "mean_step_reward": (-1.0, 1.0)}
"""Where a target in each metric can lie (a step reward is -1 on a format violation)."""


@dataclass(frozen=True)
class RouterSettings:
    """How requests are routed. Stored with the table in `serving/router.json`."""

    target: float = 0.5
    """Expected quality a request must clear when it names none, in the table's metric
    (accuracy; mean step reward when the table fell back to it)."""
    prior_strength: float = 4.0
    """Beta-prior weight, in problems, pulling each (family, difficulty) cell toward the tier's
    overall figure: a cell of 2 problems moves little from it, one of 200 is almost its own."""
    cascade: bool = False
    """`Router.answer` cascades (cheapest first, verify, escalate) instead of routing once."""
    tiers: tuple[str, ...] = TIER_NAMES
    """Tiers the router may send traffic to (also skipped: tiers absent from the table or not serving)."""
    serving_price_per_hour: dict[str, float] = field(default_factory=dict)
    """USD/h per tier instead of its `tiers.SERVING` on-demand list price: the rate you pay
    (savings plans, another region)."""

    def __post_init__(self) -> None:
        if isinstance(self.target, bool) or not isinstance(self.target, int | float) or not math.isfinite(self.target):
            raise ValueError(f"router settings: target={self.target!r}; expected a finite number")
        if isinstance(self.prior_strength, bool) or not isinstance(self.prior_strength, int | float) \
                or not math.isfinite(self.prior_strength) or self.prior_strength < 0:
            raise ValueError(f"router settings: prior_strength={self.prior_strength!r}; expected a number >= 0")
        if not self.tiers:
            raise ValueError("router settings: tiers=(): name at least one tier to route to")
        for tier in (*self.tiers, *self.serving_price_per_hour):
            if tier not in TIER_NAMES:
                raise ValueError(f"router settings: tier {tier!r} is unknown; use {', '.join(TIER_NAMES)}")
        for tier, price in self.serving_price_per_hour.items():
            try:
                cost_per_1m_tokens(price, 1.0)
            except ValueError:
                raise ValueError(f"router settings: serving_price_per_hour[{tier!r}]={price!r}; "
                                 "expected USD per hour > 0") from None

    def as_dict(self) -> dict:
        return {**asdict(self), "tiers": list(self.tiers)}

    @classmethod
    def from_dict(cls, data: Mapping) -> RouterSettings:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"router settings: unknown field(s) {sorted(unknown)}; "
                             f"known: {sorted(cls.__dataclass_fields__)}")
        return cls(**{**data, **({"tiers": tuple(data["tiers"])} if "tiers" in data else {})})


@dataclass(frozen=True)
class Candidate:
    """One tier as the router saw it for a request."""

    tier: str
    expected_quality: float
    basis: str
    """What the expectation rests on (the cell and its counts, or the tier's overall figure)."""
    cost_per_1m_tokens: float
    cost_per_request: float
    cleared: bool
    """Expected quality >= the target."""


@dataclass(frozen=True)
class Attempt:
    """One tier's answer in `Router.answer`/`cascade`, with the verifier's verdict (None: not checked)."""

    tier: str
    passed: bool | None
    reason: str | None
    cost_per_request: float


@dataclass(frozen=True)
class Decision:
    """Where one request went and why; `explain()` says it in words, `as_dict()` in JSON."""

    tier: str
    """The tier whose answer is returned."""
    reason: str
    family: str
    difficulty: str | None
    target: float
    metric: str
    met_target: bool
    """Whether the chosen tier's expected quality clears the target."""
    candidates: tuple[Candidate, ...]
    """The tiers considered, cheapest per request first."""
    mode: str = "route"
    """"route" (one choice) or "cascade"."""
    attempts: tuple[Attempt, ...] = ()
    answer: str | None = None

    @property
    def escalated(self) -> bool:
        """A cascade that went past its first tier."""
        return len(self.attempts) > 1

    @property
    def cost(self) -> float:
        """Expected USD spent: every attempt's cost per request (the chosen tier's when none was made)."""
        if self.attempts:
            return sum(a.cost_per_request for a in self.attempts)
        return next(c.cost_per_request for c in self.candidates if c.tier == self.tier)

    def as_dict(self) -> dict:
        return {**asdict(self), "escalated": self.escalated, "cost": self.cost}

    def explain(self) -> str:
        """The decision in words and a markdown table of the candidates (and attempts)."""
        where = self.family + (f" {DIFFICULTY_DIMENSION[self.family]}={self.difficulty}" if self.difficulty else "")
        lines = [f"{where}, target {self.metric} >= {self.target:g}: **{self.tier}**. {self.reason}", "",
                 f"| tier | expected {self.metric} | cleared | $/1M tokens | $/request | basis |",
                 "|---|---:|---|---:|---:|---|"]
        for c in self.candidates:
            lines.append(f"| {c.tier} | {c.expected_quality:.4f} | {'yes' if c.cleared else 'no'} | "
                         f"{c.cost_per_1m_tokens:.2f} | {c.cost_per_request:.6f} | {c.basis} |")
        if self.attempts:
            lines += ["", "| attempt | tier | verified | why |", "|---:|---|---|---|"]
            for i, a in enumerate(self.attempts, 1):
                verified = "not checked" if a.passed is None else "yes" if a.passed else "no"
                lines.append(f"| {i} | {a.tier} | {verified} | {a.reason or ''} |")
        return "\n".join(lines)


def build_router(evaluations: Iterable[TierEvaluation], traces: list[dict],
                 settings: RouterSettings = RouterSettings()) -> Router:
    """A router over a table built with the settings' prior strength and price overrides."""
    return Router(build_table(evaluations, traces, settings.prior_strength, settings.serving_price_per_hour),
                  settings)


def verifier(family: str, reference: str) -> Callable[[str], Verdict]:
    """The family's verifier bound to a request's reference (answer, or a code task's tests)."""
    check = VERIFIERS[_family(family)]
    return lambda text: check(text, reference)


class Router:
    """Routes requests with a `RouterTable` under `RouterSettings`."""

    def __init__(self, table: RouterTable, settings: RouterSettings = RouterSettings()) -> None:
        self.table, self.settings = table, settings
        usable = [e for e in table.tiers.values() if e.tier in settings.tiers and e.serving]
        if not usable:
            raise ValueError(f"no tier to route to: the table has {sorted(table.tiers) or 'none'} "
                             f"(serving: {sorted(e.tier for e in table.tiers.values() if e.serving) or 'none'}), "
                             f"settings allow {list(settings.tiers)}")
        order = {name: i for i, name in enumerate(TIER_NAMES)}
        self._entries: list[TierEntry] = sorted(usable, key=lambda e: (e.cost_per_request, order[e.tier]))
        self._low, self._high = QUALITY_RANGE[table.metric]
        self._expected: dict[tuple[str, str | None], list[tuple[TierEntry, float, str]]] = {}
        """(family, difficulty) → each usable tier's expected quality and basis: the table never changes."""

    @classmethod
    def from_json(cls, text: str | bytes) -> Router:
        """A router from `serving/router.json` ({"settings": …, "table": …})."""
        data = json.loads(text)
        if not isinstance(data, dict) or "table" not in data:
            raise ValueError("router.json: expected an object with 'settings' and 'table'")
        return cls(RouterTable.from_dict(data["table"]), RouterSettings.from_dict(data.get("settings", {})))

    def route(self, family: str, difficulty: str | int | None = None, target: float | None = None) -> Decision:
        """The cheapest tier expected to clear `target` (default `RouterSettings.target`) for a request
        of `family` at `difficulty` (the family's `DIFFICULTY_DIMENSION` value; None: unknown)."""
        family, target = _family(family), self._target(target)
        difficulty = None if difficulty is None else str(difficulty)
        expected = self._expected.get((family, difficulty))
        if expected is None:
            expected = self._expected[(family, difficulty)] = [(e, *e.expected(family, difficulty))
                                                               for e in self._entries]
        candidates = [Candidate(e.tier, quality, basis, e.cost_per_1m_tokens, e.cost_per_request, quality >= target)
                      for e, quality, basis in expected]
        metric = self.table.metric
        chosen = next((c for c in candidates if c.cleared), None)
        if chosen is not None:
            cheaper = [c.tier for c in candidates[: candidates.index(chosen)]]
            reason = (f"the cheapest tier whose expected {metric} ({chosen.expected_quality:.4f}) clears the "
                      f"target, at ${chosen.cost_per_request:.6f} per request"
                      + (f"; cheaper {', '.join(cheaper)} fell short" if cheaper else ""))
        else:
            chosen = max(candidates, key=lambda c: c.expected_quality)  # max keeps the cheapest of ties
            reason = (f"no tier clears the target: {chosen.tier} has the best expected {metric} "
                      f"({chosen.expected_quality:.4f})")
        return Decision(chosen.tier, reason, family, difficulty, target, metric, chosen.cleared, tuple(candidates))

    def cascade(self, family: str, solve: Callable[[str], str], check: Callable[[str], Verdict],
                difficulty: str | int | None = None, target: float | None = None) -> Decision:
        """Try the tiers cheapest first: `solve(tier)` answers, `check(answer)` verifies (see
        `verifier`); stop at the first answer that verifies, else keep the best-quality tier's."""
        planned = self.route(family, difficulty, target)
        attempts, answers = [], {}
        for candidate in planned.candidates:
            answers[candidate.tier] = solve(candidate.tier)
            verdict = check(answers[candidate.tier])
            attempts.append(Attempt(candidate.tier, verdict.ok, verdict.reason, candidate.cost_per_request))
            if verdict.ok:
                break
        last = attempts[-1]
        if last.passed:
            tier = last.tier
            reason = (f"{tier}'s answer verified" + (f" after {len(attempts) - 1} escalation(s): "
                      + ", ".join(f"{a.tier} failed ({a.reason})" for a in attempts[:-1]) if len(attempts) > 1
                      else ", first try"))
        else:
            best = max(planned.candidates, key=lambda c: c.expected_quality)
            tier = best.tier
            reason = f"no tier's answer verified; keeping {tier}'s, the best expected {planned.metric}"
        chosen = next(c for c in planned.candidates if c.tier == tier)
        return Decision(tier, reason, planned.family, planned.difficulty, planned.target, planned.metric,
                        chosen.cleared, planned.candidates, "cascade", tuple(attempts), answers[tier])

    def answer(self, family: str, solve: Callable[[str], str], check: Callable[[str], Verdict] | None = None,
               difficulty: str | int | None = None, target: float | None = None) -> Decision:
        """Answer a request: a cascade when `RouterSettings.cascade` (then `check` is required),
        else the routed tier once (its answer verified when `check` is given)."""
        if self.settings.cascade:
            if check is None:
                raise ValueError(f"cascade routing of a {family} request needs a check: give "
                                 "verifier(family, reference) (the answer or the tests it must pass)")
            return self.cascade(family, solve, check, difficulty, target)
        decision = self.route(family, difficulty, target)
        text = solve(decision.tier)
        verdict = check(text) if check is not None else None
        cost = next(c.cost_per_request for c in decision.candidates if c.tier == decision.tier)
        attempt = Attempt(decision.tier, verdict.ok if verdict else None, verdict.reason if verdict else None, cost)
        return replace(decision, attempts=(attempt,), answer=text)

    def _target(self, target: float | None) -> float:
        value = self.settings.target if target is None else target
        if isinstance(value, bool) or not isinstance(value, int | float) or not self._low <= value <= self._high:
            raise ValueError(f"target={value!r}: must be a number in [{self._low:g}, {self._high:g}] "
                             f"(the table's metric is {self.table.metric})")
        return float(value)


def _family(family: str) -> str:
    if family not in FAMILY_NAMES:
        raise ValueError(f"family={family!r} is unknown; use one of {', '.join(FAMILY_NAMES)}")
    return family
