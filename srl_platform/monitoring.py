"""Metrics: one sink interface, local JSON lines (the embedded default) or CloudWatch.

Training, distillation, quality, serving and router figures are put as named datapoints
(`put(name, value, unit, dimensions, timestamp)`) and written on `flush()`:

- `LocalMetricsSink`: one JSON object a line, one object per flush under `metrics/{date}/` in the
  artefact store (a local directory or S3; whole-object writes, so concurrent writers never clash).
  `read_metrics` reads them back and `chart_png` draws a metric over time for asset metadata.
- `CloudWatchMetricsSink`: `put_metric_data`, at most 1000 datapoints and well under the 1 MB body
  limit per call.

Dimensions are `tier`, `asset` and `job` (the Dagster job), nothing else: the dashboards and
alarms (`srl_platform.aws_monitoring`) query exactly these. Training, distillation and quality
metrics carry all three; serving and router metrics carry `tier` alone (one series per tier).
CloudWatch does not aggregate across dimension sets and an alarm needs one fixed set, so a metric
with a `rollup` (the cost estimate) is also published under its `tier` alone. Every datapoint is checked when it is
put, against CloudWatch's rules (finite number within ±2^360, known unit, name and value lengths,
at most 30 dimensions), and a bad one is refused naming the metric, the field and the value.
The `*_metrics` functions turn what an asset already computed into datapoints; a figure the run
did not produce (no loss logged, no throughput measured) is left out, never sent as NaN.
"""

from __future__ import annotations

import io
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal, Protocol

from srl_platform.storage import ArtifactStoreClient

METRICS_PREFIX = "metrics"
DIMENSIONS = ("tier", "asset", "job")
"""The only dimension names a datapoint may carry."""
UNITS = frozenset({
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second",
    "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second",
    "Count/Second", "None"})
"""CloudWatch's `StandardUnit` values (USD amounts are "None": CloudWatch has no currency unit)."""
MAX_NAME, MAX_DIMENSION_VALUE, MAX_DIMENSIONS = 255, 1024, 30
MAX_DATA_PER_CALL = 1000
MAX_CALL_BYTES = 900_000
"""Kept under CloudWatch's 1 MB request limit, with room for the envelope."""
MAX_ABS_VALUE = 2.0 ** 360
MAX_AGE, MAX_AHEAD = timedelta(days=14), timedelta(hours=2)
"""CloudWatch accepts datapoints up to two weeks old and two hours ahead."""

