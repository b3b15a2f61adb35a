"""The cost-benefit router: decisions, smoothing, the fallback metric, the cost formula, explanations,
cascade escalation with the arithmetic family's real verifier, JSON round trips and bad input.

Tiers are synthetic evaluations over generated arithmetic traces whose skill is set by difficulty
(bronze solves every problem, silver those of <= 4 operations, gold those of <= 2), so every
expected figure can be computed by hand. No model is loaded.
"""

from __future__ import annotations

import json
import math

import pytest

from srl_platform.router import Router, RouterSettings, build_router, verifier
from srl_platform.router_table import (
    ALL,
    RouterTable,
    TierEvaluation,
    build_table,
    cost_per_1m_tokens,
    difficulty_of,
    evaluations_from_quality_reports,
)
from srl_platform.tasks.arithmetic import generate_traces
from srl_platform.tiers import get_serving

TRACES = generate_traces(120, seed=3)
SKILL = {"bronze": 5, "silver": 4, "gold": 2}
"""Each tier solves exactly the problems with at most this many operations."""


def ops(trace: dict) -> int:
    return trace["meta"]["num_ops"]


def evaluation(tier: str, solves=None, tps: float = 80.0, tokens: float = 150.0, step_reward: float = 0.3,
               serving: bool = True) -> TierEvaluation:
    solves = solves or (lambda t: ops(t) <= SKILL[tier])
    results = [{"id": t["id"], "correct": bool(solves(t))} for t in TRACES]
    correct = sum(r["correct"] for r in results)
    return TierEvaluation(tier, {"accuracy": correct / len(results), "correct": correct, "problems": len(results),
                                 "mean_step_reward": step_reward, "solve_tokens_per_second": tps,
                                 "mean_solve_tokens": tokens, "results": results}, f"test {tier}", serving)


def tiers(**overrides) -> list[TierEvaluation]:
    return [overrides.get(name) or evaluation(name) for name in ("bronze", "silver", "gold")]


def count(predicate) -> int:
    return sum(1 for t in TRACES if predicate(t))


def test_cost_per_1m_tokens_is_the_hourly_price_over_the_tokens_an_hour_generates():
    assert cost_per_1m_tokens(3.6, 1.0) == pytest.approx(1000.0)
    table = build_table(tiers(gold=evaluation("gold", tps=50.0, tokens=200.0)), TRACES)
    gold = table.tiers["gold"]
    spec = get_serving("gold")
    assert (gold.serving_instance_type, gold.serving_price_per_hour) == (spec.instance_type, spec.price_per_hour)
    assert gold.price_source == "list price"
    assert gold.cost_per_1m_tokens == pytest.approx(spec.price_per_hour / (50.0 * 3600) * 1e6)
    assert gold.cost_per_request == pytest.approx(gold.cost_per_1m_tokens * 200.0 / 1e6)
    # The list prices rank the tiers by size: the largest model costs the most to serve.
    assert table.tiers["bronze"].cost_per_request > table.tiers["silver"].cost_per_request > gold.cost_per_request

    overridden = build_table(tiers(), TRACES, prices={"gold": 0.36}).tiers["gold"]
    assert overridden.price_source == "override"
    assert overridden.cost_per_1m_tokens == pytest.approx(0.36 / (80.0 * 3600) * 1e6)
    with pytest.raises(ValueError, match=r"price_per_hour=0: must be a finite number > 0"):
        cost_per_1m_tokens(0, 10.0)
    with pytest.raises(ValueError, match=r"tokens_per_second=nan"):
        cost_per_1m_tokens(1.0, float("nan"))


def test_each_difficulty_goes_to_the_cheapest_tier_whose_expected_accuracy_clears_the_target():
    router = build_router(tiers(), TRACES, RouterSettings(target=0.7, prior_strength=0.0))
    assert {n: router.route("arithmetic", n).tier for n in (2, 3, 4, 5)} == {
        2: "gold", 3: "silver", 4: "silver", 5: "bronze"}
    decision = router.route("arithmetic", "3")
    assert [c.tier for c in decision.candidates] == ["gold", "silver", "bronze"]  # cheapest per request first
    assert [c.cleared for c in decision.candidates] == [False, True, True]
    assert [c.expected_quality for c in decision.candidates] == [0.0, 1.0, 1.0]
    assert decision.met_target and decision.metric == "accuracy" and decision.difficulty == "3"
    assert "cheapest tier whose expected accuracy (1.0000) clears the target" in decision.reason
    assert "cheaper gold fell short" in decision.reason
    # The caller's target decides: at 0 every tier clears, so the cheapest wins.
    assert router.route("arithmetic", 5, target=0.0).tier == "gold"


