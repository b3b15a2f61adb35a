"""CloudWatch dashboards, cost alarms and an AWS Budget for the platform's metrics, set up idempotently.

`apply_monitoring(plan, cloudwatch, budgets, account_id)` makes AWS match a `MonitoringPlan`:

- dashboards `{namespace}-training`, `-cost` and `-performance` (`put_dashboard`), their widgets on
  the metrics of `srl_platform.monitoring`. Per-run metrics carry `tier`, `asset` and `job`, so the
  widgets use `SEARCH` over that dimension set; the rolled-up ones (`tier` alone) are drawn directly.
- alarms (`put_metric_alarm`): `{namespace}-training-cost-{tier}`, the day's summed
  `TrainingCostEstimate` of a tier over `training_cost_alarm_usd`; `{namespace}-serving-errors-{tier}`,
  `ServingErrors / ServingRequests` over `serving_error_rate_alarm` in 2 of 3 five-minute periods.
  Missing data is not breaching: a tier that trained or served nothing is fine.
- a monthly COST budget on the plan's services, with a notification at `budget_alert_percent` of
  actual spend to an e-mail address or an SNS topic.

Each resource is read first and written only when it differs from the plan, so a second run writes
nothing and reports every resource `unchanged`. `create_budget` refuses an existing name
(DuplicateRecordException): an existing budget is compared and updated with `update_budget`, and a
missing notification is added with `create_notification`. A notification's subscribers are set when
it is created; change the threshold (or delete the notification) to change who is told.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from srl_platform.tiers import TIER_NAMES

HOUR, DAY = 3600, 86400


@dataclass(frozen=True)
class MonitoringPlan:
    """What `apply_monitoring` sets up."""

    region: str
    """The dashboards' region (a CloudWatch widget names one)."""
    namespace: str = "srl-platform"
    tiers: tuple[str, ...] = TIER_NAMES
    training_cost_alarm_usd: float = 100.0
    """A tier's estimated training cost over one day above which its alarm fires."""
    serving_error_rate_alarm: float = 0.05
    """Share of failed requests (0-1) above which a tier's serving alarm fires."""
    monthly_budget_usd: float = 1000.0
    budget_name: str = "srl-platform-monthly"
    budget_services: tuple[str, ...] = ("Amazon SageMaker",)
    """Cost Explorer service names the budget counts (empty: the whole account)."""
    budget_alert_percent: float = 80.0
    notify_email: str | None = None
    notify_sns_topic_arn: str | None = None
    """Alarm actions go to this topic; the budget notification to it and/or to `notify_email`."""

    def __post_init__(self) -> None:
        for name in ("training_cost_alarm_usd", "monthly_budget_usd", "budget_alert_percent",
                     "serving_error_rate_alarm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"monitoring plan: field {name!r} must be a number > 0, got {value!r}")
        if self.serving_error_rate_alarm >= 1:
            raise ValueError(f"monitoring plan: field 'serving_error_rate_alarm' is a share of requests "
                             f"(0-1), got {self.serving_error_rate_alarm!r}")
        if not self.notify_email and not self.notify_sns_topic_arn:
            raise ValueError("monitoring plan: set notify_email or notify_sns_topic_arn: the budget "
                             "notification needs a subscriber")
        if not self.tiers:
            raise ValueError("monitoring plan: field 'tiers' is empty")


@dataclass
class SetupReport:
    """What `apply_monitoring` did, one `kind:name` per resource."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged}


def dashboard_name(plan: MonitoringPlan, which: str) -> str:
    return f"{plan.namespace}-{which}"


def dashboard_bodies(plan: MonitoringPlan) -> dict[str, dict]:
    """{dashboard name: body} for the training, cost and performance dashboards."""
    ns = plan.namespace

    def search(metric: str, stat: str, period: int) -> dict:
        query = f"SEARCH('{{\"{ns}\",asset,job,tier}} MetricName=\"{metric}\"', '{stat}', {period})"
        return _widget(plan, metric, [[{"expression": query, "id": "e1"}]], stat, period)

    def per_tier(metric: str, stat: str, period: int) -> dict:
        return _widget(plan, metric, [[ns, metric, "tier", tier, {"label": tier}] for tier in plan.tiers],
                       stat, period)

    training = [search("TrainingReward", "Average", HOUR), search("TrainingLoss", "Average", HOUR),
                search("TrainingStepSeconds", "Average", HOUR), search("TrainingDropRate", "Average", HOUR),
                search("DistillationLoss", "Average", HOUR), search("QualityAccuracy", "Average", HOUR),
                search("QualityGateRatio", "Average", HOUR)]
    cost = [per_tier("TrainingCostEstimate", "Sum", DAY), search("TrainingCostEstimate", "Sum", DAY),
            per_tier("RouterExpectedCost", "Average", HOUR), per_tier("RouterDecisions", "Sum", HOUR)]
    performance = [per_tier("ServingRequests", "Sum", 300), per_tier("ServingErrors", "Sum", 300),
                   per_tier("ServingLatency", "Average", 300), per_tier("ServingLatencyP95", "Maximum", 300),
                   per_tier("ServingTokens", "Sum", 300), per_tier("RouterEscalations", "Sum", HOUR),
                   search("EvalTokensPerSecond", "Average", HOUR)]
    return {dashboard_name(plan, which): {"widgets": _layout(widgets)}
            for which, widgets in (("training", training), ("cost", cost), ("performance", performance))}


def _widget(plan: MonitoringPlan, title: str, metrics: list, stat: str, period: int) -> dict:
    return {"type": "metric", "properties": {"title": title, "metrics": metrics, "region": plan.region,
                                             "stat": stat, "period": period, "view": "timeSeries"}}


def _layout(widgets: list[dict]) -> list[dict]:
    """Two widgets a row, 12 x 6 each (the dashboard grid is 24 wide)."""
    return [{**w, "x": 12 * (i % 2), "y": 6 * (i // 2), "width": 12, "height": 6} for i, w in enumerate(widgets)]


def alarm_requests(plan: MonitoringPlan) -> list[dict]:
    """`put_metric_alarm` arguments: a training-cost and a serving-error-rate alarm per tier."""
    actions = {"AlarmActions": [plan.notify_sns_topic_arn]} if plan.notify_sns_topic_arn else {}
    alarms = []
    for tier in plan.tiers:
        dims = [{"Name": "tier", "Value": tier}]
        alarms.append({
            "AlarmName": f"{plan.namespace}-training-cost-{tier}",
            "AlarmDescription": f"Estimated {tier} training cost (on-demand list price) over "
                                f"{plan.training_cost_alarm_usd:g} USD in a day",
            "Namespace": plan.namespace, "MetricName": "TrainingCostEstimate", "Dimensions": dims,
            "Statistic": "Sum", "Period": DAY, "EvaluationPeriods": 1, "Threshold": float(plan.training_cost_alarm_usd),
            "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching", **actions})
        stat = {"Period": 300, "Stat": "Sum"}
        alarms.append({
            "AlarmName": f"{plan.namespace}-serving-errors-{tier}",
            "AlarmDescription": f"{tier} serving error rate over {plan.serving_error_rate_alarm:.1%} "
                                "in 2 of 3 five-minute periods",
            "Metrics": [
                {"Id": "errors", "ReturnData": False, "MetricStat": {**stat, "Metric": {
                    "Namespace": plan.namespace, "MetricName": "ServingErrors", "Dimensions": dims}}},
                {"Id": "requests", "ReturnData": False, "MetricStat": {**stat, "Metric": {
                    "Namespace": plan.namespace, "MetricName": "ServingRequests", "Dimensions": dims}}},
                {"Id": "rate", "Expression": "FILL(errors, 0) / requests", "Label": "error rate",
                 "ReturnData": True}],
            "EvaluationPeriods": 3, "DatapointsToAlarm": 2, "Threshold": float(plan.serving_error_rate_alarm),
            "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching", **actions})
    return alarms


def budget_request(plan: MonitoringPlan) -> tuple[dict, dict, list[dict]]:
    """(Budget, Notification, Subscribers) of `create_budget`."""
    budget = {"BudgetName": plan.budget_name, "BudgetType": "COST", "TimeUnit": "MONTHLY",
              "BudgetLimit": {"Amount": f"{plan.monthly_budget_usd:.2f}", "Unit": "USD"}}
    if plan.budget_services:
        budget["CostFilters"] = {"Service": list(plan.budget_services)}
    notification = {"NotificationType": "ACTUAL", "ComparisonOperator": "GREATER_THAN",
                    "Threshold": float(plan.budget_alert_percent), "ThresholdType": "PERCENTAGE"}
    subscribers = ([{"SubscriptionType": "EMAIL", "Address": plan.notify_email}] if plan.notify_email else []) \
        + ([{"SubscriptionType": "SNS", "Address": plan.notify_sns_topic_arn}] if plan.notify_sns_topic_arn else [])
    return budget, notification, subscribers


def apply_monitoring(plan: MonitoringPlan, cloudwatch, budgets, account_id: str) -> SetupReport:
    """Make the dashboards, alarms and budget match `plan`; see the module docstring."""
    report = SetupReport()
    for name, body in dashboard_bodies(plan).items():
        existing = _dashboard(cloudwatch, name)
        if existing != body:
            cloudwatch.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body, sort_keys=True))
        _note(report, f"dashboard:{name}", existing, existing == body)
    wanted = alarm_requests(plan)
    found = {a["AlarmName"]: a for a in cloudwatch.describe_alarms(
        AlarmNames=[a["AlarmName"] for a in wanted], AlarmTypes=["MetricAlarm"])["MetricAlarms"]}
    for alarm in wanted:
        existing = found.get(alarm["AlarmName"])
        same = existing is not None and _matches(alarm, existing)
        if not same:
            cloudwatch.put_metric_alarm(**alarm)
        _note(report, f"alarm:{alarm['AlarmName']}", existing, same)
    _apply_budget(plan, budgets, account_id, report)
    return report


def _note(report: SetupReport, label: str, existing, same: bool) -> None:
    (report.unchanged if same else report.updated if existing is not None else report.created).append(label)


def _dashboard(cloudwatch, name: str) -> dict | None:
    try:
        return json.loads(cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"])
    except cloudwatch.exceptions.ClientError as error:
        if error.response["Error"]["Code"] in ("ResourceNotFound", "DashboardNotFoundError"):
            return None
        raise


def _apply_budget(plan: MonitoringPlan, budgets, account_id: str, report: SetupReport) -> None:
    budget, notification, subscribers = budget_request(plan)
    label = f"budget:{plan.budget_name}"
    try:
        existing = budgets.describe_budget(AccountId=account_id, BudgetName=plan.budget_name)["Budget"]
    except budgets.exceptions.NotFoundException:
        budgets.create_budget(AccountId=account_id, Budget=budget,
                              NotificationsWithSubscribers=[{"Notification": notification,
                                                             "Subscribers": subscribers}])
        report.created.append(label)
        return
    changed = False
    if not _matches(budget, existing):
        budgets.update_budget(AccountId=account_id, NewBudget=budget)
        changed = True
    present = budgets.describe_notifications_for_budget(AccountId=account_id,
                                                        BudgetName=plan.budget_name)["Notifications"]
    if not any(_matches(notification, n) for n in present):
        budgets.create_notification(AccountId=account_id, BudgetName=plan.budget_name,
                                    Notification=notification, Subscribers=subscribers)
        changed = True
    (report.updated if changed else report.unchanged).append(label)


def _matches(wanted, actual) -> bool:
    """Whether `actual` (as AWS describes it) holds every field of `wanted` (AWS adds its own)."""
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(_matches(v, actual.get(k)) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(actual, list) and len(wanted) == len(actual) and all(
            _matches(w, a) for w, a in zip(_ordered(wanted), _ordered(actual)))
    if isinstance(wanted, int | float) and not isinstance(wanted, bool):
        return isinstance(actual, int | float) and math.isclose(wanted, actual)
    if isinstance(wanted, str) and isinstance(actual, str) and _is_number(wanted) and _is_number(actual):
        return math.isclose(float(wanted), float(actual))  # budget amounts: "1000.00" vs "1000.0"
    return wanted == actual


def _ordered(items: list) -> list:
    # Dimensions come back in any order; other lists (alarm metrics, actions) keep theirs.
    if all(isinstance(i, Mapping) and set(i) == {"Name", "Value"} for i in items):
        return sorted(items, key=lambda i: i["Name"])
    return items


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
