"""`MonitoringResource`: where metrics go (local JSON lines or CloudWatch) and what the alarms watch."""

from __future__ import annotations

from typing import Literal

import boto3
from botocore.config import Config
from dagster import ConfigurableResource
from pydantic import Field

from srl_platform.aws_monitoring import MonitoringPlan
from srl_platform.monitoring import (
    TRAINING_PRICE_PER_HOUR,
    CloudWatchMetricsSink,
    LocalMetricsSink,
    MetricsSink,
)
from srl_platform.storage import ArtifactStoreClient


class MonitoringResource(ConfigurableResource):
    """The metrics sink of every asset, and the CloudWatch set-up of `monitoring_setup`.

    local (embedded default): JSON lines under `metrics/` in the artefact store, charted by
    `monitoring_setup`. cloudwatch: `put_metric_data` to `namespace`, plus dashboards, alarms and a
    budget; region and endpoint come from the usual AWS settings (AWS_REGION, AWS_ENDPOINT_URL,
    profiles) unless set here."""

    backend: Literal["local", "cloudwatch"] = Field(default="local", description="local or cloudwatch.")
    namespace: str = Field(default="srl-platform", description="CloudWatch namespace; prefix of dashboards and alarms.")
    region_name: str | None = Field(default=None, description="AWS region (default: AWS config).")
    endpoint_url: str | None = Field(
        default=None, description="Endpoint override for CloudWatch and Budgets, e.g. a moto server.")
    training_cost_alarm_usd: float = Field(default=100.0, gt=0,
                                           description="Daily estimated training cost per tier that alarms.")
    serving_error_rate_alarm: float = Field(default=0.05, gt=0, lt=1,
                                            description="Serving error rate per tier that alarms.")
    monthly_budget_usd: float = Field(default=1000.0, gt=0, description="AWS Budget limit (SageMaker cost).")
    budget_name: str = Field(default="srl-platform-monthly", description="AWS Budget name.")
    budget_alert_percent: float = Field(default=80.0, gt=0, description="Budget notification threshold (% of limit).")
    notify_email: str | None = Field(default=None, description="Who the budget notification e-mails.")
    notify_sns_topic_arn: str | None = Field(default=None, description="SNS topic for alarm actions and the budget.")
    training_price_per_hour: dict[str, float] = Field(
        default_factory=lambda: dict(TRAINING_PRICE_PER_HOUR),
        description="USD per training instance-hour by instance type, for TrainingCostEstimate.")

    def sink(self, store: ArtifactStoreClient) -> MetricsSink:
        if self.backend == "cloudwatch":
            return CloudWatchMetricsSink(self.aws_client("cloudwatch"), self.namespace)
        return LocalMetricsSink(store)

    def plan(self) -> MonitoringPlan:
        return MonitoringPlan(
            region=self.aws_client("cloudwatch").meta.region_name, namespace=self.namespace,
            training_cost_alarm_usd=self.training_cost_alarm_usd,
            serving_error_rate_alarm=self.serving_error_rate_alarm, monthly_budget_usd=self.monthly_budget_usd,
            budget_name=self.budget_name, budget_alert_percent=self.budget_alert_percent,
            notify_email=self.notify_email, notify_sns_topic_arn=self.notify_sns_topic_arn)

    def aws_client(self, service: str):
        return boto3.client(service, region_name=self.region_name, endpoint_url=self.endpoint_url,
                            config=Config(retries={"mode": "standard", "max_attempts": 10}))
