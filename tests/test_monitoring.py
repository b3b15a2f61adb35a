"""The metrics sinks and the CloudWatch set-up: local JSON lines and PNG charts, CloudWatch
`put_metric_data` and dashboards, alarms and a budget against the moto server on loopback, and the
refusal of datapoints CloudWatch would reject.

moto keeps one backend per process, so each test uses a namespace and budget name of its own.
moto 5.2 has no `update_budget`: that path is tested with botocore's `Stubber` on AWS-shaped answers.
"""

from __future__ import annotations

import io
import json
import math
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import Stubber
from support import AWS_TEST_CREDENTIALS

from srl_platform.aws_monitoring import (
    MonitoringPlan,
    alarm_requests,
    apply_monitoring,
    budget_request,
    dashboard_bodies,
)
from srl_platform.monitoring import (
    MAX_CALL_BYTES,
    CloudWatchMetricsSink,
    LocalMetricsSink,
    _batches,
    _wire,
    chart_png,
    make_datum,
    read_metrics,
    serving_metrics,
    training_cost,
    training_metrics,
)
from srl_platform.storage import LocalArtifactStore

ACCOUNT = "123456789012"  # moto's default account
RUN = {"tier": "gold", "asset": "srl_checkpoint", "job": "nightly_cascade_job"}


def aws(service: str, endpoint: str):
    return boto3.client(service, endpoint_url=endpoint, **AWS_TEST_CREDENTIALS)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_the_local_sink_appends_json_lines_to_the_store_and_reads_them_back(tmp_path):
    store = LocalArtifactStore(tmp_path)
    sink = LocalMetricsSink(store)
    t0 = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    sink.put("TrainingReward", 0.25, dimensions=RUN, timestamp=t0 + timedelta(hours=1))
    sink.put("TrainingCostEstimate", 1.5, dimensions=RUN, timestamp=t0)
    assert sink.flush() == 2 and sink.flush() == 0  # nothing pending: no empty object written
    sink.put("TrainingReward", 0.5, dimensions={**RUN, "tier": "silver"}, timestamp=t0 + timedelta(hours=2))
    sink.flush()

    files = store.list("metrics")
    assert len(files) == 2 and all(f.endswith(".jsonl") for f in files)  # one object per flush
    first = [json.loads(line) for line in store.get_bytes(files[0]).decode().splitlines()]
    assert first[0] == {"name": "TrainingReward", "value": 0.25, "unit": "None", "dimensions": RUN,
                        "timestamp": "2026-01-01T13:00:00+00:00"}  # the unit comes from the vocabulary
    rows = read_metrics(store)
    assert [(r["name"], r["value"]) for r in rows] == [  # oldest first, across flushes
        ("TrainingCostEstimate", 1.5), ("TrainingReward", 0.25), ("TrainingReward", 0.5)]
    assert [r["value"] for r in read_metrics(store, "TrainingReward")] == [0.25, 0.5]


def test_a_metric_is_charted_over_time_as_a_png_with_a_line_per_tier(tmp_path):
    from matplotlib import image

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = [make_datum("ServingLatency", 10.0 * (i + 1) + (5 if tier == "silver" else 0), dimensions={"tier": tier},
                       timestamp=t0 + timedelta(minutes=5 * i)).as_json()
            for i in range(4) for tier in ("gold", "silver")]
    png = chart_png(rows, "ServingLatency")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[:2] == (240, 560)  # 7 x 3 inches at 80 dpi
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::7]}) > 10  # drawn, not blank
    with pytest.raises(ValueError, match="no datapoint of metric 'TrainingLoss'"):
        chart_png(rows, "TrainingLoss")