def test_when_no_tier_clears_the_best_quality_tier_is_chosen_and_the_decision_says_so():
    router = build_router(tiers(), TRACES, RouterSettings(target=0.7, tiers=("gold", "silver")))
    decision = router.route("arithmetic", 5)
    assert decision.tier == "silver"  # both solved 0 at 5 ops; smoothed, silver's higher overall wins
    assert not decision.met_target and not any(c.cleared for c in decision.candidates)
    assert decision.reason.startswith("no tier clears the target: silver has the best expected accuracy")


def test_small_cells_are_smoothed_toward_the_tiers_overall_accuracy_with_a_beta_prior():
    k = 4.0
    table = build_table(tiers(), TRACES, prior_strength=k)
    gold = table.tiers["gold"]
    p = count(lambda t: ops(t) <= 2) / len(TRACES)
    n3 = count(lambda t: ops(t) == 3)
    assert gold.overall == pytest.approx(p) and gold.problems == len(TRACES)
    cell = gold.cells["arithmetic"]["3"]
    assert (cell.problems, cell.correct) == (n3, 0)
    assert cell.expected == pytest.approx((0 + k * p) / (n3 + k))  # raw 0.0, pulled up toward p
    assert gold.cells["arithmetic"]["2"].expected == pytest.approx((count(lambda t: ops(t) == 2) + k * p)
                                                                   / (count(lambda t: ops(t) == 2) + k))
    assert gold.cells["arithmetic"][ALL].expected == pytest.approx(p)  # the whole family is the prior itself
    assert build_table(tiers(), TRACES, prior_strength=0).tiers["gold"].cells["arithmetic"]["3"].expected == 0.0

    router = Router(table, RouterSettings(prior_strength=k))
    quality, basis = table.tiers["gold"].expected("arithmetic", "3")
    assert basis == f"arithmetic num_ops=3: 0/{n3} solved, smoothed"
    # A difficulty no held-out problem had falls back to the family's cell; a family with none, to the tier.
    unseen = router.route("arithmetic", 9).candidates[0]
    assert unseen.expected_quality == pytest.approx(p)
    assert "no held-out problem at num_ops=9" in unseen.basis
    assert router.route("code").candidates[0].basis == "tier overall (no held-out problem of this family)"


def test_zero_accuracy_everywhere_falls_back_to_the_gates_mean_step_reward_and_says_so():
    never = lambda t: False  # noqa: E731
    table = build_table([evaluation("bronze", never, step_reward=0.35), evaluation("silver", never, step_reward=0.3),
                         evaluation("gold", never, step_reward=0.2)], TRACES)
    assert table.metric == "mean_step_reward"
    assert "no tier solved at least 1 held-out problem(s) (best: 0)" in table.metric_why
    assert "per tier, not per problem" in table.metric_why
    assert all(entry.cells == {} for entry in table.tiers.values())
    assert {t: e.overall for t, e in table.tiers.items()} == {"bronze": 0.35, "silver": 0.3, "gold": 0.2}
    router = Router(table)
    assert router.route("arithmetic", 3, target=0.25).tier == "silver"  # gold's 0.2 falls short
    decision = router.route("arithmetic", 3, target=0.5)
    assert (decision.tier, decision.met_target, decision.metric) == ("bronze", False, "mean_step_reward")
    assert router.route("arithmetic", target=-0.5).tier == "gold"  # step rewards reach down to -1
    with pytest.raises(ValueError, match=r"target=1.5: must be a number in \[-1, 1\] \(the table's metric is "
                                         r"mean_step_reward\)"):
        router.route("arithmetic", target=1.5)

    # One solved problem is enough for accuracy to tell tiers apart (the gate's min_teacher_correct).
    first = TRACES[0]["id"]
    one = build_table([evaluation("bronze", lambda t: t["id"] == first), evaluation("gold", never)], TRACES)
    assert one.metric == "accuracy" and "a tier solved 1 held-out problems" in one.metric_why
    with pytest.raises(ValueError, match=r"target=-0.1: must be a number in \[0, 1\] \(the table's metric is "
                                         r"accuracy\)"):
        Router(one).route("arithmetic", target=-0.1)


