"""`serving_logs_sensor`: new serving-log files become a `collected_traces` run.

The sensor only lists the source (names, sizes, modification times), never reads a file: the
cursor remembers each file's (size, modified) and a file that is new or changed is requested once,
by a run key derived from exactly those files. Reading, deduplication and the exactly-once
guarantee are the asset's (by content hash), so a request that repeats work adds nothing.

No request while a `collected_traces` run is queued or running: each run reads the collector's
state from the store and writes it back, so two at once would lose one's record of what it collected
and the next run would collect those rows again. The new files are requested once it has finished.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from assets.collection import SERVING_LOGS, collected_traces
from resources.storage import ArtifactStore
from srl_platform.collector import list_log_files


@sensor(
    name="serving_logs_sensor",
    minimum_interval_seconds=60,
    target=AssetSelection.assets(collected_traces),
    default_status=DefaultSensorStatus.STOPPED,
    description=f"Requests a collected_traces run for new or changed *.jsonl serving logs under "
                f"{SERVING_LOGS} (set SRL_SERVING_LOGS to a folder or s3://bucket/prefix).",
)
def serving_logs_sensor(context: SensorEvaluationContext, store: ArtifactStore):
    source = SERVING_LOGS
    if not source.startswith("s3://") and not Path(source).is_dir():
        return SkipReason(f"{source} does not exist yet: nothing to collect")
    planned = context.instance.get_latest_planned_materialization_info(collected_traces.key)
    running = planned and context.instance.get_run_by_id(planned.run_id)
    if running and not running.is_finished:
        return SkipReason(f"collected_traces run {running.run_id} is {running.status.value}: new serving "
                          "logs are requested once it has finished (the collector's state is one file)")
    files = list_log_files(source, store.s3.get_client() if source.startswith("s3://") else None)
    seen: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
    new = [f for f in files if seen.get(f.name) != [f.size, f.modified]]
    # Only listed files are remembered, so the cursor does not grow with every log ever rotated away.
    listed = {f.name: [f.size, f.modified] for f in files}
    if listed != seen:
        context.update_cursor(json.dumps(listed, sort_keys=True))
    if not new:
        return SkipReason(f"no new or changed serving logs among {len(files)} files under {source}")
    identity = "\n".join(f"{f.name}\t{f.size}\t{f.modified}" for f in new)
    return RunRequest(
        run_key=f"collect-{hashlib.sha256(identity.encode()).hexdigest()[:16]}",
        run_config={"ops": {"collected_traces": {"config": {"source": source,
                                                             "files": [f.name for f in new]}}}},
        tags={"srl/serving_logs": str(len(new)), "srl/collector": "serving_logs"},
    )
