"""The cascade's last step: the server serves what the serving manifest says.

`served_adapters` downloads each tier's approved adapter from the artefact store and swaps the
tier's served name to it on the running server (`ServingResource`: the embedded `srl serve`, or
vLLM), without restarting it or its clients. A tier that fails to deploy keeps serving its previous
adapter; its check `serves_the_manifest` fails and says why.
"""

import json
import os
import re
import shutil
import uuid
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.data import OWNERS
from resources.serving import ServingResource
from resources.storage import ArtifactStore
from srl_platform.serving import MANIFEST_KEY, version_label
from srl_platform.serving_backends import ServingUnavailable, TierOutcome, sync_manifest
from srl_platform.serving_server import ADAPTER_INFO
from srl_platform.storage import ArtifactStoreClient, content_hash, get_dir
from srl_platform.tiers import ADAPTER_WEIGHTS

SERVING_CODE_VERSION = "1"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def store_key(client: ArtifactStoreClient, uri: str) -> str:
    """The store key of an artefact URI (`file:///root/adapters/...` or `s3://bucket/prefix/...`)."""
    root = client.uri("_")[:-1]  # the URI of the store's root, with its trailing separator
    if not isinstance(uri, str) or not uri.startswith(root):
        raise ValueError(f"adapter_uri {uri!r} is not in the artefact store {client.root!r} (expected a URI "
                         f"under {root})")
    return uri[len(root):]


def adapter_path(adapter_dir: Path, tier: str, entry: dict) -> Path:
    """Where a manifest entry's adapter is (or will be) downloaded: the root the server reports for it."""
    name = entry.get("data_version") or f"v{entry['serving_version']}"
    if not _SAFE_NAME.match(str(name)):
        raise ValueError(f"serving manifest: tiers[{tier!r}].data_version {name!r} is not a safe directory name")
    return (adapter_dir / tier / str(name)).resolve()


def fetch_adapter(client: ArtifactStoreClient, adapter_dir: Path, tier: str, entry: dict) -> Path:
    """Download a manifest entry's adapter to `adapter_dir/tier/data_version` once (a directory
    appears complete or not at all) and return that path: the same version gives the same path.
    `srl_adapter.json` beside the weights names the tier and version, which `srl serve` writes as
    the serving logs' `adapter_version` (the drift sensor compares traffic per version)."""
    target = adapter_path(adapter_dir, tier, entry)
    if (target / ADAPTER_WEIGHTS).is_file():
        return target
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        get_dir(client, store_key(client, entry["adapter_uri"]), staging)
        if not (staging / ADAPTER_WEIGHTS).is_file():
            raise FileNotFoundError(f"{entry['adapter_uri']} holds no {ADAPTER_WEIGHTS}")
        (staging / ADAPTER_INFO).write_text(json.dumps(
            {"tier": tier, "version": version_label(entry["serving_version"]),
             "data_version": entry.get("data_version")}, sort_keys=True))
        if target.exists():  # an earlier, interrupted copy without weights
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def outcomes_table(outcomes: list[TierOutcome]) -> str:
    lines = ["| tier | outcome | version | serving | why |", "|---|---|---|---|---|"]
    lines += [f"| {o.tier} | {o.status} | {o.version or '–'} | {o.serving or 'nothing'} | {o.reason} |"
              for o in outcomes]
    return "\n".join(lines)


@asset(
    deps=["serving_manifest"],
    group_name="serving",
    kinds={"python"},
    owners=OWNERS,
    code_version=SERVING_CODE_VERSION,
    check_specs=[AssetCheckSpec("serves_the_manifest", asset="served_adapters",
                                description="Every tier with an approved version serves it.")],
)
def served_adapters(context: AssetExecutionContext, store: ArtifactStore, serving: ServingResource) -> MaterializeResult:
    """What each tier's served name answers with on the serving endpoint: its approved adapter from
    `serving/manifest.json`, hot-swapped in without a restart (in-flight requests finish on the version
    they started with). A tier whose new version cannot be fetched, is wider than the server's
    `max_lora_rank` or fails to load keeps serving its previous adapter, and `serves_the_manifest`
    fails with the reason. Idempotent: a version already served is left alone."""
    client = store.client()
    if not client.exists(MANIFEST_KEY):
        raise Failure(f"{client.uri(MANIFEST_KEY)} does not exist; materialize serving_manifest first",
                      allow_retries=False)
    manifest = json.loads(client.get_bytes(MANIFEST_KEY))
    backend = serving.backend()
    adapter_dir = Path(serving.adapter_dir)
    try:
        outcomes = sync_manifest(backend, manifest, lambda tier, entry: fetch_adapter(client, adapter_dir, tier, entry))
    except ServingUnavailable as error:
        raise Failure(f"the {serving.kind} serving endpoint {serving.url} is unreachable: {error}. Start it "
                      f"(`srl serve --base-model ... --port ...` for the embedded server) or set ServingResource.url",
                      allow_retries=False) from None
    for outcome in outcomes:
        log = context.log.error if outcome.status == "failed" else context.log.info
        log(f"{outcome.tier}: {outcome.status} {outcome.version or ''}: {outcome.reason}")
    failed = [o.tier for o in outcomes if o.status == "failed"]
    table = outcomes_table(outcomes)
    state = json.dumps({o.tier: o.serving for o in outcomes}, sort_keys=True).encode()
    return MaterializeResult(
        metadata={
            "endpoint": MetadataValue.url(serving.url),
            "kind": MetadataValue.text(serving.kind),
            "tiers": MetadataValue.md(table),
            "deployed": MetadataValue.int(sum(o.status == "deployed" for o in outcomes)),
            "failed_tiers": MetadataValue.text(", ".join(failed) or "none"),
            **{f"{o.tier}_serving": MetadataValue.text(o.serving or "nothing") for o in outcomes},
        },
        check_results=[AssetCheckResult(
            check_name="serves_the_manifest", passed=not failed, severity=AssetCheckSeverity.ERROR,
            metadata={"tiers": MetadataValue.md(table)},
            description="every approved version is served" if not failed else
            "; ".join(f"{o.tier}: {o.reason}" for o in outcomes if o.status == "failed"))],
        data_version=DataVersion(content_hash(state)),
    )