def test_every_decision_explains_each_candidates_quality_cost_and_verdict():
    router = build_router(tiers(), TRACES, RouterSettings(target=0.7))
    decision = router.route("arithmetic", 4)
    text = decision.explain()
    assert text.startswith("arithmetic num_ops=4, target accuracy >= 0.7: **silver**.")
    for c in decision.candidates:
        assert (f"| {c.tier} | {c.expected_quality:.4f} | {'yes' if c.cleared else 'no'} | "
                f"{c.cost_per_1m_tokens:.2f} | {c.cost_per_request:.6f} | {c.basis} |") in text
    as_json = json.loads(json.dumps(decision.as_dict()))
    assert as_json["tier"] == "silver" and as_json["escalated"] is False
    assert as_json["cost"] == pytest.approx(router.table.tiers["silver"].cost_per_request)
    assert [c["tier"] for c in as_json["candidates"]] == ["gold", "silver", "bronze"]


def test_cascade_tries_the_cheapest_tier_first_and_escalates_when_the_verifier_rejects_its_answer():
    problem = next(t for t in TRACES if ops(t) == 3)
    router = build_router(tiers(), TRACES, RouterSettings(target=0.9, cascade=True))
    calls = []

    def solve(tier: str) -> str:
        calls.append(tier)
        return problem["solution"] if tier != "gold" else f"{problem['answer']} + 1 = 0, so I am unsure."

    decision = router.answer("arithmetic", solve, verifier("arithmetic", problem["answer"]), difficulty=3)
    assert calls == ["gold", "silver"]  # bronze was never asked
    assert [(a.tier, a.passed, a.reason) for a in decision.attempts] == [
        ("gold", False, "wrong_arithmetic"), ("silver", True, None)]
    assert decision.mode == "cascade" and decision.escalated and decision.tier == "silver"
    assert decision.answer == problem["solution"]
    assert decision.cost == pytest.approx(router.table.tiers["gold"].cost_per_request
                                          + router.table.tiers["silver"].cost_per_request)
    assert "after 1 escalation(s): gold failed (wrong_arithmetic)" in decision.reason
    assert "| 1 | gold | no | wrong_arithmetic |" in decision.explain()

    check = verifier("arithmetic", problem["answer"])
    first_try = router.cascade("arithmetic", lambda tier: problem["solution"], check)
    assert [a.tier for a in first_try.attempts] == ["gold"] and not first_try.escalated

    nobody = router.cascade("arithmetic", lambda tier: "I do not know.", verifier("arithmetic", problem["answer"]), 3)
    assert [a.reason for a in nobody.attempts] == ["answer_mismatch"] * 3
    assert nobody.tier == "bronze" and nobody.reason.startswith("no tier's answer verified; keeping bronze's")

    with pytest.raises(ValueError, match="cascade routing of a arithmetic request needs a check"):
        router.answer("arithmetic", solve)
    once = Router(router.table, RouterSettings(target=0.9)).answer(
        "arithmetic", solve, verifier("arithmetic", problem["answer"]), difficulty=3)
    assert once.mode == "route" and [(a.tier, a.passed) for a in once.attempts] == [("silver", True)]
    assert not once.escalated


def test_tiers_not_serving_or_not_allowed_get_no_traffic():
    router = build_router(tiers(gold=evaluation("gold", serving=False)), TRACES, RouterSettings(target=0.5))
    decision = router.route("arithmetic", 2)
    assert decision.tier == "silver" and "gold" not in [c.tier for c in decision.candidates]
    assert build_router(tiers(), TRACES, RouterSettings(tiers=("bronze",))).route("arithmetic", 2).tier == "bronze"
    with pytest.raises(ValueError, match=r"no tier to route to: .*serving: \['bronze', 'silver'\].*allow \['gold'\]"):
        build_router(tiers(gold=evaluation("gold", serving=False)), TRACES, RouterSettings(tiers=("gold",)))


def test_the_table_and_settings_round_trip_through_json_and_route_the_same():
    settings = RouterSettings(target=0.7, cascade=True, serving_price_per_hour={"silver": 5.0})
    router = build_router(tiers(), TRACES, settings)
    text = json.dumps({"settings": settings.as_dict(), "table": router.table.as_dict()})
    loaded = Router.from_json(text)
    assert loaded.table == router.table and loaded.settings == settings
    assert loaded.table.tiers["silver"].price_source == "override"
    for n in (2, 3, 4, 5, None):
        assert loaded.route("arithmetic", n) == router.route("arithmetic", n)

    broken = json.loads(text)["table"]
    del broken["tiers"]["gold"]["cost_per_request"]
    with pytest.raises(ValueError, match=r"router table: tiers.gold: field 'cost_per_request' is None; expected float"):
        RouterTable.from_dict(broken)
    broken = json.loads(text)["table"]
    broken["tiers"]["gold"]["cells"]["arithmetic"]["2"]["problems"] = "many"
    with pytest.raises(ValueError, match=r"tiers.gold.cells.arithmetic.2: field 'problems' is 'many'; expected int"):
        RouterTable.from_dict(broken)
    with pytest.raises(ValueError, match=r"router table: version=None, this code reads version 1"):
        RouterTable.from_dict({**json.loads(text)["table"], "version": None})