@pytest.mark.parametrize("name, value, unit, dims, expected", [
    ("TrainingReward", math.nan, None, RUN, r"metric 'TrainingReward': field 'value' must be finite .* got nan"),
    ("TrainingReward", math.inf, None, RUN, r"field 'value' must be finite .* got inf"),
    ("TrainingReward", 2.0 ** 361, None, RUN, r"within ±2\^360"),
    ("TrainingReward", True, None, RUN, r"field 'value' must be a number, got True \(bool\)"),
    ("TrainingReward", "0.5", None, RUN, r"field 'value' must be a number, got '0.5' \(str\)"),
    ("ServingLatency", 12.0, "Seconds", {"tier": "gold"},
     r"metric 'ServingLatency': field 'unit' is 'Milliseconds' in the vocabulary, got 'Seconds'"),
    ("MyMetric", 1.0, "Dollars", {}, r"metric 'MyMetric': field 'unit' 'Dollars' is not a CloudWatch unit"),
    ("MyMetric", 1.0, None, {}, r"metric 'MyMetric': field 'unit' is required"),
    ("TrainingReward", 0.5, None, {"region": "us-east-1"},
     r"field 'dimensions' has 'region'; allowed: tier, asset, job"),
    ("TrainingReward", 0.5, None, {"tier": ""}, r"dimension 'tier' must be a string of 1 to 1024 characters, got ''"),
    ("TrainingReward", 0.5, None, {"job": "j" * 1025}, r"dimension 'job' must be a string of 1 to 1024"),
    ("x" * 256, 0.5, "None", {}, r"must be a string of 1 to 255 characters"),
])
def test_a_bad_datapoint_is_refused_naming_the_metric_field_and_value(tmp_path, name, value, unit, dims, expected):
    sink = LocalMetricsSink(LocalArtifactStore(tmp_path))
    with pytest.raises(ValueError, match=expected):
        sink.put(name, value, unit, dims)
    assert sink.flush() == 0  # nothing of it was kept


def test_cloudwatch_refuses_timestamps_it_would_reject_and_naive_ones(moto_endpoint):
    sink = CloudWatchMetricsSink(aws("cloudwatch", moto_endpoint), unique("srl-test"))
    old = datetime.now(timezone.utc) - timedelta(days=15)
    with pytest.raises(ValueError, match=r"metric 'TrainingReward': field 'timestamp' .* \(two weeks back"):
        sink.put("TrainingReward", 0.5, dimensions=RUN, timestamp=old)
    with pytest.raises(ValueError, match="field 'timestamp' must be a timezone-aware datetime"):
        sink.put("TrainingReward", 0.5, dimensions=RUN, timestamp=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="namespace 'AWS/Custom'"):
        CloudWatchMetricsSink(aws("cloudwatch", moto_endpoint), "AWS/Custom")


