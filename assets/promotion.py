"""The cascade's promotion stage: quality report, registration behind the quality gate, serving manifest.

- `quality_report[tier]`: the distilled student against its teacher on held-out problems (the test
  split of `validated_traces`, never trained on), with the previous approved version's numbers.
- `registered_model[tier]`: every candidate is registered; only one that passes the gate is approved,
  the rest are rejected with the reason. Its checks: `retains_teacher_quality` (blocking: the run
  fails, and nothing selected downstream in it is materialized) and `no_regression_vs_approved` (WARN).
- `serving_manifest`: each tier's approved adapter version, and when a tier serves a stale version
  (or none), why. Materialized on its own at the end of the cascade, after every tier has been
  decided, so a failed gate never keeps the manifest from recording the fallback.
"""

import base64
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.data import OWNERS, VALIDATED_TRACES_KEY
from assets.distillation import current_distilled, student_partitions, teacher_adapter, teacher_traces_key
from assets.monitoring import record
from assets.retries import storage_retry_policy
from resources.monitoring import MonitoringResource
from resources.registry import ModelRegistryResource
from resources.storage import ArtifactStore
from srl_platform import quality
from srl_platform.evaluate import EvalSettings, evaluate
from srl_platform.models import fingerprint
from srl_platform.monitoring import quality_metrics
from srl_platform.registry import APPROVED, DecisionFinalError
from srl_platform.router_table import cost_per_1m_tokens
from srl_platform.serving import MANIFEST_KEY, build_manifest
from srl_platform.storage import ArtifactStoreClient, content_hash, get_dir
from srl_platform.tiers import ADAPTER_WEIGHTS, STUDENT_TIERS, get_serving, get_tier
from srl_platform.traces import records_from_parquet_bytes

PROMOTION_CODE_VERSION = "2"
EVAL_CACHE_PREFIX = "reports/eval_cache"
GATE_ACTOR = "srl-platform quality gate"
_DEFAULTS = EvalSettings()


def quality_report_key(tier: str, adapter_version: str) -> str:
    """One report per candidate, so an approved version's numbers stay readable next to newer ones."""
    return f"reports/{tier}/quality/{adapter_version}.json"


class QualityConfig(Config):
    """Held-out evaluation size and the gate. The student and teacher are evaluated alike."""

    max_problems: int | None = Field(default=_DEFAULTS.max_problems, ge=1,
                                     description="Held-out problems (None: the whole test split).")
    max_step_instances: int | None = Field(default=_DEFAULTS.max_step_instances, ge=1,
                                           description="Expert step instances scored.")
    solve_max_new_tokens: int = Field(default=_DEFAULTS.solve_max_new_tokens, ge=1)
    step_max_new_tokens: int = Field(default=_DEFAULTS.step_max_new_tokens, ge=1)
    min_quality_ratio: float | None = Field(
        default=None, gt=0, description="Gate threshold (default: the tier's TierSpec.min_quality_ratio).")
    base_model: str | None = Field(default=None, description="The student's base model (default: the tier's).")
    teacher_base_model: str | None = Field(default=None, description="The teacher's base model.")

    def settings(self) -> EvalSettings:
        return EvalSettings(max_problems=self.max_problems, max_step_instances=self.max_step_instances,
                            solve_max_new_tokens=self.solve_max_new_tokens,
                            step_max_new_tokens=self.step_max_new_tokens)


