"""`collected_traces` through `dagster.materialize` (local store and moto S3), and the collected rows
that `expert_traces` takes as expert traces."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import shutil
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, materialize
from dagster_aws.s3 import S3Resource

from support import AWS_TEST_CREDENTIALS
from assets.collection import STATE_KEY, collected_traces
from assets.data import COLLECTED_PREFIX, EXPERT_TRACES_KEY, expert_traces
from resources.monitoring import MonitoringResource
from resources.storage import ArtifactStore
from srl_platform.collector import collected_summary
from srl_platform.storage import content_hash
from srl_platform.validation import raw_rows_from_parquet

MAX_COMPLETION = 200
PARTS, QUARANTINE = f"{COLLECTED_PREFIX}/parts", f"{COLLECTED_PREFIX}/quarantine"
KEY = ("prompt", "completion", "model", "adapter_version")


def row(n: int, **changes) -> dict:
    base = {"prompt": f"What is {n} + {n}?", "completion": f"<think>add</think> {2 * n}", "model": "smollm2",
            "adapter_version": "gold-3", "latency_ms": 10.0 + n, "prompt_tokens": 9, "completion_tokens": 7,
            "request_id": f"req-{n}"}
    return {**base, **changes}


def line(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


def key(record: dict) -> tuple:
    return tuple(record[name] for name in KEY)


def write(path: Path, lines: list[bytes], modified: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(item + b"\n" for item in lines))
    os.utime(path, (modified, modified))  # listing order is by mtime: make it certain
    return path


# b.jsonl: 5 bad lines of 50 (10%), by the reason each must be quarantined for.
BAD = {
    4: ("bad_json", b'{"prompt": "cut off mid-'),
    14: ("missing_field", line({k: v for k, v in row(900).items() if k != "model"})),
    24: ("oversized_completion", line(row(901, completion="y" * (MAX_COMPLETION + 1)))),
    34: ("invalid_utf8", b'{"prompt": "caf\xe9", "completion": "x"}'),
    44: ("wrong_type", line(row(902, prompt_tokens="nine"))),
}


@pytest.fixture
def logs(tmp_path: Path) -> dict:
    """a.jsonl: 20 good rows. b.jsonl (later): 44 new good rows, one row of a again, 5 bad lines."""
    good_a = [row(n) for n in range(20)]
    good_b = [row(n) for n in range(100, 144)]
    lines_b = [line(r) for r in good_b] + [line(row(3, request_id="again"))]  # same key as a's row 3
    for number in sorted(BAD):
        lines_b.insert(number - 1, BAD[number][1])
    assert len(lines_b) == 50 and all(lines_b[n - 1] == raw for n, (_, raw) in BAD.items())
    source = tmp_path / "logs"
    a = write(source / "a.jsonl", [line(r) for r in good_a], 1_700_000_000)
    b = write(source / "b.jsonl", lines_b, 1_700_000_100)
    return {"dir": source, "a": a, "b": b, "lines_b": lines_b, "good_a": good_a, "good_b": good_b}


def run(store: ArtifactStore, *, selection=(collected_traces,), instance=None, raise_on_error=True, **config):
    ops = {"collected_traces": {"config": {"max_completion_chars": MAX_COMPLETION, **config}}}
    if expert_traces in selection:
        ops["expert_traces"] = {"config": {"n": 20}}
    return materialize(list(selection), resources={"store": store, "monitoring": MonitoringResource()},
                       run_config={"ops": ops},
                       instance=instance or DagsterInstance.ephemeral(), raise_on_error=raise_on_error)


def metadata(result, asset: str = "collected_traces") -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {name: value.value for name, value in event.metadata.items()}


def table(meta: dict, name: str, column: str) -> dict[str, int]:
    return {record.data[column]: record.data["count"] for record in meta[name].records}


def data_version(result) -> str:
    return result.asset_materializations_for_node("collected_traces")[0].tags["dagster/data_version"]


def counts(meta: dict) -> tuple:
    names = ("files_seen", "files_processed", "skipped_files", "missing_files", "new_rows", "duplicates",
             "quarantined")
    return tuple(meta[name] for name in names)


def stored_rows(client) -> list[dict]:
    keys = client.list(PARTS)
    assert keys and all(k.endswith(".parquet") for k in keys)
    return [r for k in keys for r in pq.read_table(io.BytesIO(client.get_bytes(k))).to_pylist()]


def stored_quarantine(client) -> list[dict]:
    keys = client.list(QUARANTINE)
    assert all(k.endswith(".jsonl") for k in keys)
    return [json.loads(text) for k in keys for text in client.get_bytes(k).decode("utf-8").splitlines()]


def raw_bytes(record: dict) -> bytes:
    return record["raw"].encode() if "raw" in record else base64.b64decode(record["raw_b64"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_first_collection(result, client, logs: dict, b_uri: str) -> None:
    """Two files, every good row once in the parts, every bad line of b in the quarantine."""
    meta = metadata(result)
    assert counts(meta) == (2, 2, 0, 0, 64, 1, 5)
    assert (meta["lines"], meta["total_files"], meta["total_rows"]) == (70, 2, 64)
    assert table(meta, "reasons", "reason") == {reason: 1 for reason, _ in BAD.values()}
    assert meta["uri"] == client.uri(PARTS) and meta["quarantine_uri"] == client.uri(QUARANTINE)

    rows = stored_rows(client)
    assert len(rows) == 64
    assert sorted(key(r) for r in rows) == sorted(key(r) for r in logs["good_a"] + logs["good_b"])
    kept = next(r for r in rows if r["prompt"] == "What is 3 + 3?")
    assert kept["request_id"] == "req-3" and kept["line"] == 4  # a's row, not b's repeat of it
    from_b = next(r for r in rows if r["prompt"] == "What is 104 + 104?")
    assert (from_b["source_file"], from_b["line"]) == (b_uri, 6)  # after bad line 4: 100..103, 104
    assert logs["lines_b"][from_b["line"] - 1] == line(row(104))

    records = stored_quarantine(client)
    assert sorted((r["line"], r["reason"], raw_bytes(r)) for r in records) == \
        [(n, reason, raw) for n, (reason, raw) in sorted(BAD.items())]
    assert all(r["file"] == b_uri and r["file_sha256"] == sha256(logs["b"]) for r in records)
    assert "raw_b64" in next(r for r in records if r["reason"] == "invalid_utf8")
    missing = next(r for r in records if r["reason"] == "missing_field")
    assert missing["field"] == "model" and "'model' is missing" in missing["message"]


def test_collects_every_good_row_once_quarantines_bad_lines_and_is_incremental(logs, tmp_path):
    store = ArtifactStore(root=str(tmp_path / "store"))
    client = store.client()
    first = run(store, source=str(logs["dir"]))
    assert first.success
    assert_first_collection(first, client, logs, str(logs["b"].resolve()))
    assert client.exists(STATE_KEY)
    version = data_version(first)
    assert version == content_hash(*(sha.encode() for sha in sorted(sha256(logs[f]) for f in ("a", "b"))))
    stored = {k: client.get_bytes(k) for k in client.list(COLLECTED_PREFIX) if k != STATE_KEY}

    second = run(store, source=str(logs["dir"]))
    again = metadata(second)
    assert counts(again) == (2, 0, 2, 0, 0, 0, 0)
    assert (again["lines"], again["total_files"], again["total_rows"]) == (0, 2, 64)
    assert table(again, "reasons", "reason") == {}
    assert data_version(second) == version
    assert {k: client.get_bytes(k) for k in client.list(COLLECTED_PREFIX) if k != STATE_KEY} == stored

    write(logs["dir"] / "later" / "c.jsonl", [line(row(n)) for n in (1, 500, 501)], 1_700_000_200)
    third_result = run(store, source=str(logs["dir"]))
    third = metadata(third_result)
    assert counts(third) == (3, 1, 2, 0, 2, 1, 0)
    assert (third["total_files"], third["total_rows"]) == (3, 66)
    assert data_version(third_result) != version
    assert len(stored_rows(client)) == 66 and len(client.list(PARTS)) == 3

    # The state is the store's: a copy of the store on another machine continues from it...
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "store", elsewhere)
    write(logs["dir"] / "d.jsonl", [line(row(n)) for n in (600, 601)], 1_700_000_300)
    moved = ArtifactStore(root=str(elsewhere))
    fourth = metadata(run(moved, source=str(logs["dir"])))
    assert counts(fourth) == (4, 1, 3, 0, 2, 0, 0)
    assert collected_summary(elsewhere / STATE_KEY)["rows"] == 68
    # ...and without it every file is new again: nothing else remembered what was collected.
    (tmp_path / "store" / STATE_KEY).unlink()
    forgot = metadata(run(store, source=str(logs["dir"])))
    assert (forgot["files_processed"], forgot["skipped_files"], forgot["new_rows"]) == (4, 0, 68)


def test_files_config_collects_only_the_named_files(logs, tmp_path):
    store = ArtifactStore(root=str(tmp_path / "store"))
    meta = metadata(run(store, source=str(logs["dir"]), files=["b.jsonl", "gone.jsonl"]))
    assert counts(meta) == (1, 1, 0, 1, 45, 0, 5)  # a not collected, so b's repeat of a row is new
    assert {r["source_file"] for r in stored_rows(store.client())} == {str(logs["b"].resolve())}

    rest = metadata(run(store, source=str(logs["dir"])))
    assert counts(rest) == (2, 1, 1, 0, 19, 1, 0)  # a's row 3 was collected from b already


def test_a_missing_source_folder_collects_nothing_and_warns(tmp_path):
    instance = DagsterInstance.ephemeral()
    store = ArtifactStore(root=str(tmp_path / "store"))
    result = run(store, source=str(tmp_path / "not-yet"), instance=instance)
    assert result.success
    meta = metadata(result)
    assert counts(meta) == (0, 0, 0, 0, 0, 0, 0) and meta["total_files"] == 0
    warnings = [entry.user_message for entry in instance.all_logs(result.run_id)
                if entry.level == logging.WARNING and "does not exist yet" in entry.user_message]
    assert len(warnings) == 1 and str(tmp_path / "not-yet") in warnings[0]
    assert store.client().list(PARTS) == []


@pytest.fixture()
def moto_s3(moto_endpoint):
    client = boto3.client("s3", endpoint_url=moto_endpoint, **AWS_TEST_CREDENTIALS)
    client.create_bucket(Bucket="bucket")
    return client, S3Resource(endpoint_url=moto_endpoint, **AWS_TEST_CREDENTIALS)


def test_s3_source_and_store_behave_like_local(moto_s3, logs, tmp_path):
    s3_client, s3 = moto_s3
    s3_client.upload_file(str(logs["a"]), "bucket", "logs/a.jsonl")
    s3_client.upload_file(str(logs["b"]), "bucket", "logs/day2/b.jsonl")
    s3_client.put_object(Bucket="bucket", Key="logs/.b.jsonl.tmp", Body=b"in progress")  # left out
    store = ArtifactStore(root="s3://bucket/artifacts", s3=s3)

    first = run(store, source="s3://bucket/logs/")
    assert first.success
    assert_first_collection(first, store.client(), logs, "s3://bucket/logs/day2/b.jsonl")
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket="bucket", Prefix="artifacts/")["Contents"]}
    a_sha, b_sha = sha256(logs["a"])[:16], sha256(logs["b"])[:16]
    metrics = {k for k in keys if k.startswith("artifacts/metrics/")}
    assert len(metrics) == 1  # the batch's serving metrics, as JSON lines in the S3 store
    assert keys - metrics == {f"artifacts/{k}" for k in (STATE_KEY, f"{PARTS}/{a_sha}.parquet", f"{PARTS}/{b_sha}.parquet",
                                               f"{QUARANTINE}/{b_sha}.jsonl")}
    assert metadata(first)["uri"] == "s3://bucket/artifacts/collected/parts"

    again = run(store, source="s3://bucket/logs/")
    assert counts(metadata(again)) == (2, 0, 2, 0, 0, 0, 0)
    assert data_version(again) == data_version(first)

    s3_client.put_object(Bucket="bucket", Key="logs/c.jsonl", Body=line(row(700)) + b"\n")
    third = metadata(run(store, source="s3://bucket/logs/"))
    assert counts(third) == (3, 1, 2, 0, 1, 0, 0)

    # Same contents, same data version as a local collection of them.
    local = run(ArtifactStore(root=str(tmp_path / "local")), source=str(logs["dir"]))
    assert data_version(local) == data_version(first)


VERIFIED = "1. **Add**: 3 + 4 = 7.\n2. **Double**: 7 × 2 = 14. The answer is 14."


def test_collected_rows_that_verify_become_expert_traces(tmp_path):
    question = "Add 3 and 4, then double it. What is the result?"
    served = {
        "verified": row(1, prompt=question, completion=VERIFIED, task_family="arithmetic",
                        reference_answer="14", adapter_version="silver-2"),
        "no family": row(2, completion=VERIFIED, reference_answer="14"),
        "no reference": row(3, completion=VERIFIED, task_family="arithmetic"),
        "wrong arithmetic": row(4, completion=VERIFIED.replace("7 × 2 = 14", "7 × 2 = 15").replace(
            "is 14", "is 15"), task_family="arithmetic", reference_answer="15"),
        "wrong answer": row(5, completion=VERIFIED, task_family="arithmetic", reference_answer="21"),
    }
    path = write(tmp_path / "logs" / "served.jsonl", [line(r) for r in served.values()], 1_700_000_000)
    store = ArtifactStore(root=str(tmp_path / "store"))
    result = run(store, source=str(path.parent), selection=(collected_traces, expert_traces))
    assert result.success
    assert metadata(result)["new_rows"] == 5

    expert = metadata(result, "expert_traces")
    assert (expert["from_source"], expert["from_collected"], expert["rows"]) == (20, 1, 21)
    # The row without a reference is never a candidate, so it is not counted among the skipped.
    assert table(expert, "collected_not_expert", "reason") == {
        "answer_mismatch": 1, "no_task_family": 1, "wrong_arithmetic": 1}

    traces = raw_rows_from_parquet(store.client().get_bytes(EXPERT_TRACES_KEY))
    (trace,) = [t for t in traces if t["source"].startswith("collected:")]
    assert trace["source"] == "collected:smollm2@silver-2"
    assert (trace["question"], trace["solution"], trace["answer"]) == (question, VERIFIED, "14")
    assert trace["id"].startswith("collected-") and trace["split"] in ("train", "validation", "test")
    assert trace["meta"]["family"] == "arithmetic"
    assert trace["meta"]["lineage"] == {
        "model": "smollm2", "adapter_version": "silver-2", "request_id": "req-1",
        "source_file": str(path.resolve()), "line": 1, "file_sha256": sha256(path)}
