"""Monitoring: `monitoring_setup` (CloudWatch dashboards, alarms and budget, or local charts) and
`record`, the one call the other assets make to send what they measured to the metrics sink."""

import base64
import json

from botocore.exceptions import BotoCoreError, ClientError
from dagster import AssetExecutionContext, Config, DataVersion, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.data import OWNERS
from resources.monitoring import MonitoringResource
from resources.storage import ArtifactStore
from srl_platform.aws_monitoring import alarm_requests, apply_monitoring, budget_request, dashboard_bodies
from srl_platform.monitoring import METRICS_PREFIX, VOCABULARY, chart_png, emit, read_metrics
from srl_platform.storage import ArtifactStoreClient, content_hash

CHARTS_PREFIX = "reports/monitoring"


def record(context: AssetExecutionContext, monitoring: MonitoringResource, store: ArtifactStoreClient,
           values: dict[str, float], tier: str, per_run: bool = True) -> None:
    """Send `values` under `tier`, plus this asset and its Dagster job when `per_run` (training,
    distillation, quality; serving metrics are one series per tier). A CloudWatch outage is logged,
    not raised: the adapter or report the run produced stands without its datapoints."""
    dims = {"tier": tier, **({"asset": context.asset_key.to_user_string(), "job": context.run.job_name}
                             if per_run else {})}
    sink = monitoring.sink(store)
    emit(sink, values, dims)
    try:
        sent = sink.flush()
    except (BotoCoreError, ClientError) as error:
        context.log.warning(f"{len(values)} metrics not sent to {monitoring.backend}: {error}")
        return
    context.log.info(f"{sent} datapoints sent to {monitoring.backend}: {', '.join(sorted(values))}")


class MonitoringSetupConfig(Config):
    charts: list[str] = Field(
        default_factory=lambda: ["TrainingReward", "TrainingCostEstimate", "DistillationLoss", "QualityAccuracy",
                                 "ServingLatency", "RouterExpectedCost"],
        description="Local backend: metrics drawn inline in the metadata (every recorded metric is "
                    f"charted to {CHARTS_PREFIX}/ in the store).")


@asset(group_name="monitoring", kinds={"python", "aws"}, owners=OWNERS, code_version="1")
def monitoring_setup(context: AssetExecutionContext, config: MonitoringSetupConfig, store: ArtifactStore,
                     monitoring: MonitoringResource) -> MaterializeResult:
    """Where the team sees cost and quality every day. CloudWatch backend: the training, cost and
    performance dashboards, a training-cost and a serving-error-rate alarm per tier, and the monthly
    AWS Budget with its notification. Local backend: a PNG chart over time of every metric recorded
    under `metrics/` in the store. Idempotent: AWS resources are written only when they differ from
    the plan (a re-run reports them unchanged); the charts are a function of the recorded metrics."""
    client = store.client()
    if monitoring.backend == "cloudwatch":
        return _apply_cloudwatch(context, monitoring)
    rows = read_metrics(client)
    names = [name for name in VOCABULARY if any(r["name"] == name for r in rows)]
    names += sorted({r["name"] for r in rows} - set(names))
    metadata, lines = {}, ["| metric | datapoints | last | chart |", "|---|---:|---:|---|"]
    for name in names:
        points = [r for r in rows if r["name"] == name]
        png = chart_png(points, name)
        uri = client.put_bytes(f"{CHARTS_PREFIX}/{name}.png", png)
        lines.append(f"| {name} | {len(points)} | {points[-1]['value']:.4g} {points[-1]['unit']} | {uri} |")
        if name in config.charts:
            metadata[f"chart_{name}"] = MetadataValue.md(
                f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")
    if not rows:
        context.log.warning(f"no metrics under {client.uri(METRICS_PREFIX)} yet: materialize a training, "
                            "distillation or promotion asset first")
    return MaterializeResult(
        metadata={"backend": "local", "metrics_uri": MetadataValue.path(client.uri(METRICS_PREFIX)),
                  "datapoints": len(rows), "metrics": MetadataValue.md("\n".join(lines)), **metadata},
        data_version=DataVersion(content_hash(json.dumps(rows, sort_keys=True).encode())))


def _apply_cloudwatch(context: AssetExecutionContext, monitoring: MonitoringResource) -> MaterializeResult:
    plan = monitoring.plan()
    account = monitoring.aws_client("sts").get_caller_identity()["Account"]
    report = apply_monitoring(plan, monitoring.aws_client("cloudwatch"), monitoring.aws_client("budgets"), account)
    context.log.info(f"monitoring set-up: {json.dumps(report.as_dict())}")
    wanted = json.dumps([dashboard_bodies(plan), alarm_requests(plan), budget_request(plan)], sort_keys=True)
    return MaterializeResult(
        metadata={"backend": "cloudwatch", "namespace": plan.namespace, "region": plan.region,
                  "created": MetadataValue.text(", ".join(report.created) or "none"),
                  "updated": MetadataValue.text(", ".join(report.updated) or "none"),
                  "unchanged": MetadataValue.text(", ".join(report.unchanged) or "none"),
                  "dashboards": MetadataValue.text(", ".join(dashboard_bodies(plan))),
                  "alarms": MetadataValue.text(", ".join(a["AlarmName"] for a in alarm_requests(plan))),
                  "budget": MetadataValue.text(f"{plan.budget_name}: {plan.monthly_budget_usd:g} USD/month, "
                                               f"notified at {plan.budget_alert_percent:g}%")},
        data_version=DataVersion(content_hash(wanted.encode())))