@asset(
    partitions_def=student_partitions,
    deps=["distilled_adapter", "teacher_traces", "validated_traces"],
    group_name="promotion",
    kinds={"python", "pytorch"},
    owners=OWNERS,
    code_version=PROMOTION_CODE_VERSION,
    retry_policy=storage_retry_policy,
)
def quality_report(context: AssetExecutionContext, config: QualityConfig, store: ArtifactStore,
                   registry: ModelRegistryResource, monitoring: MonitoringResource) -> MaterializeResult:
    """How much of its teacher's quality the distilled student keeps, measured on held-out problems
    neither trained on: accuracy, mean step reward, format violations, output length, tokens/s, the
    student/teacher ratios and the gate's verdict, with the previous approved version beside them.
    JSON at `reports/{tier}/quality/{adapter version}.json`; table and chart in the metadata.

    Idempotent: greedy decoding; each evaluation is cached in the store by what was evaluated
    (weights, base model, data, settings), so gold's teacher (silver's student) is evaluated once.
    """
    tier = context.partition_key
    client = store.client()
    settings = config.settings()
    problems, data_version = _held_out(client)
    current = current_distilled(client, tier)
    if current is None:
        raise Failure(f"quality_report[{tier}]: no distilled adapter yet; materialize "
                      f"distilled_adapter[{tier}] first", allow_retries=False)
    with tempfile.TemporaryDirectory(prefix=f"quality-{tier}-") as tmp:
        student_dir = get_dir(client, current["key"], Path(tmp) / "student")
        teacher = teacher_adapter(client, tier, Path(tmp) / "teacher")
        traced = json.loads(client.get_bytes(teacher_traces_key(tier)).split(b"\n", 1)[0])
        if traced.get("teacher_adapter_version") != teacher["version"]:
            context.log.warning(f"the {teacher['tier']} adapter changed since teacher_traces[{tier}] was "
                                "generated: the student is compared with the current teacher")
        student_base = config.base_model or get_tier(tier).base_model
        teacher_base = config.teacher_base_model or get_tier(teacher["tier"]).base_model
        student = _cached_eval(context, client, student_base, student_dir, problems, data_version, settings)
        teacher_eval = _cached_eval(context, client, teacher_base, teacher["dir"], problems, data_version,
                                    settings)
    approved = _approved_report(client, registry, tier)
    min_ratio = config.min_quality_ratio or get_tier(tier).min_quality_ratio
    report = quality.build_report(tier, teacher["tier"], _figures(student), _figures(teacher_eval),
                                  min_ratio, approved=approved)
    report |= {"adapter_uri": current["uri"], "adapter_version": current["version"],
               "teacher_adapter_uri": teacher["uri"], "teacher_adapter_version": teacher["version"],
               "eval_data": {"uri": client.uri(VALIDATED_TRACES_KEY), "data_version": data_version,
                             "split": "test", "problems": len(problems)},
               "settings": asdict(settings)}
    body = (json.dumps(report, indent=2) + "\n").encode()
    uri = client.put_bytes(quality_report_key(tier, current["version"]), body)
    png = quality.chart_png(report)
    chart_uri = client.put_bytes(f"reports/{tier}/quality/{current['version']}.png", png)
    record(context, monitoring, client, quality_metrics(report), tier)
    gate = report["gate"]
    return MaterializeResult(
        metadata={
            "report_uri": MetadataValue.path(uri),
            "comparison": MetadataValue.md(quality.comparison_table(report)),
            "chart": MetadataValue.md(f"![quality](data:image/png;base64,{base64.b64encode(png).decode()})"),
            "chart_uri": MetadataValue.path(chart_uri),
            "gate": MetadataValue.text(quality.gate_reason(report)),
            "gate_metric": MetadataValue.text(gate["metric"]),
            "gate_metric_why": MetadataValue.text(gate["why"]),
            "gate_ratio": MetadataValue.float(gate["ratio"] if gate["ratio"] is not None else float("nan")),
            "gate_passed": MetadataValue.bool(gate["passed"]),
            "accuracy": MetadataValue.float(report["student"]["accuracy"]),
            "teacher_accuracy": MetadataValue.float(report["teacher"]["accuracy"]),
            "mean_step_reward": MetadataValue.float(report["student"]["mean_step_reward"]),
            "teacher_mean_step_reward": MetadataValue.float(report["teacher"]["mean_step_reward"]),
            "speed_ratio": MetadataValue.float(report["speed_ratio"] or float("nan")),
            "adapter_version": MetadataValue.text(current["version"]),
            "teacher_adapter_version": MetadataValue.text(teacher["version"]),
            "approved_version": MetadataValue.text(str(report["approved_version"] or "none")),
        },
        data_version=DataVersion(content_hash(body)),
    )


def _held_out(client: ArtifactStoreClient) -> tuple[list[dict], str]:
    if not client.exists(VALIDATED_TRACES_KEY):
        raise Failure(f"{client.uri(VALIDATED_TRACES_KEY)} does not exist; materialize `validated_traces` "
                      "first", allow_retries=False)
    data = client.get_bytes(VALIDATED_TRACES_KEY)
    problems = [t for t in records_from_parquet_bytes(data) if t.get("split") == "test"]
    if not problems:
        raise Failure(f"{client.uri(VALIDATED_TRACES_KEY)} has no test-split trace: nothing held out",
                      allow_retries=False)
    return problems, content_hash(data)


