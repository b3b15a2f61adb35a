"""`serving_logs_sensor`: new or changed serving logs become one `collected_traces` run, once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    RunRequest,
    SkipReason,
    build_sensor_context,
    materialize,
)

from assets.collection import collected_traces
from resources.monitoring import MonitoringResource
from resources.storage import ArtifactStore
from sensors import serving_logs
from sensors.serving_logs import serving_logs_sensor


def row(n: int) -> bytes:
    return json.dumps({"prompt": f"What is {n} + {n}?", "completion": str(2 * n), "model": "smollm2",
                       "adapter_version": "gold-3", "latency_ms": 5.0, "prompt_tokens": 9,
                       "completion_tokens": 2}).encode() + b"\n"


def write(path: Path, rows: range, modified: int, mode: str = "wb") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode) as out:
        out.write(b"".join(row(n) for n in rows))
    os.utime(path, (modified, modified))
    return path


@pytest.fixture
def source(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "serving_logs"
    monkeypatch.setattr(serving_logs, "SERVING_LOGS", str(folder))
    return folder


def evaluate(store: ArtifactStore, cursor: str | None, instance: DagsterInstance | None = None):
    """(the run request or skip reason, the cursor after the tick)."""
    # A context manager: the store's nested S3Resource is set up as a generator resource.
    with build_sensor_context(instance=instance or DagsterInstance.ephemeral(), cursor=cursor,
                              resources={"store": store}) as context:
        data = serving_logs_sensor.evaluate_tick(context)
    if data.run_requests:
        (request,) = data.run_requests
        assert data.skip_message is None
        return request, data.cursor
    assert data.skip_message
    return SkipReason(data.skip_message), data.cursor


def requested(request: RunRequest) -> dict:
    return request.run_config["ops"]["collected_traces"]["config"]


def test_new_files_are_requested_once_and_a_changed_file_again(source, tmp_path):
    store = ArtifactStore(root=str(tmp_path / "store"))
    skip, cursor = evaluate(store, None)
    assert isinstance(skip, SkipReason) and "does not exist yet" in skip.skip_message and cursor is None

    write(source / "a.jsonl", range(3), 1_700_000_000)
    write(source / "day2" / "b.jsonl", range(3, 5), 1_700_000_100)
    write(source / ".c.jsonl.tmp", range(9), 1_700_000_200)  # still being written: not listed
    request, cursor = evaluate(store, None)
    assert isinstance(request, RunRequest)
    assert requested(request) == {"source": str(source), "files": ["a.jsonl", "day2/b.jsonl"]}
    assert request.tags["srl/serving_logs"] == "2"
    assert set(json.loads(cursor)) == {"a.jsonl", "day2/b.jsonl"}
    again, _ = evaluate(store, None)  # the same files, e.g. a tick whose cursor update was lost
    assert again.run_key == request.run_key and request.run_key.startswith("collect-")

    skip, unchanged = evaluate(store, cursor)
    assert isinstance(skip, SkipReason) and "no new or changed serving logs among 2 files" in skip.skip_message
    assert unchanged == cursor

    write(source / "a.jsonl", range(10, 12), 1_700_000_300, mode="ab")
    appended, later = evaluate(store, cursor)
    assert isinstance(appended, RunRequest)
    assert requested(appended)["files"] == ["a.jsonl"] and appended.run_key != request.run_key
    assert json.loads(later)["day2/b.jsonl"] == json.loads(cursor)["day2/b.jsonl"]
    assert json.loads(later)["a.jsonl"] == [(source / "a.jsonl").stat().st_size, 1_700_000_300]
    assert isinstance(evaluate(store, later)[0], SkipReason)


def test_the_requested_run_config_runs_the_asset(source, tmp_path):
    write(source / "a.jsonl", range(3), 1_700_000_000)
    write(source / "b.jsonl", range(2, 6), 1_700_000_100)
    store = ArtifactStore(root=str(tmp_path / "store"))
    request, cursor = evaluate(store, None)
    write(source / "unrequested.jsonl", range(100, 102), 1_700_000_200)  # arrived after the tick

    result = materialize([collected_traces], resources={"store": store, "monitoring": MonitoringResource()},
                         run_config=request.run_config,
                         instance=DagsterInstance.ephemeral())
    assert result.success
    (event,) = result.asset_materializations_for_node("collected_traces")
    meta = {name: value.value for name, value in event.metadata.items()}
    assert (meta["files_seen"], meta["files_processed"], meta["new_rows"], meta["duplicates"]) == (2, 2, 6, 1)

    following, _ = evaluate(store, cursor)
    assert requested(following)["files"] == ["unrequested.jsonl"]


def test_the_cursor_forgets_files_no_longer_listed(source, tmp_path):
    store = ArtifactStore(root=str(tmp_path / "store"))
    write(source / "old.jsonl", range(2), 1_700_000_000)
    write(source / "new.jsonl", range(2, 4), 1_700_000_100)
    _, cursor = evaluate(store, None)
    (source / "old.jsonl").unlink()  # rotated away
    skip, pruned = evaluate(store, cursor)
    assert isinstance(skip, SkipReason)
    assert json.loads(pruned) == {"new.jsonl": json.loads(cursor)["new.jsonl"]}


def test_no_request_while_a_collection_run_is_unfinished(source, tmp_path):
    instance = DagsterInstance.ephemeral()
    store = ArtifactStore(root=str(tmp_path / "store"))
    write(source / "a.jsonl", range(3), 1_700_000_000)
    job = Definitions(assets=[collected_traces], resources={"store": store, "monitoring": MonitoringResource()}
                      ).resolve_implicit_global_asset_job_def()
    running = instance.create_run_for_job(job_def=job, status=DagsterRunStatus.STARTED)

    skip, cursor = evaluate(store, None, instance)
    assert isinstance(skip, SkipReason) and cursor is None  # not advanced: a.jsonl is still to request
    assert f"collected_traces run {running.run_id} is STARTED" in skip.skip_message

    instance.report_run_canceled(running)
    request, _ = evaluate(store, None, instance)
    assert isinstance(request, RunRequest) and requested(request)["files"] == ["a.jsonl"]
