"""`serving_drift_sensor`: a served tier whose recent traffic drifted from its baseline gets a WARN check
evaluation, a retrain, and a new weakness profile for the proposer.

Each tick compares, for every served tier, the newest window of its collected traffic with its
serving version's baseline (`assets.drift.compare`). A window is judged once (the cursor remembers
the last one per tier). When it drifted:

- an `AssetCheckEvaluation` of `no_serving_drift` on `registered_model[tier]` (failed, WARN), with
  every metric's baseline and recent value, recorded without a run;
- a retrain: `distillation_job` for the tier, once per served version (run key), since a retrain
  that finishes is a new version with a baseline of its own;
- a `serving_weakness_profile` run for the tier, once per drifted window, which steers the proposer
  of `generated_traces` towards what the tier now gets wrong.

A window that did not drift produces none of these.
"""

from __future__ import annotations

import json

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    define_asset_job,
    sensor,
)

from assets.drift import CHECK_NAME, check_metadata, compare
from assets.promotion import registered_model
from resources.storage import ArtifactStore
from sensors.schedules import distillation_job
from srl_platform import drift
from srl_platform.tiers import STUDENT_TIERS

DRIFT_TAG = "srl/drift"
weakness_profile_job = define_asset_job(
    "weakness_profile_job", selection=["serving_weakness_profile"],
    description="A served tier's recent traffic as the weakness profile that aims the proposer.")


@sensor(
    name="serving_drift_sensor",
    jobs=[distillation_job, weakness_profile_job],
    minimum_interval_seconds=600,
    default_status=DefaultSensorStatus.STOPPED,
    description="Compares each served tier's recent collected traffic with its serving version's "
                "baseline; on drift records a failed no_serving_drift check, requests a retrain "
                "and updates the serving weakness profile.",
)
def serving_drift_sensor(context: SensorEvaluationContext, store: ArtifactStore):
    client = store.client()
    judged: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    events, requests, notes = [], [], []
    for tier in STUDENT_TIERS:
        result = compare(client, tier)
        if result is None:
            notes.append(f"{tier}: no served traffic beyond its baseline yet")
            continue
        mark = f"v{result['version']}:{result['window']}"
        if judged.get(tier) == mark:
            notes.append(f"{tier}: no new traffic since the last comparison")
            continue
        judged[tier] = mark
        why = drift.describe(result)
        if not result["drifted"]:
            notes.append(f"{tier} v{result['version']}: {why}")
            continue
        context.log.warning(f"{tier} v{result['version']} drifted: {why}")
        events.append(AssetCheckEvaluation(
            asset_key=registered_model.key, check_name=CHECK_NAME, passed=False,
            severity=AssetCheckSeverity.WARN, partition=tier, metadata=check_metadata(result),
            description=why))
        tags = {DRIFT_TAG: f"{tier}:{mark}"}
        requests.append(RunRequest(run_key=f"drift-{tier}-v{result['version']}-retrain",
                                   job_name=distillation_job.name, partition_key=tier, tags=tags))
        requests.append(RunRequest(
            run_key=f"drift-{tier}-{mark}-weakness", job_name=weakness_profile_job.name, tags=tags,
            run_config={"ops": {"serving_weakness_profile": {"config": {"tier": tier}}}}))
    cursor = json.dumps(judged, sort_keys=True)
    if not events:
        return SensorResult(skip_reason="; ".join(notes), cursor=cursor)
    return SensorResult(run_requests=requests, asset_events=events, cursor=cursor)
