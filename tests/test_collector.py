"""Trace collector: every good row once, every bad line quarantined exactly, files collected once."""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import boto3
import pandas as pd
import pandera.pandas as pa
import pytest

from support import AWS_TEST_CREDENTIALS
from srl_platform import collector
from srl_platform.collector import (
    COLLECTED_SCHEMA,
    FIELDS,
    REASONS,
    CollectorConfig,
    FileChangedError,
    collect,
    collected_summary,
    list_log_files,
    read_collected,
)

# Small limits and batches, so a 200-line file spans several batches (and row groups).
CONFIG = CollectorConfig(max_completion_chars=400, max_prompt_chars=400, max_line_bytes=2_000, batch_rows=32)
KEY = ("prompt", "completion", "model", "adapter_version")


def row(n: int, **changes) -> dict:
    base = {"prompt": f"What is {n} + {n}?", "completion": f"<think>add</think> {2 * n}", "model": "smollm2",
            "adapter_version": "gold-3", "latency_ms": 12.5 + n, "prompt_tokens": 9, "completion_tokens": 7,
            "request_id": f"req-{n}"}
    return {**base, **changes}


def key(record: dict) -> tuple:
    return tuple(record[name] for name in KEY)


def line(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


def without(record: dict, name: str) -> dict:
    return {k: v for k, v in record.items() if k != name}


# Bad lines by the reason they must be quarantined for: 20 of them.
BAD = [
    *[("bad_json", raw) for raw in (b'{"prompt": "truncated', b"not json at all", b'{"prompt": NaN}', b"{'a': 1}")],
    *[("missing_field", line(without(row(900 + i), name)))
      for i, name in enumerate(("prompt", "model", "latency_ms", "completion_tokens"))],
    *[("oversized_completion", line(row(910 + i, completion="y" * 401))) for i in range(3)],
    *[("invalid_utf8", raw) for raw in (b'{"prompt": "caf\xe9"}', b"\xff\xfe\x00", b'\xc3\x28 "x"',
                                        line(row(920))[:-2] + b'\xed\xa0\x80"}')],
    ("wrong_type", line(row(930, prompt_tokens="9"))),
    ("wrong_type", line(row(931, latency_ms=True))),
    ("negative_value", line(row(932, completion_tokens=-1))),
    ("negative_value", line(row(933, latency_ms=-0.5))),
    ("oversized_line", b'{"prompt": "' + b"z" * 2_500 + b'"}'),
]


def write(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(item + b"\n" for item in lines))
    return path


def quarantine(out: Path) -> list[dict]:
    return [json.loads(text) for path in sorted((out / "quarantine").glob("*.jsonl"))
            for text in path.read_text(encoding="utf-8").splitlines()]


def raw_bytes(record: dict) -> bytes:
    return record["raw"].encode() if "raw" in record else base64.b64decode(record["raw_b64"])


@pytest.fixture
def logs(tmp_path: Path):
    """File a: 200 lines (174 good rows, 6 repeats of them, 20 bad lines) and 3 blank lines;
    file b, a day later: 20 new rows and 30 rows of a again."""
    good_a = [row(n, **({"tenant": "acme", "trace": {"hops": [1, 2]}} if n % 10 == 0 else {}))
              for n in range(174)]
    lines_a = [line(r) for r in good_a]
    for position, (_, raw) in enumerate(BAD):
        lines_a.insert(position * 9 + 3, raw)
    lines_a += [line(row(n, request_id=f"again-{n}", latency_ms=1.0)) for n in range(6)]  # same key
    lines_a[50:50] = [b"", b"   ", b"\t\r"]
    a = write(tmp_path / "logs" / "a.jsonl", lines_a)
    b = write(tmp_path / "logs" / "day2" / "b.jsonl",
              [line(row(n)) for n in (*range(150, 170), *range(1000, 1020), *range(10, 20))])
    os.utime(a, (1_700_000_000, 1_700_000_000))
    os.utime(b, (1_700_000_100, 1_700_000_100))
    expected = {key(r) for r in good_a} | {key(row(n)) for n in range(1000, 1020)}
    return {"dir": tmp_path / "logs", "a": a, "b": b, "expected": expected, "lines_a": lines_a}


def test_every_good_row_once_every_bad_line_quarantined_and_files_collected_once(logs, tmp_path):
    state, out = tmp_path / "state" / "collector.sqlite", tmp_path / "out"
    files = list_log_files(logs["dir"])
    assert [f.name for f in files] == ["a.jsonl", "day2/b.jsonl"]

    stats = collect(files, state, out, CONFIG)

    a, b = stats.files
    assert (a.lines, a.blank_lines, a.rows, a.duplicates, a.quarantined) == (203, 3, 174, 6, 20)
    assert a.reasons == dict(sorted(Counter(reason for reason, _ in BAD).items()))
    assert (b.lines, b.rows, b.duplicates, b.quarantined) == (50, 20, 30, 0)
    assert b.quarantine is None and Path(b.part).is_file()
    assert (stats.files_processed, stats.rows, stats.duplicates, stats.quarantined) == (2, 194, 36, 20)

    collected = list(read_collected(out))
    assert len(collected) == 194 and {key(r) for r in collected} == logs["expected"]
    by_prompt = {r["prompt"]: r for r in collected}
    assert by_prompt["What is 10 + 10?"]["extra"] == {"tenant": "acme", "trace": {"hops": [1, 2]}}
    assert by_prompt["What is 11 + 11?"]["extra"] == {} and by_prompt["What is 11 + 11?"]["task_family"] is None
    first = by_prompt["What is 3 + 3?"]  # the first of its two lines is the one kept
    assert (first["request_id"], first["source_file"], first["file_sha256"]) == ("req-3", a.uri, a.sha256)
    assert logs["lines_a"][first["line"] - 1] == line(row(3))

    records = quarantine(out)
    assert [(r["reason"], raw_bytes(r)) for r in records] == BAD
    for record in records:
        assert logs["lines_a"][record["line"] - 1] == raw_bytes(record)
        assert record["file"] == a.uri and record["message"].startswith(f"line {record['line']}:")
        assert len(record["value"] or "") <= 200
    assert "raw_b64" in records[BAD.index(("invalid_utf8", b"\xff\xfe\x00"))]
    missing = next(r for r in records if r["reason"] == "missing_field")
    assert (missing["field"], missing["value"]) == ("prompt", None) and "'prompt' is missing" in missing["message"]

    summary = collected_summary(state)
    assert summary == {"files": 2, "rows": 194, "duplicates": 36, "quarantined": 20,
                       "file_sha256": sorted([a.sha256, b.sha256])}
    parts = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = collect(list_log_files(logs["dir"]), state, out, CONFIG)
    assert (again.skipped_files, again.rows, again.lines) == (2, 0, 0)

    (logs["dir"] / "renamed").mkdir()
    shutil.copy(logs["a"], logs["dir"] / "renamed" / "copy-of-a.jsonl")
    renamed = collect(list_log_files(logs["dir"]), state, out, CONFIG)
    assert renamed.skipped_files == 3 and renamed.files_processed == 0
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == parts
    assert collected_summary(state) == summary

    c = write(logs["dir"] / "c.jsonl", [line(row(n)) for n in (1, 2, 2000, 2001)])
    third = collect(list_log_files(logs["dir"]), state, out, CONFIG)
    assert [f.name for f in third.files if not f.skipped] == ["c.jsonl"]
    assert (third.rows, third.duplicates, third.skipped_files) == (2, 2, 3)
    assert third.files[-1].uri == str(c.resolve())
    assert len(list(read_collected(out))) == 196


def test_a_crash_mid_file_leaves_no_trace_and_the_rerun_is_exact(logs, tmp_path, monkeypatch):
    state, out = tmp_path / "collector.sqlite", tmp_path / "out"
    files = list_log_files(logs["dir"])
    write_rows = collector._Outputs.write_rows
    calls = []

    def crash_after_two_batches(self, table):
        calls.append(table.num_rows)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        write_rows(self, table)

    monkeypatch.setattr(collector._Outputs, "write_rows", crash_after_two_batches)
    with pytest.raises(OSError, match="simulated"):
        collect(files, state, out, CONFIG)
    assert not list(out.rglob("*.parquet")) and not list(out.rglob("*.tmp"))

    # A crash after the outputs are in place but before the mark commits: the re-run rewrites them.
    def killed_before_the_commit(*args):
        raise OSError("killed (simulated)")

    monkeypatch.setattr(collector._Outputs, "write_rows", write_rows)
    monkeypatch.setattr(collector._State, "mark", killed_before_the_commit)
    with pytest.raises(OSError, match="killed"):
        collect(files, state, out, CONFIG)
    stale = {p.name: p.read_bytes() for p in out.rglob("*.*") if p.is_file()}
    assert len(stale) == 2  # a's part and quarantine, published but not marked

    monkeypatch.undo()
    stats = collect(files, state, out, CONFIG)
    assert (stats.files_processed, stats.rows, stats.duplicates, stats.quarantined) == (2, 194, 36, 20)
    assert {name: data for name, data in ((p.name, p.read_bytes()) for p in out.rglob("*.*"))
            if name in stale} == stale
    collected = [key(r) for r in read_collected(out)]
    assert len(collected) == len(set(collected)) == 194 and set(collected) == logs["expected"]


@pytest.fixture(scope="module")
def s3_client(moto_endpoint):
    return boto3.client("s3", endpoint_url=moto_endpoint, **AWS_TEST_CREDENTIALS)


def test_collects_from_an_s3_prefix(logs, tmp_path, s3_client, monkeypatch):
    s3_client.create_bucket(Bucket="serving")
    s3_client.upload_file(str(logs["a"]), "serving", "logs/2025-06-01/a.jsonl")
    s3_client.upload_file(str(logs["b"]), "serving", "logs/2025-06-02/b.jsonl")
    s3_client.put_object(Bucket="serving", Key="logs/2025-06-02/.c.jsonl", Body=b"{")  # being written
    s3_client.put_object(Bucket="serving", Key="logs/notes.txt", Body=b"not a log")
    s3_client.put_object(Bucket="serving", Key="logs-old/x.jsonl", Body=line(row(5000)))

    files = list_log_files("s3://serving/logs", s3_client=s3_client)
    assert [f.name for f in files] == ["2025-06-01/a.jsonl", "2025-06-02/b.jsonl"]
    assert files[0].uri == "s3://serving/logs/2025-06-01/a.jsonl" and files[0].size == logs["a"].stat().st_size

    state, out = tmp_path / "collector.sqlite", tmp_path / "out"
    stats = collect(files, state, out, CONFIG, s3_client=s3_client)
    assert (stats.rows, stats.duplicates, stats.quarantined) == (194, 36, 20)
    assert {key(r) for r in read_collected(out)} == logs["expected"]
    records = quarantine(out)
    assert [(r["reason"], raw_bytes(r)) for r in records] == BAD
    assert {r["file"] for r in records} == {"s3://serving/logs/2025-06-01/a.jsonl"}
    assert not [p for p in out.iterdir() if p.name.startswith(".download")]

    s3_client.copy_object(Bucket="serving", Key="logs/2025-06-03/a-again.jsonl",
                          CopySource={"Bucket": "serving", "Key": "logs/2025-06-01/a.jsonl"})
    downloads = []
    get_object = s3_client.get_object
    monkeypatch.setattr(s3_client, "get_object", lambda **kw: downloads.append(kw["Key"]) or get_object(**kw))
    again = collect(list_log_files("s3://serving/logs/", s3_client=s3_client), state, out, CONFIG,
                    s3_client=s3_client)
    assert (again.skipped_files, again.rows) == (3, 0)
    assert downloads == ["logs/2025-06-03/a-again.jsonl"]  # unchanged files are not even downloaded


def test_pandera_rejects_types_and_values_naming_reason_field_and_value(tmp_path):
    frame = pd.DataFrame({name: pd.Series([row(1).get(name), row(2, prompt_tokens="9").get(name)], dtype=object)
                          for name in FIELDS})
    with pytest.raises(pa.errors.SchemaErrors) as raised:
        COLLECTED_SCHEMA.validate(frame, lazy=True)
    cases = raised.value.failure_cases
    assert cases[["index", "column", "check"]].values.tolist() == [[1, "prompt_tokens", "wrong_type"]]

    log = write(tmp_path / "logs" / "x.jsonl", [
        line(row(1, model=["smollm2"], prompt_tokens=9.0)), line(row(2, prompt_tokens=2**63)),
        line(row(3, model=None)), line(row(4, adapter_version=" ")), line(row(5, prompt="p" * 32_001)),
        b"[1, 2]", line(row(6, request_id=6)), line(row(7, task_family=None, latency_ms=0))])
    stats = collect(list_log_files(log.parent), tmp_path / "s.sqlite", tmp_path / "out")
    records = quarantine(tmp_path / "out")
    assert [(r["reason"], r["field"], r["value"]) for r in records] == [
        ("wrong_type", "model", "['smollm2']"), ("wrong_type", "prompt_tokens", repr(2**63)),
        ("missing_field", "model", None), ("empty_string", "adapter_version", "' '"),
        ("oversized_prompt", "prompt", repr("p" * 32_001)[:199] + "…"), ("not_an_object", None, "[1, 2]"),
        ("wrong_type", "request_id", "6")]
    assert set(stats.reasons) <= set(REASONS) and stats.rows == 1
    assert records[0]["message"] == (
        "line 1: field 'model' must be a string, got array ['smollm2']: fix the type the logger writes; "
        "field 'prompt_tokens' must be an integer >= 0 that fits in 64 bits, got number 9.0: "
        "fix the type the logger writes")
    assert records[2]["message"] == "line 3: field 'model' is null: every serving-log row needs it, fix the logger"
    assert "32,001 characters, more than max_prompt_chars=32,000" in records[4]["message"]


def test_an_oversized_line_is_streamed_to_the_quarantine_exactly(tmp_path):
    text = bytes(byte for byte in range(1, 128) if byte != ord("\n"))
    huge = b'{"prompt": "' + text * 20_000 + b'\xff"}'  # 2.4 MiB: several read chunks
    log = write(tmp_path / "logs" / "x.jsonl", [line(row(1)), huge, line(row(2))])
    stats = collect(list_log_files(log.parent), tmp_path / "s.sqlite", tmp_path / "out",
                    CollectorConfig(max_line_bytes=1_000))
    (record,) = quarantine(tmp_path / "out")
    assert (stats.rows, record["line"], record["reason"], record["bytes"]) == (2, 2, "oversized_line", len(huge))
    assert base64.b64decode(record["raw_b64"]) == huge and "max_line_bytes=1,000" in record["message"]


def test_listing_is_recursive_ordered_and_leaves_hidden_files_out(tmp_path):
    for name, mtime in (("b.jsonl", 3), ("sub/a.jsonl", 1), ("c.jsonl", 1), (".a.jsonl.tmp", 0),
                        (".hidden/d.jsonl", 0), ("notes.txt", 0)):
        path = write(tmp_path / name, [b"{}"])
        os.utime(path, (mtime, mtime))
    assert [f.name for f in list_log_files(tmp_path)] == ["c.jsonl", "sub/a.jsonl", "b.jsonl"]
    assert [f.name for f in list_log_files(tmp_path, pattern="*.txt")] == ["notes.txt"]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        list_log_files(tmp_path / "missing")


def test_refuses_what_would_corrupt_the_dataset(tmp_path, monkeypatch):
    log = write(tmp_path / "logs" / "x.jsonl", [line(row(1))])
    with pytest.raises(ValueError, match="under the collector's output"):
        collect(list_log_files(log.parent), tmp_path / "s.sqlite", tmp_path)

    state = collector._State(tmp_path / "busy.sqlite")
    try:
        with pytest.raises(RuntimeError, match="another collector is using"):
            collect(list_log_files(log.parent), tmp_path / "busy.sqlite", tmp_path / "out")
    finally:
        state.close()

    run = collector._FileCollector.run

    def appended_meanwhile(self, path):
        with path.open("ab") as grow:
            grow.write(line(row(2)) + b"\n")
        return run(self, path)

    monkeypatch.setattr(collector._FileCollector, "run", appended_meanwhile)
    with pytest.raises(FileChangedError, match="changed while it was being collected"):
        collect(list_log_files(log.parent), tmp_path / "s.sqlite", tmp_path / "out")
    monkeypatch.undo()
    assert not list((tmp_path / "out").rglob("*.parquet"))
    assert collect(list_log_files(log.parent), tmp_path / "s.sqlite", tmp_path / "out").rows == 2

    with pytest.raises(ValueError, match="batch_rows=0 must be a positive integer"):
        CollectorConfig(batch_rows=0)