Area = Literal["training", "distillation", "quality", "serving", "router"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the vocabulary."""

    name: str
    unit: str
    area: Area
    description: str
    rollup: bool = False
    """Also published under `tier` alone on CloudWatch, for alarms and cost widgets."""


VOCABULARY: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("TrainingReward", "None", "training", "mean reward of the run's last logged optimizer step"),
    MetricSpec("TrainingLoss", "None", "training", "loss at the run's last logged step"),
    MetricSpec("TrainingStepSeconds", "Seconds", "training", "mean seconds per optimizer step"),
    MetricSpec("TrainingDropRate", "None", "training", "share of rollout groups dynamic sampling dropped"),
    MetricSpec("TrainingCostEstimate", "None", "training",
               "USD of this launch at on-demand list price: instances x price/h x wall hours "
               "(SRL, RLVR and distillation alike)", rollup=True),
    MetricSpec("DistillationLoss", "None", "distillation", "distillation loss at the last logged step"),
    MetricSpec("DistillationSteps", "Count", "distillation", "optimizer steps of the distilled adapter"),
    MetricSpec("QualityAccuracy", "None", "quality", "student accuracy on held-out problems"),
    MetricSpec("QualityGateRatio", "None", "quality", "student/teacher ratio of the gate metric"),
    MetricSpec("EvalTokensPerSecond", "Count/Second", "quality", "student's generated tokens/s (batch, bf16)"),
    MetricSpec("ServingRequests", "Count", "serving", "requests answered"),
    MetricSpec("ServingErrors", "Count", "serving", "requests that failed"),
    MetricSpec("ServingLatency", "Milliseconds", "serving", "mean request latency"),
    MetricSpec("ServingLatencyP95", "Milliseconds", "serving", "95th-percentile request latency"),
    MetricSpec("ServingTokens", "Count", "serving", "prompt plus completion tokens"),
    MetricSpec("RouterDecisions", "Count", "router", "requests routed to the tier (the chosen one)"),
    MetricSpec("RouterEscalations", "Count", "router", "cascades that went past their first tier"),
    MetricSpec("RouterExpectedCost", "None", "router", "expected USD per request of the decision"),
)}


@dataclass(frozen=True)
class Datum:
    """One checked datapoint."""

    name: str
    value: float
    unit: str
    dimensions: dict[str, str]
    timestamp: datetime
    """Timezone-aware, UTC."""

    def as_json(self) -> dict:
        return {"name": self.name, "value": self.value, "unit": self.unit, "dimensions": self.dimensions,
                "timestamp": self.timestamp.isoformat()}


class MetricsSink(Protocol):
    def put(self, name: str, value: float, unit: str | None = None,
            dimensions: Mapping[str, str] | None = None, timestamp: datetime | None = None) -> Datum: ...
    def flush(self) -> int: ...


def make_datum(name: str, value: object, unit: str | None = None, dimensions: Mapping[str, str] | None = None,
               timestamp: datetime | None = None) -> Datum:
    """A datapoint checked against CloudWatch's rules; ValueError naming metric, field and value."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise ValueError(f"metric name {name!r}: must be a string of 1 to {MAX_NAME} characters")
    where = f"metric {name!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: field 'value' must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or abs(value) > MAX_ABS_VALUE:
        raise ValueError(f"{where}: field 'value' must be finite and within ±2^360 (CloudWatch rejects "
                         f"NaN, infinities and larger values), got {value!r}")
    spec = VOCABULARY.get(name)
    if unit is None:
        if spec is None:
            raise ValueError(f"{where}: field 'unit' is required for a metric outside the vocabulary")
        unit = spec.unit
    if unit not in UNITS:
        raise ValueError(f"{where}: field 'unit' {unit!r} is not a CloudWatch unit; use one of {sorted(UNITS)}")
    if spec is not None and unit != spec.unit:
        raise ValueError(f"{where}: field 'unit' is {spec.unit!r} in the vocabulary, got {unit!r}")
    dims = dict(dimensions or {})
    if len(dims) > MAX_DIMENSIONS:
        raise ValueError(f"{where}: {len(dims)} dimensions; CloudWatch allows {MAX_DIMENSIONS}")
    for key, text in dims.items():
        if key not in DIMENSIONS:
            raise ValueError(f"{where}: field 'dimensions' has {key!r}; allowed: {', '.join(DIMENSIONS)}")
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_DIMENSION_VALUE:
            raise ValueError(f"{where}: dimension {key!r} must be a string of 1 to {MAX_DIMENSION_VALUE} "
                             f"characters, got {text!r}")
    if timestamp is None:
        timestamp = datetime.now(timezone.utc)
    elif not isinstance(timestamp, datetime) or timestamp.tzinfo is None:
        raise ValueError(f"{where}: field 'timestamp' must be a timezone-aware datetime, got {timestamp!r}")
    return Datum(name, value, unit, dims, timestamp.astimezone(timezone.utc))


class LocalMetricsSink:
    """Datapoints as JSON lines in the artefact store: `metrics/{date}/{time}-{id}.jsonl` per flush."""

    def __init__(self, store: ArtifactStoreClient, prefix: str = METRICS_PREFIX) -> None:
        self.store, self.prefix, self.pending = store, prefix, []

    def put(self, name, value, unit=None, dimensions=None, timestamp=None) -> Datum:
        datum = make_datum(name, value, unit, dimensions, timestamp)
        self.pending.append(datum)
        return datum

    def flush(self) -> int:
        if not self.pending:
            return 0
        now = datetime.now(timezone.utc)
        key = f"{self.prefix}/{now:%Y-%m-%d}/{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.jsonl"
        body = "".join(json.dumps(d.as_json(), sort_keys=True) + "\n" for d in self.pending)
        self.store.put_bytes(key, body.encode())
        count, self.pending = len(self.pending), []
        return count


class CloudWatchMetricsSink:
    """Datapoints to CloudWatch through a boto3 `cloudwatch` client, batched within its limits."""

    def __init__(self, client, namespace: str) -> None:
        if not 1 <= len(namespace) <= MAX_NAME or namespace.startswith(":") or namespace.startswith("AWS/"):
            raise ValueError(f"CloudWatch namespace {namespace!r}: 1 to {MAX_NAME} characters, not starting "
                             "with ':' or 'AWS/' (reserved for AWS)")
        self.client, self.namespace, self.pending = client, namespace, []

    def put(self, name, value, unit=None, dimensions=None, timestamp=None) -> Datum:
        datum = make_datum(name, value, unit, dimensions, timestamp)
        now = datetime.now(timezone.utc)
        if not now - MAX_AGE <= datum.timestamp <= now + MAX_AHEAD:
            raise ValueError(f"metric {name!r}: field 'timestamp' {datum.timestamp.isoformat()} is outside "
                             "what CloudWatch accepts (two weeks back to two hours ahead)")
        self.pending.append(datum)
        return datum

    def flush(self) -> int:
        """Send every pending datapoint (rollups included); returns how many were sent."""
        data = [wire for datum in self.pending for wire in _wire(datum)]
        for batch in _batches(data):
            self.client.put_metric_data(Namespace=self.namespace, MetricData=batch)
        self.pending = []
        return len(data)


def _wire(datum: Datum) -> list[dict]:
    base = {"MetricName": datum.name, "Value": datum.value, "Unit": datum.unit, "Timestamp": datum.timestamp}
    sets = [datum.dimensions]
    spec = VOCABULARY.get(datum.name)
    if spec is not None and spec.rollup and "tier" in datum.dimensions and len(datum.dimensions) > 1:
        sets.append({"tier": datum.dimensions["tier"]})
    return [{**base, "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(dims.items())]} for dims in sets]


def _batches(data: list[dict]) -> Iterable[list[dict]]:
    batch, size = [], 0
    for item in data:
        # Upper bound of the encoded datum (JSON text is at least as long as CBOR or the query form).
        cost = len(json.dumps(item, default=str)) + 64
        if batch and (len(batch) == MAX_DATA_PER_CALL or size + cost > MAX_CALL_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += cost
    if batch:
        yield batch


def emit(sink: MetricsSink, values: Mapping[str, float], dimensions: Mapping[str, str],
         timestamp: datetime | None = None) -> int:
    """Put each vocabulary metric of `values` with the same dimensions; returns how many."""
    for name, value in values.items():
        sink.put(name, value, dimensions=dimensions, timestamp=timestamp)
    return len(values)


def read_metrics(store: ArtifactStoreClient, name: str | None = None, prefix: str = METRICS_PREFIX) -> list[dict]:
    """Every datapoint a `LocalMetricsSink` wrote (of one metric, when `name` is given), oldest first."""
    rows = []
    for key in store.list(prefix):
        if key.endswith(".jsonl"):
            rows += [json.loads(line) for line in store.get_bytes(key).decode().splitlines() if line]
    rows = [r for r in rows if name is None or r["name"] == name]
    return sorted(rows, key=lambda r: r["timestamp"])


def chart_png(rows: list[dict], name: str) -> bytes:
    """A line per dimension set (tier · asset · job) of one metric over time, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import dates as mdates
    from matplotlib import pyplot as plt

    rows = [r for r in rows if r["name"] == name]
    if not rows:
        raise ValueError(f"no datapoint of metric {name!r} to chart")
    series: dict[str, list[tuple[datetime, float]]] = {}
    for row in rows:
        label = " · ".join(row["dimensions"][k] for k in DIMENSIONS if k in row["dimensions"]) or "all"
        series.setdefault(label, []).append((datetime.fromisoformat(row["timestamp"]), row["value"]))
    fig, ax = plt.subplots(figsize=(7, 3))
    for label, points in sorted(series.items()):
        points.sort()
        ax.plot([t for t, _ in points], [v for _, v in points], marker="o", markersize=3, label=label)
    unit = rows[0]["unit"]
    spec = VOCABULARY.get(name)
    ax.set_title(f"{name}" + (f": {spec.description}" if spec else ""), fontsize=8)
    ax.set_ylabel("USD" if name.endswith("Cost") or name.endswith("CostEstimate") else unit, fontsize=8)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


# Figures -> datapoints. Each returns {metric name: value}, without the figures that are missing.

TRAINING_PRICE_PER_HOUR = {"ml.p5.48xlarge": 113.07, "ml.g6.12xlarge": 5.752, "ml.g5.12xlarge": 7.09}
"""USD per instance-hour of SageMaker training on demand (us-east-1 list prices; not a quote, and
managed spot bills less): the basis of `TrainingCostEstimate`. Override per instance type in
`MonitoringResource.training_price_per_hour`."""


def training_cost(instance_type: str, instance_count: int, wall_seconds: float,
                  prices: Mapping[str, float] = TRAINING_PRICE_PER_HOUR) -> float:
    try:
        price = prices[instance_type]
    except KeyError:
        raise ValueError(f"no training price for instance type {instance_type!r}; known: {sorted(prices)}. "
                         "Add it to MonitoringResource.training_price_per_hour") from None
    return instance_count * price * wall_seconds / 3600.0


def training_metrics(summary: Mapping, metrics: list[dict], cost_usd: float) -> dict[str, float]:
    """From a finished SRL/RLVR launch: last reward and loss, seconds per step, drop rate, cost."""
    out = {"TrainingCostEstimate": cost_usd}
    rewards = [r["reward"] for r in metrics if _finite(r.get("reward"))]
    losses = [r["loss"] for r in metrics if _finite(r.get("loss"))]
    step_times = [r["step_time"] for r in metrics if _finite(r.get("step_time"))]
    if rewards:
        out["TrainingReward"] = rewards[-1]
    if losses:
        out["TrainingLoss"] = losses[-1]
    if step_times:
        out["TrainingStepSeconds"] = sum(step_times) / len(step_times)
    if _finite(summary.get("drop_rate")):
        out["TrainingDropRate"] = summary["drop_rate"]
    return out


def distillation_metrics(summary: Mapping, cost_usd: float) -> dict[str, float]:
    """From a finished distillation launch: last loss, steps, cost."""
    out = {"TrainingCostEstimate": cost_usd, "DistillationSteps": summary["global_step"]}
    losses = [loss for _, loss in summary.get("loss_curve", []) if _finite(loss)]
    if losses:
        out["DistillationLoss"] = losses[-1]
    return out


def quality_metrics(report: Mapping) -> dict[str, float]:
    """From a quality report (`srl_platform.quality.build_report`): the student's figures."""
    student = report["student"]
    candidates = {"QualityAccuracy": student.get("accuracy"), "QualityGateRatio": report["gate"].get("ratio"),
                  "EvalTokensPerSecond": student.get("solve_tokens_per_second")}
    return {name: value for name, value in candidates.items() if _finite(value)}


def serving_metrics(rows: Iterable[Mapping]) -> dict[str, dict[str, float]]:
    """Per served tier (a serving-log row's `model`), from serving-log rows: requests, mean and
    95th-percentile latency, tokens."""
    by_tier: dict[str, list[Mapping]] = {}
    for row in rows:
        by_tier.setdefault(row["model"], []).append(row)
    out = {}
    for tier, tier_rows in sorted(by_tier.items()):
        latencies = sorted(float(r["latency_ms"]) for r in tier_rows)
        out[tier] = {"ServingRequests": len(tier_rows),
                     "ServingLatency": sum(latencies) / len(latencies),
                     "ServingLatencyP95": latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)],
                     "ServingTokens": sum(int(r["prompt_tokens"]) + int(r["completion_tokens"]) for r in tier_rows)}
    return out


def record_serving_request(sink: MetricsSink, tier: str, latency_ms: float, tokens: int, error: bool) -> None:
    """One request as the serving front end saw it (its error rate drives the serving alarm)."""
    dims = {"tier": tier}
    sink.put("ServingRequests", 1, dimensions=dims)
    sink.put("ServingErrors", 1 if error else 0, dimensions=dims)
    sink.put("ServingLatency", latency_ms, dimensions=dims)
    sink.put("ServingTokens", tokens, dimensions=dims)


def record_router_decision(sink: MetricsSink, decision) -> None:
    """One `srl_platform.router.Decision`: the chosen tier, whether it escalated, its expected cost."""
    dims = {"tier": decision.tier}
    sink.put("RouterDecisions", 1, dimensions=dims)
    sink.put("RouterEscalations", 1 if decision.escalated else 0, dimensions=dims)
    sink.put("RouterExpectedCost", decision.cost, dimensions=dims)


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