def test_metrics_arrive_in_cloudwatch_with_their_dimensions_and_cost_rolled_up_per_tier(moto_endpoint):
    namespace, tier = unique("srl-test"), unique("gold")  # moto's get_metric_data ignores the namespace
    run = {**RUN, "tier": tier}
    cloudwatch = aws("cloudwatch", moto_endpoint)
    sink = CloudWatchMetricsSink(cloudwatch, namespace)
    sink.put("TrainingReward", 0.25, dimensions=run)
    sink.put("TrainingCostEstimate", 2.5, dimensions=run)
    sink.put("TrainingCostEstimate", 1.0, dimensions={**run, "asset": "distilled_adapter"})
    sink.put("ServingRequests", 3, dimensions={"tier": tier})
    assert sink.flush() == 6  # 4 datapoints + 2 per-tier copies of the cost

    found = {(m["MetricName"], frozenset((d["Name"], d["Value"]) for d in m["Dimensions"]))
             for m in cloudwatch.list_metrics(Namespace=namespace)["Metrics"]}
    full = frozenset(run.items())
    assert found == {("TrainingReward", full), ("TrainingCostEstimate", full),
                     ("TrainingCostEstimate", frozenset({**run, "asset": "distilled_adapter"}.items())),
                     ("TrainingCostEstimate", frozenset({("tier", tier)})),
                     ("ServingRequests", frozenset({("tier", tier)}))}

    def summed(dimensions: dict) -> list[float]:
        now = datetime.now(timezone.utc)
        query = {"Id": "cost", "MetricStat": {"Stat": "Sum", "Period": 3600, "Metric": {
            "Namespace": namespace, "MetricName": "TrainingCostEstimate",
            "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()]}}}
        (result,) = cloudwatch.get_metric_data(MetricDataQueries=[query], StartTime=now - timedelta(minutes=10),
                                               EndTime=now + timedelta(minutes=10))["MetricDataResults"]
        return result["Values"]

    assert summed({"tier": tier}) == [pytest.approx(3.5)]  # what the tier's cost alarm sums
    assert summed(run) == [pytest.approx(2.5)]  # one run's own series


def test_a_flush_is_split_into_calls_of_at_most_1000_datapoints(moto_endpoint):
    namespace = unique("srl-test")
    cloudwatch = aws("cloudwatch", moto_endpoint)
    calls = []
    cloudwatch.meta.events.register("provide-client-params.cloudwatch.PutMetricData",
                                    lambda params, **_: calls.append(len(params["MetricData"])))
    sink = CloudWatchMetricsSink(cloudwatch, namespace)
    for i in range(2300):
        sink.put("ServingLatency", float(i), dimensions={"tier": "gold"})
    assert sink.flush() == 2300
    assert calls == [1000, 1000, 300]
    now = datetime.now(timezone.utc)
    (point,) = cloudwatch.get_metric_statistics(
        Namespace=namespace, MetricName="ServingLatency", Dimensions=[{"Name": "tier", "Value": "gold"}],
        StartTime=now - timedelta(minutes=10), EndTime=now + timedelta(minutes=10), Period=3600,
        Statistics=["SampleCount"])["Datapoints"]
    assert point["SampleCount"] == 2300  # every datapoint arrived


def test_large_datapoints_are_split_under_the_1_mb_request_limit():
    dims = {"tier": "t" * 1024, "asset": "a" * 1024, "job": "j" * 1024}  # the longest values allowed
    data = [w for i in range(600) for w in _wire(make_datum("TrainingCostEstimate", i, dimensions=dims))]
    batches = list(_batches(data))
    assert sum(map(len, batches)) == 1200 and len(batches) > 1
    assert all(len(json.dumps(b, default=str)) < MAX_CALL_BYTES for b in batches)


def test_training_and_serving_figures_become_datapoints_without_the_missing_ones():
    rows = [{"step": 1, "reward": 0.1, "loss": 0.9, "step_time": 2.0}, {"step": 2, "reward": 0.3, "step_time": 4.0},
            {"step": 2, "train_runtime": 6.0}]
    values = training_metrics({"drop_rate": 0.5}, rows, cost_usd=1.25)
    assert values == {"TrainingCostEstimate": 1.25, "TrainingReward": 0.3, "TrainingLoss": 0.9,
                      "TrainingStepSeconds": 3.0, "TrainingDropRate": 0.5}
    assert training_metrics({"drop_rate": math.nan}, [], cost_usd=0.0) == {"TrainingCostEstimate": 0.0}
    # bronze: 2 x ml.p5.48xlarge for half an hour
    assert training_cost("ml.p5.48xlarge", 2, 1800, {"ml.p5.48xlarge": 100.0}) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="no training price for instance type 'ml.x9.huge'"):
        training_cost("ml.x9.huge", 1, 60)

    log = [{"model": "gold", "latency_ms": float(ms), "prompt_tokens": 10, "completion_tokens": 5}
           for ms in range(1, 21)] + [{"model": "silver", "latency_ms": 7.0, "prompt_tokens": 1, "completion_tokens": 1}]
    per_tier = serving_metrics(log)
    assert per_tier["gold"] == {"ServingRequests": 20, "ServingLatency": 10.5, "ServingLatencyP95": 19.0,
                                "ServingTokens": 300}
    assert per_tier["silver"]["ServingLatencyP95"] == 7.0


def plan_for(namespace: str, **changes) -> MonitoringPlan:
    fields = {"region": "us-east-1", "namespace": namespace, "budget_name": f"{namespace}-monthly",
              "notify_email": "ml-team@example.com", **changes}
    return MonitoringPlan(**fields)


def describe(cloudwatch, budgets, plan: MonitoringPlan) -> dict:
    """Everything the set-up owns, as AWS describes it (volatile fields dropped)."""
    alarms = cloudwatch.describe_alarms(AlarmNames=[a["AlarmName"] for a in alarm_requests(plan)])["MetricAlarms"]
    volatile = {"StateUpdatedTimestamp", "AlarmConfigurationUpdatedTimestamp", "StateValue", "StateReason",
                "StateReasonData", "StateTransitionedTimestamp"}
    return {
        "dashboards": {name: json.loads(cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"])
                       for name in dashboard_bodies(plan)},
        "alarms": sorted(({k: v for k, v in a.items() if k not in volatile} for a in alarms),
                         key=lambda a: a["AlarmName"]),
        "budget": {k: v for k, v in budgets.describe_budget(AccountId=ACCOUNT, BudgetName=plan.budget_name)
                   ["Budget"].items() if k not in ("CalculatedSpend", "LastUpdatedTime")},
        "notifications": budgets.describe_notifications_for_budget(
            AccountId=ACCOUNT, BudgetName=plan.budget_name)["Notifications"],
    }


def test_dashboards_alarms_and_budget_are_created_once_and_a_rerun_changes_nothing(moto_endpoint):
    namespace = unique("srl-test")
    cloudwatch, budgets = aws("cloudwatch", moto_endpoint), aws("budgets", moto_endpoint)
    plan = plan_for(namespace)

    first = apply_monitoring(plan, cloudwatch, budgets, ACCOUNT)
    dashboards = [f"dashboard:{namespace}-{d}" for d in ("training", "cost", "performance")]
    alarms = [f"alarm:{namespace}-{kind}-{tier}" for tier in ("gold", "silver", "bronze")
              for kind in ("training-cost", "serving-errors")]
    assert first.created == dashboards + alarms + [f"budget:{namespace}-monthly"]
    assert first.updated == first.unchanged == []
    state = describe(cloudwatch, budgets, plan)

    second = apply_monitoring(plan, cloudwatch, budgets, ACCOUNT)
    assert second.unchanged == first.created and second.created == second.updated == []
    assert describe(cloudwatch, budgets, plan) == state  # the same resources, untouched

    # What AWS now holds is the plan: widgets on the namespace's metrics, alarms on the per-tier series.
    cost = state["dashboards"][f"{namespace}-cost"]["widgets"][0]["properties"]
    assert cost["metrics"][0] == [namespace, "TrainingCostEstimate", "tier", "gold", {"label": "gold"}]
    training = json.dumps(state["dashboards"][f"{namespace}-training"])
    assert f'SEARCH(\'{{\\"{namespace}\\",asset,job,tier}} MetricName=\\"TrainingReward\\"' in training
    gold_cost = next(a for a in state["alarms"] if a["AlarmName"] == f"{namespace}-training-cost-gold")
    assert (gold_cost["MetricName"], gold_cost["Dimensions"], gold_cost["Statistic"], gold_cost["Period"],
            gold_cost["Threshold"]) == ("TrainingCostEstimate", [{"Name": "tier", "Value": "gold"}], "Sum", 86400, 100.0)
    errors = next(a for a in state["alarms"] if a["AlarmName"] == f"{namespace}-serving-errors-gold")
    assert [m["Id"] for m in errors["Metrics"]] == ["errors", "requests", "rate"]
    assert errors["Metrics"][2]["Expression"] == "FILL(errors, 0) / requests" and errors["Threshold"] == 0.05
    assert float(state["budget"]["BudgetLimit"]["Amount"]) == 1000.0
    assert state["budget"]["CostFilters"] == {"Service": ["Amazon SageMaker"]}
    assert state["notifications"] == [{"NotificationType": "ACTUAL", "ComparisonOperator": "GREATER_THAN",
                                       "Threshold": 80.0, "ThresholdType": "PERCENTAGE"}]

    # A changed threshold rewrites exactly the alarms it concerns.
    third = apply_monitoring(plan_for(namespace, training_cost_alarm_usd=250.0), cloudwatch, budgets, ACCOUNT)
    assert third.updated == [a for a in alarms if "training-cost" in a] and third.created == []
    assert cloudwatch.describe_alarms(AlarmNames=[f"{namespace}-training-cost-gold"])["MetricAlarms"][0][
        "Threshold"] == 250.0


def test_an_existing_budget_that_differs_is_updated_not_recreated():
    """`create_budget` raises DuplicateRecordException on a second call, so an existing budget is
    compared and updated; a missing notification is added (answers shaped like AWS's)."""
    plan = plan_for("srl-stub", monthly_budget_usd=2000.0, budget_alert_percent=90.0)
    budget, notification, subscribers = budget_request(plan)
    budgets = boto3.client("budgets", **AWS_TEST_CREDENTIALS)
    stub = Stubber(budgets)
    old = {**budget, "BudgetLimit": {"Amount": "1000.0", "Unit": "USD"}, "CalculatedSpend": {
        "ActualSpend": {"Amount": "12.5", "Unit": "USD"}}}
    stub.add_response("describe_budget", {"Budget": old}, {"AccountId": ACCOUNT, "BudgetName": plan.budget_name})
    stub.add_response("update_budget", {}, {"AccountId": ACCOUNT, "NewBudget": budget})
    stub.add_response("describe_notifications_for_budget", {"Notifications": [{
        "NotificationType": "ACTUAL", "ComparisonOperator": "GREATER_THAN", "Threshold": 80.0,
        "ThresholdType": "PERCENTAGE"}]}, {"AccountId": ACCOUNT, "BudgetName": plan.budget_name})
    stub.add_response("create_notification", {}, {"AccountId": ACCOUNT, "BudgetName": plan.budget_name,
                                                  "Notification": notification, "Subscribers": subscribers})
    cloudwatch = boto3.client("cloudwatch", **AWS_TEST_CREDENTIALS)
    cw = Stubber(cloudwatch)
    for name, body in dashboard_bodies(plan).items():
        cw.add_response("get_dashboard", {"DashboardName": name, "DashboardBody": json.dumps(body)},
                        {"DashboardName": name})
    wanted = alarm_requests(plan)
    cw.add_response("describe_alarms", {"MetricAlarms": wanted},
                    {"AlarmNames": [a["AlarmName"] for a in wanted], "AlarmTypes": ["MetricAlarm"]})
    with stub, cw:
        report = apply_monitoring(plan, cloudwatch, budgets, ACCOUNT)
        stub.assert_no_pending_responses()
        cw.assert_no_pending_responses()
    assert report.updated == ["budget:srl-stub-monthly"] and report.created == []
    assert len(report.unchanged) == 3 + 6


@pytest.mark.parametrize("changes, expected", [
    ({"notify_email": None}, "set notify_email or notify_sns_topic_arn"),
    ({"serving_error_rate_alarm": 5.0}, r"field 'serving_error_rate_alarm' is a share of requests \(0-1\), got 5.0"),
    ({"monthly_budget_usd": -1.0}, "field 'monthly_budget_usd' must be a number > 0, got -1.0"),
])
def test_a_plan_that_aws_would_refuse_or_that_alarms_nobody_is_rejected(changes, expected):
    with pytest.raises(ValueError, match=expected):
        plan_for("srl-bad", **changes)


def test_alarm_actions_and_the_budget_notify_the_sns_topic_when_given():
    topic = "arn:aws:sns:us-east-1:123456789012:srl-alerts"
    plan = plan_for("srl-sns", notify_sns_topic_arn=topic)
    assert all(a["AlarmActions"] == [topic] for a in alarm_requests(plan))
    _, _, subscribers = budget_request(plan)
    assert subscribers == [{"SubscriptionType": "EMAIL", "Address": "ml-team@example.com"},
                           {"SubscriptionType": "SNS", "Address": topic}]
    assert "AlarmActions" not in alarm_requests(plan_for("srl-mail"))[0]