def _cached_eval(context, client: ArtifactStoreClient, base_model: str, adapter_dir: Path,
                 problems: list[dict], data_version: str, settings: EvalSettings) -> dict:
    weights = (adapter_dir / ADAPTER_WEIGHTS).read_bytes()
    identity = content_hash(weights, fingerprint(base_model).encode(), data_version.encode(),
                            json.dumps(asdict(settings), sort_keys=True).encode(), PROMOTION_CODE_VERSION.encode())
    key = f"{EVAL_CACHE_PREFIX}/{identity}.json"
    if client.exists(key):
        context.log.info(f"evaluation of {adapter_dir.name} from cache {client.uri(key)}")
        return json.loads(client.get_bytes(key))
    context.log.info(f"evaluating {base_model} + {adapter_dir.name} on {len(problems)} held-out problems")
    report = evaluate(base_model, problems, adapter=str(adapter_dir), settings=settings)
    client.put_bytes(key, (json.dumps(report, indent=2) + "\n").encode())
    return report


def _figures(report: dict) -> dict:
    # `results` (per held-out problem) lets the router estimate quality per task family and difficulty.
    keep = ("accuracy", "correct", "problems", "mean_step_reward", "format_violation_rate",
            "format_violations", "mean_solve_tokens", "solve_tokens_per_second", "step_instances", "results")
    return {k: report[k] for k in keep}


def _approved_report(client: ArtifactStoreClient, registry: ModelRegistryResource, tier: str) -> dict | None:
    approved = registry.client(client).latest_approved(tier)
    if approved is None or not approved.metadata.get("quality_report_key"):
        return None
    return {**json.loads(client.get_bytes(approved.metadata["quality_report_key"])), "version": approved.version}


@asset(
    partitions_def=student_partitions,
    deps=["quality_report"],
    group_name="promotion",
    kinds={"python"},
    owners=OWNERS,
    code_version=PROMOTION_CODE_VERSION,
    retry_policy=storage_retry_policy,
    check_specs=[
        AssetCheckSpec("retains_teacher_quality", asset="registered_model", blocking=True,
                       description="The student keeps at least min_quality_ratio of its teacher's quality."),
        AssetCheckSpec("no_regression_vs_approved", asset="registered_model",
                       description="The candidate is no worse than the version serving now (WARN)."),
    ],
)
def registered_model(context: AssetExecutionContext, store: ArtifactStore, registry: ModelRegistryResource):
    """The tier's distilled candidate in the model registry, approved when it passed the quality gate
    and rejected (with the gate's reason) when it did not; a rejected tier keeps serving its last
    approved version. Idempotent: a registration is keyed by the adapter's content version, and a
    decision once made is final, so a re-run changes nothing."""
    tier = context.partition_key
    client = store.client()
    current = current_distilled(client, tier)
    key = quality_report_key(tier, current["version"]) if current else None
    if key is None or not client.exists(key):
        raise Failure(f"registered_model[{tier}]: no quality report for the current candidate; materialize "
                      f"quality_report[{tier}] first", allow_retries=False)
    report = json.loads(client.get_bytes(key))
    reg = registry.client(client)
    model = reg.register(tier, report["adapter_uri"], report["adapter_version"], _registry_metadata(report, key))
    reason = quality.gate_reason(report)
    try:
        model = (reg.approve if report["gate"]["passed"] else reg.reject)(tier, model.version, GATE_ACTOR, reason)
    except DecisionFinalError:
        model = reg.get(tier, model.version)
        context.log.warning(f"{tier} v{model.version} was decided earlier ({model.status}: "
                            f"{model.decision_reason}); decisions are final, so it stands")
    yield MaterializeResult(
        metadata={
            "version": MetadataValue.int(model.version),
            "status": MetadataValue.text(model.status),
            "decision": MetadataValue.text(model.decision_reason or ""),
            "decided_by": MetadataValue.text(model.decided_by or ""),
            "adapter_uri": MetadataValue.path(model.adapter_uri),
            "quality_report_uri": MetadataValue.path(client.uri(key)),
            "registry": MetadataValue.text(model.arn or "local registry"),
        },
        data_version=DataVersion(f"{model.version}-{model.status}"),
    )
    gate = report["gate"]
    yield AssetCheckResult(
        check_name="retains_teacher_quality", passed=model.status == APPROVED,
        metadata={"ratio": MetadataValue.float(gate["ratio"] if gate["ratio"] is not None else float("nan")),
                  "min_ratio": MetadataValue.float(gate["min_ratio"]),
                  "metric": MetadataValue.text(gate["metric"]), "why_metric": MetadataValue.text(gate["why"]),
                  "student": MetadataValue.float(report["student"][gate["metric"]]),
                  "teacher": MetadataValue.float(report["teacher"][gate["metric"]]),
                  "version": MetadataValue.int(model.version), "status": MetadataValue.text(model.status)},
        description=reason)
    regression = report["regression"]
    yield AssetCheckResult(
        check_name="no_regression_vs_approved", severity=AssetCheckSeverity.WARN,
        passed=regression is None or not regression["regressed"],
        metadata={} if regression is None else {
            "metric": MetadataValue.text(regression["metric"]),
            "candidate": MetadataValue.float(regression["candidate"]),
            "approved": MetadataValue.float(regression["approved"]),
            "approved_version": MetadataValue.int(regression["approved_version"])},
        description="no approved version to compare with" if regression is None else
        f"candidate {regression['metric']} {regression['candidate']:.4f} vs approved "
        f"v{regression['approved_version']} {regression['approved']:.4f}")


