"""The router's settings and table as an asset: which tier each request should go to, and why.

`router_settings` reads the quality reports of the tiers the registry serves and writes
`serving/router.json` (`srl_platform.router.Router.from_json` loads it). It depends on
`quality_report` and `registered_model`, so a new report or a new approval marks it stale, and it
runs with the serving manifest at the end of the cascade.
"""

import json

from dagster import AssetExecutionContext, Config, DataVersion, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.data import OWNERS, VALIDATED_TRACES_KEY
from assets.distillation import current_distilled
from assets.promotion import quality_report_key
from assets.retries import storage_retry_policy
from resources.registry import ModelRegistryResource
from resources.storage import ArtifactStore
from srl_platform.registry import ModelRegistry
from srl_platform.router import Router, RouterSettings
from srl_platform.router_table import ALL, TierEvaluation, build_table, evaluations_from_quality_reports
from srl_platform.storage import ArtifactStoreClient, content_hash
from srl_platform.tiers import STUDENT_TIERS, TIER_NAMES
from srl_platform.traces import records_from_parquet_bytes

ROUTER_KEY = "serving/router.json"
ROUTING_CODE_VERSION = "1"
_DEFAULTS = RouterSettings()


class RouterConfig(Config):
    """`RouterSettings` as run config (see its fields' documentation)."""

    target: float = Field(default=_DEFAULTS.target, description="Default expected-quality target of a request.")
    prior_strength: float = Field(default=_DEFAULTS.prior_strength, ge=0,
                                  description="Beta-prior weight (problems) toward each tier's overall figure.")
    cascade: bool = Field(default=_DEFAULTS.cascade, description="Cheapest first, verify, escalate on failure.")
    tiers: list[str] = Field(default=list(_DEFAULTS.tiers), description="Tiers the router may send traffic to.")
    serving_price_per_hour: dict[str, float] = Field(
        default_factory=dict, description="USD/h per tier instead of its on-demand list price (tiers.SERVING).")

    def settings(self) -> RouterSettings:
        return RouterSettings(target=self.target, prior_strength=self.prior_strength, cascade=self.cascade,
                              tiers=tuple(self.tiers), serving_price_per_hour=dict(self.serving_price_per_hour))


@asset(
    deps=["quality_report", "registered_model"],
    group_name="serving",
    kinds={"python"},
    owners=OWNERS,
    code_version=ROUTING_CODE_VERSION,
    retry_policy=storage_retry_policy,
)
def router_settings(context: AssetExecutionContext, config: RouterConfig, store: ArtifactStore,
                    registry: ModelRegistryResource) -> MaterializeResult:
    """How the cost-benefit router picks a tier per request: each tier's expected quality per task
    family and difficulty (held-out results, smoothed), its cost per 1M tokens and per request,
    and the settings. A student tier's figures come from its approved version's quality report;
    a tier with no approved version is listed but gets no traffic. Bronze's come from silver's
    report (bronze is silver's teacher). JSON at `serving/router.json`.
    Idempotent: a function of the reports, the registry and the config."""
    client = store.client()
    settings = config.settings()
    evaluations = _evaluations(client, registry.client(client))
    traces = [t for t in records_from_parquet_bytes(client.get_bytes(VALIDATED_TRACES_KEY)) if t.get("split") == "test"]
    table = build_table(evaluations.values(), traces, settings.prior_strength, settings.serving_price_per_hour)
    router = Router(table, settings)  # fails here, with the reason, when no tier can take traffic
    body = (json.dumps({"settings": settings.as_dict(), "table": table.as_dict()}, indent=2)
            + "\n").encode()
    uri = client.put_bytes(ROUTER_KEY, body)
    for entry in table.tiers.values():
        if not entry.serving:
            context.log.warning(f"{entry.tier}: {entry.note}")
    return MaterializeResult(
        metadata={
            "router_uri": MetadataValue.path(uri),
            "tiers": MetadataValue.md(table.markdown()),
            "expected_quality": MetadataValue.md(table.cells_markdown()),
            "routes_at_target": MetadataValue.md(_routes(router)),
            "metric": MetadataValue.text(table.metric),
            "metric_why": MetadataValue.text(table.metric_why),
            "target": MetadataValue.float(settings.target),
            "cascade": MetadataValue.bool(settings.cascade),
            **{f"{name}_cost_per_1m_tokens": MetadataValue.float(entry.cost_per_1m_tokens)
               for name, entry in table.tiers.items()},
        },
        data_version=DataVersion(content_hash(body)),
    )


def _evaluations(client: ArtifactStoreClient, registry: ModelRegistry) -> dict[str, TierEvaluation]:
    """Every tier's evaluation: a student tier's approved version's report, else (listed, not
    serving) its newest candidate's; bronze as the teacher in silver's report."""
    reports, sources = {}, {}
    status = {"bronze": (True, "the bronze SRL→RLVR adapter (not gated), evaluated as silver's teacher")}
    for tier in STUDENT_TIERS:
        approved = registry.latest_approved(tier)
        if approved is not None and approved.metadata.get("quality_report_key"):
            key, status[tier] = approved.metadata["quality_report_key"], (True, f"serving approved v{approved.version}")
        else:
            current = current_distilled(client, tier)
            if current is None or not client.exists(quality_report_key(tier, current["version"])):
                continue
            key = quality_report_key(tier, current["version"])
            status[tier] = (False, "no approved version: its newest candidate is listed, routed no traffic")
        reports[tier], sources[tier] = json.loads(client.get_bytes(key)), client.uri(key)
    if not reports:
        raise Failure("router_settings: no quality report yet; materialize quality_report[silver] "
                      "and quality_report[gold] first", allow_retries=False)
    if not client.exists(VALIDATED_TRACES_KEY):
        raise Failure(f"{client.uri(VALIDATED_TRACES_KEY)} does not exist; materialize validated_traces first",
                      allow_retries=False)
    found = evaluations_from_quality_reports(reports, sources)
    return {tier: TierEvaluation(tier, found[tier].evaluation, found[tier].source,
                                 *status.get(tier, (False, "no quality report of its own: routed no traffic")))
            for tier in TIER_NAMES if tier in found}


def _routes(router: Router) -> str:
    """Where requests of each (family, difficulty) in the table go at the default target."""
    keys = sorted({(family, difficulty) for entry in router.table.tiers.values()
                   for family, cells in entry.cells.items() for difficulty in cells if difficulty != ALL})
    lines = [f"| family | difficulty | tier (target {router.settings.target:g}) | why |", "|---|---|---|---|"]
    if not keys:  # no per-problem cells (fallback metric): every request looks alike
        decision = router.route("arithmetic")
        return "\n".join([*lines, f"| any | any | {decision.tier} | {decision.reason} |"])
    for family, difficulty in keys:
        decision = router.route(family, difficulty)
        lines.append(f"| {family} | {difficulty} | {decision.tier} | {decision.reason} |")
    return "\n".join(lines)
