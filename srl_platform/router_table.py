"""The router table: each tier's expected quality per (task family, difficulty) and its serving cost.

Built from what the quality reports measured on held-out problems (`build_table`), so the router
(`srl_platform.router`) decides without any model call:

- **Quality** is accuracy (share of held-out problems whose final answer verifies) per cell of
  (task family, difficulty), where difficulty is one dimension of the family
  (`DIFFICULTY_DIMENSION`: arithmetic `num_ops`, code `num_tests`, gsm8k/s1k `num_steps`), from the
  per-problem `results` of the tier's evaluation joined with the held-out traces. A small cell says
  little, so each is smoothed toward the tier's overall accuracy p with a Beta prior worth
  `prior_strength` (k) problems: expected = (correct + k·p) / (n + k). Every family also has an
  "all difficulties" cell (`ALL`), used for a difficulty no held-out problem had.
- **Fallback metric.** When no tier solved even `QualityGate.min_teacher_correct` held-out problems,
  accuracy is 0 everywhere and cannot tell tiers apart; the table then uses the quality gate's own
  fallback, the mean step reward (`srl_platform.quality`), and records which metric and why. The
  reports carry step rewards per tier only, not per problem, so under that metric every cell is the
  tier's overall figure (the table says so). One metric for the whole table, so one target means
  the same thing for every candidate.
- **Cost** per 1M generated tokens = serving price per hour / (measured tokens/s × 3600) × 1e6
  (`cost_per_1m_tokens`), from the tier's serving instance price (`tiers.SERVING`, an on-demand
  list price, overridable) and the evaluation's measured `solve_tokens_per_second`; per request, that
  times the tier's mean output tokens. Tiers are ranked by the cost per request: a tier that writes
  twice as much costs twice as much per answer at the same price per token.

Pure functions and JSON-ready dataclasses; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from srl_platform.quality import QualityGate
from srl_platform.tasks import FAMILY_NAMES, GENERATED, get_family
from srl_platform.tasks import math as math_tasks
from srl_platform.tiers import TIER_NAMES, get_serving, get_tier

DIFFICULTY_DIMENSION: dict[str, str] = {"arithmetic": "num_ops", "code": "num_tests",
                                        "gsm8k": "num_steps", "s1k": "num_steps"}
"""The task-family dimension that says how hard a problem is."""
ALL = "*"
"""The difficulty key of a family's cell over all its difficulties."""
TABLE_VERSION = 1
NEEDED = ("accuracy", "mean_step_reward", "solve_tokens_per_second", "mean_solve_tokens")
"""Figures every tier's evaluation must have."""


def cost_per_1m_tokens(price_per_hour: float, tokens_per_second: float) -> float:
    """USD per 1M generated tokens on an instance of `price_per_hour` generating `tokens_per_second`."""
    for name, value in (("price_per_hour", price_per_hour), ("tokens_per_second", tokens_per_second)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}={value!r}: must be a finite number > 0")
    return price_per_hour / (tokens_per_second * 3600) * 1e6


def difficulty_of(family: str, trace: dict) -> str:
    """The value of the family's difficulty dimension on a labelled trace (e.g. num_ops "3")."""
    if family in GENERATED:
        return get_family(family).dims(trace)[DIFFICULTY_DIMENSION[family]]
    return math_tasks.num_steps_bucket(trace)


def family_of(trace: dict) -> str | None:
    """The task family a trace says it belongs to (`meta.family`), or None when it names none we know."""
    family = (trace.get("meta") or {}).get("family")
    return family if family in FAMILY_NAMES else None


@dataclass(frozen=True)
class TierEvaluation:
    """One tier's measured figures as the router reads them."""

    tier: str
    evaluation: dict
    """An evaluation report (`srl_platform.evaluate`): `NEEDED` figures and per-problem `results`."""
    source: str
    """Where the figures come from: the quality report's URI and which side (student or teacher)."""
    serving: bool = True
    """Whether the tier takes traffic (a student tier with no approved version does not)."""
    note: str = ""
    """Why it serves or not, and which version."""


@dataclass(frozen=True)
class Cell:
    problems: int
    correct: int
    expected: float
    """Smoothed expected quality: (correct + k·overall) / (problems + k)."""


