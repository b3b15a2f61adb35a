"""Collected traces: what the serving tier answered in production, ingested from its logs.

`collected_traces` runs the trace collector (`srl_platform.collector`) over serving-log files in a
local folder or an S3 prefix. `serving_logs_sensor` (sensors/serving_logs.py) requests a run for
each batch of new files; a run over files already collected adds nothing. The collector's state
(which files and rows were collected) lives in the store next to its outputs, so any machine
running the asset continues where the last one stopped.
"""

import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from dagster import AssetExecutionContext, Config, DataVersion, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.data import COLLECTED_PREFIX, OWNERS
from assets.metadata import counts_table
from assets.monitoring import record
from assets.retries import storage_retry_policy
from resources.monitoring import MonitoringResource
from resources.storage import ArtifactStore
from srl_platform.collector import CollectorConfig, collect, collected_summary, list_log_files
from srl_platform.monitoring import serving_metrics
from srl_platform.storage import content_hash

SERVING_LOGS = os.environ.get("SRL_SERVING_LOGS",
                              str(Path(__file__).resolve().parents[1] / ".state" / "serving_logs"))
"""Where serving logs arrive: a local folder or s3://bucket/prefix ($SRL_SERVING_LOGS)."""
STATE_KEY = f"{COLLECTED_PREFIX}/state.sqlite"
_DEFAULTS = CollectorConfig()


class CollectedTracesConfig(Config):
    source: str = Field(default=SERVING_LOGS,
                        description="Folder or s3://bucket/prefix of serving-log *.jsonl files.")
    files: list[str] | None = Field(
        default=None, description="Only these files (names relative to source), as the sensor asks; "
                                  "None: every file under source.")
    max_completion_chars: int = Field(default=_DEFAULTS.max_completion_chars, ge=1,
                                      description="Longer completions are quarantined.")
    max_prompt_chars: int = Field(default=_DEFAULTS.max_prompt_chars, ge=1,
                                  description="Longer prompts are quarantined.")


@asset(
    group_name="data",
    kinds={"python", "parquet", "sqlite"},
    owners=OWNERS,
    retry_policy=storage_retry_policy,
    code_version="1",
)
def collected_traces(context: AssetExecutionContext, config: CollectedTracesConfig,
                     store: ArtifactStore, monitoring: MonitoringResource) -> MaterializeResult:
    """Production prompts and completions of the serving tier, each served row exactly once:
    validated (pandera), deduplicated, with bad rows quarantined with their reason and raw line.
    Parts at `collected/parts/<file sha>.parquet`, quarantine at `collected/quarantine/`.

    Incremental and idempotent: a file is identified by its content hash and collected once,
    whatever its name; re-running over the same files adds nothing and keeps the data version.
    The new rows' requests, latency and tokens per served model (tier) go to the metrics sink.
    """
    client = store.client()
    s3 = store.s3.get_client() if config.source.startswith("s3://") else None
    if s3 is None and not Path(config.source).is_dir():
        # Before the serving tier has written its first log there is nothing to collect yet.
        context.log.warning(f"{config.source} does not exist yet: no serving logs to collect")
        listed = []
    else:
        listed = list_log_files(config.source, s3)
    files = listed if config.files is None else [f for f in listed if f.name in set(config.files)]
    missing = sorted(set(config.files or ()) - {f.name for f in listed})
    if missing:
        context.log.warning(f"{len(missing)} requested files are no longer under {config.source}: {missing[:10]}")
    with tempfile.TemporaryDirectory(prefix="collected-") as tmp:
        state, out = Path(tmp) / "state.sqlite", Path(tmp) / "out"
        if client.exists(STATE_KEY):
            client.get_file(STATE_KEY, state)
        stats = collect(files, state, out, CollectorConfig(max_completion_chars=config.max_completion_chars,
                                                           max_prompt_chars=config.max_prompt_chars),
                        s3_client=s3, progress=context.log.info)
        # Outputs first, state last: the state never names a file whose rows are not in the store.
        for written in [path for f in stats.files for path in (f.part, f.quarantine) if path]:
            client.put_file(f"{COLLECTED_PREFIX}/{Path(written).relative_to(out).as_posix()}", Path(written))
        client.put_file(STATE_KEY, state)
        summary = collected_summary(state)
        served = [row for f in stats.files if f.part for row in pq.read_table(
            f.part, columns=["model", "latency_ms", "prompt_tokens", "completion_tokens"]).to_pylist()]
    for tier, values in serving_metrics(served).items():
        record(context, monitoring, client, values, tier, per_run=False)

    context.log.info(f"{stats.files_processed} new files of {stats.files_seen}: {stats.rows} rows, "
                     f"{stats.duplicates} duplicates, {stats.quarantined} quarantined {stats.reasons}")
    return MaterializeResult(
        metadata={
            "source": config.source,
            "uri": MetadataValue.path(client.uri(f"{COLLECTED_PREFIX}/parts")),
            "quarantine_uri": MetadataValue.path(client.uri(f"{COLLECTED_PREFIX}/quarantine")),
            "files_seen": stats.files_seen,
            "files_processed": stats.files_processed,
            "skipped_files": stats.skipped_files,
            "missing_files": len(missing),
            "lines": stats.lines,
            "new_rows": stats.rows,
            "duplicates": stats.duplicates,
            "quarantined": stats.quarantined,
            "reasons": counts_table(stats.reasons, "reason"),
            "total_files": summary["files"],
            "total_rows": summary["rows"],
        },
        # What has been collected so far, by file content: unchanged when a run adds nothing.
        data_version=DataVersion(content_hash(*(sha.encode() for sha in summary["file_sha256"]))),
    )
