"""The serving manifest: which adapter version each tier serves, from the model registry.

A tier serves its highest approved version. When its newest candidate is not that version (rejected
by the quality gate, still pending, or there is no approved version at all) the manifest says the tier
is serving a stale version, or nothing, and why: a fallback is explicit, never silent.
"""

from __future__ import annotations

from srl_platform.registry import APPROVED, ModelRegistry, ModelVersion

MANIFEST_KEY = "serving/manifest.json"


def version_label(version: int) -> str:
    """How a registry version is named where it serves: the `adapter_version` of serving-log rows."""
    return f"v{version}"


def tier_entry(registry: ModelRegistry, tier: str) -> dict:
    """One tier's line of the manifest."""
    versions = registry.versions(tier)
    approved = registry.latest_approved(tier)
    newest = versions[-1] if versions else None
    entry = {
        "tier": tier,
        "serving_version": approved.version if approved else None,
        "adapter_uri": approved.adapter_uri if approved else None,
        "data_version": approved.data_version if approved else None,
        "newest_version": newest.version if newest else None,
        "newest_status": newest.status if newest else None,
        "stale": newest is not None and (approved is None or newest.version != approved.version),
        "reason": _reason(newest, approved),
    }
    if approved is not None:
        entry["approved_at"] = approved.decided_at
        entry["quality"] = {k: v for k, v in approved.metadata.items() if k.startswith("quality_")}
    return entry


def build_manifest(registry: ModelRegistry, tiers: tuple[str, ...]) -> dict:
    return {"tiers": {tier: tier_entry(registry, tier) for tier in tiers}}


def _reason(newest: ModelVersion | None, approved: ModelVersion | None) -> str:
    if newest is None:
        return "no version registered yet: nothing to serve"
    if approved is not None and newest.version == approved.version:
        return f"serving the newest version v{newest.version} (approved: {newest.decision_reason})"
    why = (f"newest v{newest.version} was rejected: {newest.decision_reason}" if newest.status != APPROVED
           and newest.decided_at else f"newest v{newest.version} is {newest.status}")
    if approved is None:
        return f"{why}; no earlier version was approved, so the tier serves nothing"
    return f"{why}; serving the last approved v{approved.version} instead (stale)"