@dataclass(frozen=True)
class TierEntry:
    """A tier's row of the table."""

    tier: str
    overall: float
    """The tier's overall figure in the table's metric."""
    accuracy: float
    correct: int
    problems: int
    """Held-out problems with a per-problem result used here (0 when the report had none)."""
    mean_step_reward: float
    tokens_per_second: float
    mean_output_tokens: float
    serving_instance_type: str
    serving_price_per_hour: float
    price_source: str
    """"list price" (`tiers.SERVING`) or "override"."""
    cost_per_1m_tokens: float
    cost_per_request: float
    """cost_per_1m_tokens × mean_output_tokens / 1e6."""
    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)
    """family → difficulty (or `ALL`) → cell; empty under the fallback metric."""
    source: str = ""
    serving: bool = True
    note: str = ""

    def expected(self, family: str, difficulty: str | None) -> tuple[float, str]:
        """(expected quality, what it rests on) for a request."""
        cells = self.cells.get(family)
        if cells is None:
            return self.overall, "tier overall (no held-out problem of this family)" if self.cells else "tier overall"
        dimension = DIFFICULTY_DIMENSION[family]
        cell = cells.get(difficulty) if difficulty is not None else None
        if cell is not None:
            return cell.expected, f"{family} {dimension}={difficulty}: {cell.correct}/{cell.problems} solved, smoothed"
        cell = cells[ALL]
        why = "no difficulty given" if difficulty is None else f"no held-out problem at {dimension}={difficulty}"
        return cell.expected, f"{family}, all difficulties ({why}): {cell.correct}/{cell.problems} solved, smoothed"