def _cost_per_1m_tokens(tier: str, student: dict) -> float:
    try:
        return cost_per_1m_tokens(get_serving(tier).price_per_hour, student["solve_tokens_per_second"])
    except ValueError:
        return float("nan")  # no throughput measured: recorded as "nan", the router refuses such a report


def _registry_metadata(report: dict, report_key: str) -> dict[str, str]:
    student = report["student"]
    return {
        "quality_report_key": report_key,
        "quality_accuracy": f"{student['accuracy']:.4f}",
        "quality_mean_step_reward": f"{student['mean_step_reward']:.4f}",
        "quality_format_violation_rate": f"{student['format_violation_rate']:.4f}",
        "quality_gate_metric": report["gate"]["metric"],
        "quality_gate_ratio": "none" if report["gate"]["ratio"] is None else f"{report['gate']['ratio']:.4f}",
        "cost_tokens_per_second": f"{student['solve_tokens_per_second']:.2f}",
        "cost_instance_type": get_tier(report["tier"]).instance_type,
        # Serving list price (tiers.SERVING) / measured tokens/s: the router's cost figure.
        "cost_per_1m_tokens": f"{_cost_per_1m_tokens(report['tier'], student):.4f}",
        "cost_serving_instance_type": get_serving(report["tier"]).instance_type,
        "teacher_tier": report["teacher_tier"],
        "teacher_adapter_version": report["teacher_adapter_version"],
        "eval_data_version": report["eval_data"]["data_version"],
    }


@asset(
    deps=["registered_model"],
    group_name="promotion",
    kinds={"python"},
    owners=OWNERS,
    code_version=PROMOTION_CODE_VERSION,
    retry_policy=storage_retry_policy,
)
def serving_manifest(context: AssetExecutionContext, store: ArtifactStore,
                     registry: ModelRegistryResource) -> MaterializeResult:
    """What each serving tier serves: its highest approved adapter version from the registry, and,
    when the newest candidate was not approved, that the tier is serving a stale version (or none)
    and why. JSON at `serving/manifest.json`. Idempotent: a function of the registry's state."""
    client = store.client()
    manifest = build_manifest(registry.client(client), STUDENT_TIERS)
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    uri = client.put_bytes(MANIFEST_KEY, body)
    lines = ["| tier | serving | newest | stale | why |", "|---|---:|---:|---|---|"]
    for tier, entry in manifest["tiers"].items():
        lines.append(f"| {tier} | {_v(entry['serving_version'])} | {_v(entry['newest_version'])} "
                     f"({entry['newest_status'] or '–'}) | {'yes' if entry['stale'] else 'no'} | {entry['reason']} |")
        if entry["stale"]:
            context.log.warning(f"{tier}: {entry['reason']}")
    stale = [tier for tier, entry in manifest["tiers"].items() if entry["stale"]]
    return MaterializeResult(
        metadata={"manifest_uri": MetadataValue.path(uri), "tiers": MetadataValue.md("\n".join(lines)),
                  "stale_tiers": MetadataValue.text(", ".join(stale) or "none"),
                  **{f"{tier}_version": MetadataValue.text(_v(entry["serving_version"]))
                     for tier, entry in manifest["tiers"].items()}},
        data_version=DataVersion(content_hash(body)),
    )


def _v(version: int | None) -> str:
    return f"v{version}" if version is not None else "none"
