"""`serving_deploy_sensor`: a promotion reaches the serving endpoint without a hand step.

Each tick reads the serving manifest and asks the endpoint (`ServingResource`) what it serves. When
a tier with an approved version does not serve it (a new promotion, or a server that restarted
without it), the sensor requests a `served_adapters` run, which hot-swaps it in. The run key is the
manifest and what the server served, so one mismatch is requested once: a version that fails to
load (its check `serves_the_manifest` says why) is not retried every tick, and is again once the
manifest or the server changes. Nothing is requested while the endpoint is down or a
`served_adapters` run is in flight.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dagster import AssetSelection, DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from assets.serving import adapter_path, served_adapters
from resources.serving import ServingResource
from resources.storage import ArtifactStore
from srl_platform.serving import MANIFEST_KEY
from srl_platform.clients.openai_client import HTTPStatusError
from srl_platform.serving_backends import ServingError


@sensor(
    name="serving_deploy_sensor",
    minimum_interval_seconds=30,
    target=AssetSelection.assets(served_adapters),
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests a served_adapters run when the serving endpoint does not serve a tier's approved "
                "version of the serving manifest (after a promotion, or a server restart).",
)
def serving_deploy_sensor(context: SensorEvaluationContext, store: ArtifactStore, serving: ServingResource):
    client = store.client()
    if not client.exists(MANIFEST_KEY):
        return SkipReason(f"{client.uri(MANIFEST_KEY)} does not exist yet: nothing to deploy")
    raw = client.get_bytes(MANIFEST_KEY)
    manifest = json.loads(raw)
    backend = serving.backend()
    try:
        loaded = backend.loaded()
    except (ServingError, HTTPStatusError, ValueError) as error:
        return SkipReason(f"the {serving.kind} serving endpoint {serving.url} does not answer ({error}): start "
                          "it (srl serve ...) and the approved adapters are deployed on the next tick")
    adapter_dir = Path(serving.adapter_dir)
    behind = {tier: (entry["serving_version"], loaded.get(tier)) for tier, entry in manifest.get("tiers", {}).items()
              if entry.get("serving_version") is not None
              and loaded.get(tier) != str(adapter_path(adapter_dir, tier, entry))}
    if not behind:
        return SkipReason(f"{serving.url} serves every tier's approved version")
    planned = context.instance.get_latest_planned_materialization_info(served_adapters.key)
    running = planned and context.instance.get_run_by_id(planned.run_id)
    if running and not running.is_finished:
        return SkipReason(f"served_adapters run {running.run_id} is {running.status.value}: waiting for it")
    identity = hashlib.sha256(raw + json.dumps(loaded, sort_keys=True).encode()).hexdigest()[:16]
    context.log.info("; ".join(f"{tier}: approved v{version}, serving {now or 'nothing'}"
                               for tier, (version, now) in sorted(behind.items())))
    return RunRequest(run_key=f"deploy-{identity}",
                      tags={"srl/deploy": ",".join(f"{tier}=v{version}" for tier, (version, _) in sorted(behind.items()))})