def test_bad_input_is_refused_with_the_record_field_and_value():
    bad = evaluation("gold")
    bad.evaluation["solve_tokens_per_second"] = float("nan")
    with pytest.raises(ValueError, match=r"test gold: tier gold: field 'solve_tokens_per_second' is nan"):
        build_table(tiers(gold=bad), TRACES)
    bad = evaluation("silver")
    bad.evaluation["results"] = [{"id": 5, "correct": True}]
    with pytest.raises(ValueError, match=r"test silver: tier silver: results\[0\] = \{'id': 5, 'correct': True\}"):
        build_table(tiers(silver=bad), TRACES)
    with pytest.raises(ValueError, match="prior_strength=-1"):
        build_table(tiers(), TRACES, prior_strength=-1)
    with pytest.raises(ValueError, match="no tier evaluation"):
        build_table([], TRACES)

    router = build_router(tiers(), TRACES)
    with pytest.raises(ValueError, match=r"family='arithmatic' is unknown"):
        router.route("arithmatic", 2)
    with pytest.raises(ValueError, match=r"target=nan"):
        router.route("arithmetic", 2, target=math.nan)
    with pytest.raises(ValueError, match=r"tier 'platinum' is unknown"):
        RouterSettings(tiers=("platinum",))
    with pytest.raises(ValueError, match=r"serving_price_per_hour\['gold'\]=-1; expected USD per hour > 0"):
        RouterSettings(serving_price_per_hour={"gold": -1})
    with pytest.raises(ValueError, match=r"prior_strength=-2"):
        RouterSettings(prior_strength=-2)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['targt'\]"):
        RouterSettings.from_dict({"targt": 0.5})
    report = {"tier": "silver", "teacher_tier": "copper", "student": {}, "teacher": {}}
    with pytest.raises(ValueError, match=r"reports/silver.json: teacher_tier='copper'"):
        evaluations_from_quality_reports({"silver": report}, {"silver": "reports/silver.json"})
    with pytest.raises(ValueError, match=r"field 'student' is None, expected an evaluation report"):
        evaluations_from_quality_reports({"gold": {"tier": "gold", "teacher_tier": "silver"}})


def test_quality_reports_give_every_tier_once_with_a_tiers_own_report_first():
    silver_side = {"accuracy": 0.5}
    reports = {"silver": {"tier": "silver", "teacher_tier": "bronze", "student": silver_side,
                          "teacher": {"accuracy": 0.6}},
               "gold": {"tier": "gold", "teacher_tier": "silver", "student": {"accuracy": 0.4},
                        "teacher": {"accuracy": 0.55}}}
    found = evaluations_from_quality_reports(reports, {"silver": "s.json", "gold": "g.json"})
    assert {t: (e.evaluation["accuracy"], e.source) for t, e in found.items()} == {
        "bronze": (0.6, "s.json (teacher)"), "silver": (0.5, "s.json (student)"), "gold": (0.4, "g.json (student)")}
    only_gold = evaluations_from_quality_reports({"gold": reports["gold"]})
    assert only_gold["silver"].source == "quality report of gold (teacher)"


def test_difficulty_is_the_familys_own_dimension():
    trace = next(t for t in TRACES if ops(t) == 4)
    assert difficulty_of("arithmetic", trace) == "4"
    gsm8k = {"solution": "1. **a**: 1 + 1 = 2.\n2. **b**: 2 + 2 = 4.\n3. **c**: 4 + 4 = 8."}
    assert difficulty_of("gsm8k", gsm8k) == "3"
    # Results for problems the traces do not hold (another data version) are skipped and counted.
    stray = evaluation("gold")
    stray.evaluation["results"].append({"id": "arithmetic-not-held-out", "correct": True})
    assert build_table(tiers(gold=stray), TRACES).unmatched_results == 1
