"""`monitoring_setup` and the serving metrics of `collected_traces` through `dagster.materialize`:
local JSON lines charted into the asset's metadata, and, against the moto server on loopback,
dashboards, alarms and a budget created once (a re-run reports them unchanged) and serving metrics
arriving in CloudWatch with their tier dimension. No model is needed."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import boto3
import pytest
from dagster import DagsterInstance, materialize
from support import AWS_TEST_CREDENTIALS

from assets.collection import collected_traces
from assets.monitoring import monitoring_setup
from resources.monitoring import MonitoringResource
from resources.storage import ArtifactStore
from srl_platform.monitoring import read_metrics
from srl_platform.storage import LocalArtifactStore

SERVED = [("gold", 40.0), ("gold", 60.0), ("gold", 80.0), ("silver", 120.0), ("silver", 140.0)]


def serving_log(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": f"What is {i} + {i}?", "completion": str(2 * i), "model": tier, "adapter_version": "v1",
             "latency_ms": latency, "prompt_tokens": 12, "completion_tokens": 3} for i, (tier, latency) in enumerate(SERVED)]
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def run(asset, resources: dict, config: dict | None = None, instance=None):
    return materialize([asset], resources=resources, instance=instance or DagsterInstance.ephemeral(),
                       run_config={"ops": {asset.key.to_user_string(): {"config": config}}} if config else None)


def metadata(result, asset) -> dict:
    (event,) = result.asset_materializations_for_node(asset.key.to_user_string())
    return {key: value.value for key, value in event.metadata.items()}


def data_version(result, asset) -> str:
    (event,) = result.asset_materializations_for_node(asset.key.to_user_string())
    return event.tags["dagster/data_version"]


def test_served_requests_are_recorded_locally_and_charted_into_the_setup_metadata(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    resources = {"store": ArtifactStore(root=store.root), "monitoring": MonitoringResource()}
    empty = run(monitoring_setup, resources)
    assert metadata(empty, monitoring_setup)["datapoints"] == 0  # nothing recorded yet: no chart, no failure

    assert run(collected_traces, resources, {"source": str(serving_log(tmp_path / "logs"))}).success
    rows = read_metrics(store)
    by = {(r["name"], r["dimensions"]["tier"]): r for r in rows}
    assert all(r["dimensions"].keys() == {"tier"} for r in rows)  # serving metrics: one series per tier
    assert by[("ServingRequests", "gold")]["value"] == 3 and by[("ServingRequests", "silver")]["value"] == 2
    assert by[("ServingLatency", "gold")]["value"] == 60.0 and by[("ServingLatency", "gold")]["unit"] == "Milliseconds"
    assert by[("ServingTokens", "silver")]["value"] == 30

    first = run(monitoring_setup, resources)
    meta = metadata(first, monitoring_setup)
    assert meta["backend"] == "local" and meta["datapoints"] == len(rows) == 8
    inline = meta["chart_ServingLatency"]
    prefix = "![ServingLatency](data:image/png;base64,"
    assert inline.startswith(prefix) and base64.b64decode(inline[len(prefix):-1]).startswith(b"\x89PNG")
    assert "chart_ServingTokens" not in meta  # charted to the store, not inline
    for name in ("ServingRequests", "ServingLatency", "ServingLatencyP95", "ServingTokens"):
        assert store.get_bytes(f"reports/monitoring/{name}.png").startswith(b"\x89PNG")
        assert f"| {name} | 2 |" in meta["metrics"]
    assert data_version(run(monitoring_setup, resources), monitoring_setup) == data_version(first, monitoring_setup)


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Credentials for moto, and no AWS config of the machine's."""
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_TEST_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_TEST_CREDENTIALS["aws_secret_access_key"])


def test_cloudwatch_setup_is_created_once_and_serving_metrics_arrive_by_tier(moto_endpoint, aws_env, tmp_path):
    namespace = f"srl-asset-{uuid.uuid4().hex[:8]}"
    monitoring = MonitoringResource(backend="cloudwatch", namespace=namespace, region_name="us-east-1",
                                    endpoint_url=moto_endpoint, budget_name=f"{namespace}-monthly",
                                    notify_email="ml-team@example.com")
    resources = {"store": ArtifactStore(root=str(tmp_path / "store")), "monitoring": monitoring}

    first = run(monitoring_setup, resources)
    meta = metadata(first, monitoring_setup)
    created = meta["created"].split(", ")
    assert len(created) == 3 + 6 + 1 and meta["updated"] == meta["unchanged"] == "none"
    assert f"budget:{namespace}-monthly" in created and f"alarm:{namespace}-training-cost-bronze" in created
    again = run(monitoring_setup, resources)
    meta_again = metadata(again, monitoring_setup)
    assert meta_again["unchanged"].split(", ") == created and meta_again["created"] == meta_again["updated"] == "none"
    assert data_version(again, monitoring_setup) == data_version(first, monitoring_setup)

    cloudwatch = boto3.client("cloudwatch", endpoint_url=moto_endpoint, **AWS_TEST_CREDENTIALS)
    dashboards = {d["DashboardName"] for d in cloudwatch.list_dashboards(DashboardNamePrefix=namespace)["DashboardEntries"]}
    assert dashboards == {f"{namespace}-training", f"{namespace}-cost", f"{namespace}-performance"}

    assert run(collected_traces, resources, {"source": str(serving_log(tmp_path / "logs"))}).success
    assert not (tmp_path / "store" / "metrics").exists()  # the cloudwatch backend writes no local lines
    found = {(m["MetricName"], tuple((d["Name"], d["Value"]) for d in m["Dimensions"]))
             for m in cloudwatch.list_metrics(Namespace=namespace)["Metrics"]}
    assert found == {(name, (("tier", tier),)) for tier in ("gold", "silver")
                     for name in ("ServingRequests", "ServingLatency", "ServingLatencyP95", "ServingTokens")}