@dataclass(frozen=True)
class RouterTable:
    """Every tier's expected quality and cost; `as_dict`/`from_dict` round-trip through JSON."""

    metric: str
    """"accuracy" or "mean_step_reward" (the fallback)."""
    metric_why: str
    prior_strength: float
    tiers: dict[str, TierEntry]
    difficulty_dimensions: dict[str, str] = field(default_factory=lambda: dict(DIFFICULTY_DIMENSION))
    unmatched_results: int = 0
    """Per-problem results whose id is not among the held-out traces (another data version): skipped."""
    version: int = TABLE_VERSION

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> RouterTable:
        """The table back from `as_dict`'s JSON; a missing or ill-typed field is named with its value."""
        top = _mapping(data, "router table")
        if top.get("version") != TABLE_VERSION:
            raise ValueError(f"router table: version={top.get('version')!r}, this code reads version "
                             f"{TABLE_VERSION}; rebuild it (materialize router_settings)")
        metric = _get(top, "router table", "metric", str)
        if metric not in ("accuracy", "mean_step_reward"):
            raise ValueError(f"router table: metric={metric!r}; expected 'accuracy' or 'mean_step_reward'")
        tiers = {}
        for name, raw in _mapping(top.get("tiers"), "router table: tiers").items():
            where = f"router table: tiers.{name}"
            entry = _mapping(raw, where)
            numbers = {key: _number(entry, where, key) for key in (
                "overall", "accuracy", "mean_step_reward", "tokens_per_second", "mean_output_tokens",
                "serving_price_per_hour", "cost_per_1m_tokens", "cost_per_request")}
            cells = {family: {difficulty: Cell(**{k: _get(_mapping(cell, f"{where}.cells.{family}.{difficulty}"),
                                                          f"{where}.cells.{family}.{difficulty}", k,
                                                          float if k == "expected" else int)
                                                  for k in ("problems", "correct", "expected")})
                              for difficulty, cell in _mapping(by_difficulty, f"{where}.cells.{family}").items()}
                     for family, by_difficulty in _mapping(entry.get("cells", {}), f"{where}.cells").items()}
            tiers[name] = TierEntry(
                tier=_get(entry, where, "tier", str), correct=_get(entry, where, "correct", int),
                problems=_get(entry, where, "problems", int),
                serving_instance_type=_get(entry, where, "serving_instance_type", str),
                price_source=_get(entry, where, "price_source", str), cells=cells,
                source=_get(entry, where, "source", str), serving=_get(entry, where, "serving", bool),
                note=_get(entry, where, "note", str), **numbers)
        return cls(metric=metric, metric_why=_get(top, "router table", "metric_why", str),
                   prior_strength=_number(top, "router table", "prior_strength"), tiers=tiers,
                   difficulty_dimensions=dict(_mapping(top.get("difficulty_dimensions", DIFFICULTY_DIMENSION),
                                                       "router table: difficulty_dimensions")),
                   unmatched_results=_get(top, "router table", "unmatched_results", int))

    def markdown(self) -> str:
        """Per tier: metric, problems, cost per 1M tokens and per request, instance and price."""
        lines = [f"| tier | serving | {self.metric} | problems | tokens/s | $/1M tokens | $/request | "
                 "instance ($/h) |", "|---|---|---:|---:|---:|---:|---:|---|"]
        for entry in self.tiers.values():
            lines.append(f"| {entry.tier} | {'yes' if entry.serving else 'no'} | {entry.overall:.4f} | "
                         f"{entry.problems} | {entry.tokens_per_second:.1f} | {entry.cost_per_1m_tokens:.2f} | "
                         f"{entry.cost_per_request:.6f} | {entry.serving_instance_type} "
                         f"({entry.serving_price_per_hour:g}, {entry.price_source}) |")
        return "\n".join(lines) + f"\n\nMetric: {self.metric} ({self.metric_why})."

    def cells_markdown(self) -> str:
        """Expected quality per (family, difficulty) and tier."""
        names = list(self.tiers)
        keys = sorted({(family, difficulty) for entry in self.tiers.values()
                       for family, cells in entry.cells.items() for difficulty in cells},
                      key=lambda k: (k[0], k[1] == ALL, k[1]))
        if not keys:
            return f"_no per-problem cells: every request gets each tier's overall {self.metric}_"
        lines = ["| family | difficulty | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
        for family, difficulty in keys:
            label = "all" if difficulty == ALL else f"{self.difficulty_dimensions.get(family, '?')}={difficulty}"
            values = []
            for name in names:
                cell = self.tiers[name].cells.get(family, {}).get(difficulty)
                values.append(f"{cell.expected:.3f} ({cell.correct}/{cell.problems})" if cell else "–")
            lines.append(f"| {family} | {label} | " + " | ".join(values) + " |")
        return "\n".join(lines)


def build_table(evaluations: Iterable[TierEvaluation], traces: list[dict], prior_strength: float = 4.0,
                prices: Mapping[str, float] | None = None, gate: QualityGate = QualityGate()) -> RouterTable:
    """The table from each tier's evaluation and the held-out traces its results were computed on.
    `prices`: USD/h per tier overriding its `tiers.SERVING` list price."""
    if isinstance(prior_strength, bool) or not isinstance(prior_strength, int | float) \
            or not math.isfinite(prior_strength) or prior_strength < 0:
        raise ValueError(f"prior_strength={prior_strength!r}: must be a finite number >= 0")
    evaluations = list(evaluations)
    if not evaluations:
        raise ValueError("no tier evaluation to build a router table from: materialize quality_report first")
    by_id = {t["id"]: t for t in traces}
    labelled, unmatched = {}, 0
    for ev in evaluations:
        _check_evaluation(ev)
        rows = []
        for result in ev.evaluation.get("results") or []:
            trace = by_id.get(result["id"])
            if trace is None:
                unmatched += 1
                continue
            family = family_of(trace)
            rows.append((family, difficulty_of(family, trace) if family else None, bool(result["correct"])))
        labelled[ev.tier] = rows
    best = max(sum(c for _, _, c in labelled[ev.tier]) if labelled[ev.tier] else int(ev.evaluation.get("correct", 0))
               for ev in evaluations)
    if best >= gate.min_teacher_correct:
        metric, why = gate.metric, f"a tier solved {best} held-out problems (>= {gate.min_teacher_correct})"
    else:
        metric = gate.fallback_metric
        why = (f"no tier solved at least {gate.min_teacher_correct} held-out problem(s) (best: {best}): accuracy is 0 "
               f"everywhere, so the table uses the quality gate's fallback, {metric}; the reports hold it "
               "per tier, not per problem, so each tier has one figure for every request")
    tiers = {ev.tier: _entry(ev, labelled[ev.tier], metric, prior_strength, (prices or {}).get(ev.tier))
             for ev in evaluations}
    return RouterTable(metric=metric, metric_why=why, prior_strength=float(prior_strength), tiers=tiers,
                       unmatched_results=unmatched)


def evaluations_from_quality_reports(reports: Mapping[str, dict], sources: Mapping[str, str] | None = None
                                     ) -> dict[str, TierEvaluation]:
    """Each tier's evaluation from the student tiers' quality reports (keyed by student tier): a
    report holds its student and its teacher (silver's: bronze and silver; gold's: silver and gold).
    A tier's own report wins over its appearance as another's teacher."""
    found: dict[str, TierEvaluation] = {}
    for tier, report in reports.items():
        where = (sources or {}).get(tier, f"quality report of {tier}")
        for side in ("student", "teacher"):
            name = report.get("tier") if side == "student" else report.get("teacher_tier")
            if name not in TIER_NAMES:
                raise ValueError(f"{where}: {'tier' if side == 'student' else 'teacher_tier'}={name!r}; "
                                 f"expected one of {', '.join(TIER_NAMES)}")
            if not isinstance(report.get(side), dict):
                raise ValueError(f"{where}: field {side!r} is {report.get(side)!r}, expected an evaluation report")
            if side == "student" or name not in found:
                found[name] = TierEvaluation(name, report[side], f"{where} ({side})")
    return found


def _entry(ev: TierEvaluation, rows: list[tuple[str | None, str | None, bool]], metric: str,
           prior: float, price_override: float | None) -> TierEntry:
    figures = ev.evaluation
    spec = get_serving(ev.tier)
    price = spec.price_per_hour if price_override is None else price_override
    try:
        per_million = cost_per_1m_tokens(price, figures["solve_tokens_per_second"])
    except ValueError as error:
        raise ValueError(f"{ev.source}: tier {ev.tier}: {error}") from None
    correct = sum(c for _, _, c in rows)
    accuracy = correct / len(rows) if rows else float(figures["accuracy"])
    cells: dict[str, dict[str, Cell]] = {}
    if metric == "accuracy":
        counts: dict[str, dict[str, list[int]]] = {}
        for family, difficulty, ok in rows:
            if family is None:
                continue
            for key in (difficulty, ALL):
                tally = counts.setdefault(family, {}).setdefault(key, [0, 0])
                tally[0] += 1
                tally[1] += ok
        cells = {family: {key: Cell(n, c, (c + prior * accuracy) / (n + prior)) for key, (n, c) in sorted(by.items())}
                 for family, by in sorted(counts.items())}
    return TierEntry(
        tier=ev.tier, overall=accuracy if metric == "accuracy" else float(figures["mean_step_reward"]),
        accuracy=accuracy, correct=correct if rows else int(figures.get("correct", 0)), problems=len(rows),
        mean_step_reward=float(figures["mean_step_reward"]),
        tokens_per_second=float(figures["solve_tokens_per_second"]),
        mean_output_tokens=float(figures["mean_solve_tokens"]),
        serving_instance_type=spec.instance_type, serving_price_per_hour=float(price),
        price_source="list price" if price_override is None else "override",
        cost_per_1m_tokens=per_million, cost_per_request=per_million * float(figures["mean_solve_tokens"]) / 1e6,
        cells=cells, source=ev.source, serving=ev.serving, note=ev.note)


def _check_evaluation(ev: TierEvaluation) -> None:
    get_tier(ev.tier)
    for key in NEEDED:
        value = ev.evaluation.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{ev.source}: tier {ev.tier}: field {key!r} is {value!r}; expected a finite "
                             "number (re-run quality_report)")
    results = ev.evaluation.get("results")
    if results is None:
        return
    if not isinstance(results, list):
        raise ValueError(f"{ev.source}: tier {ev.tier}: field 'results' is {results!r}; expected a list")
    for i, result in enumerate(results):
        if not isinstance(result, dict) or not isinstance(result.get("id"), str) \
                or not isinstance(result.get("correct"), bool):
            raise ValueError(f"{ev.source}: tier {ev.tier}: results[{i}] = {result!r}; expected "
                             "{'id': str, 'correct': bool}")


def _mapping(value: object, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: {value!r} is not a JSON object")
    return value


def _get(data: Mapping, where: str, key: str, kind: type):
    value = data.get(key)
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"{where}: field {key!r} is {value!r}; expected {kind.__name__}")
    return float(value) if kind is float else value


def _number(data: Mapping, where: str, key: str) -> float:
    return _get(data, where, key, float)
