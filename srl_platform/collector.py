"""Trace collector: serving logs in, a deduplicated and validated dataset of collected traces out.

The serving tier logs each request as one JSON object a line, in `*.jsonl` files under a local
folder or an S3 prefix. `collect` ingests the files it is given incrementally: every good row is
kept exactly once, every bad row is quarantined with its reason and its exact raw line, and a file
already collected (by content, whatever its name) is skipped. The result feeds distillation
prompts and drift statistics.

A serving-log row:

- required: `prompt` (non-blank string), `completion` (string, may be empty), `model` and
  `adapter_version` (non-blank strings), `latency_ms` (finite number >= 0, not a boolean),
  `prompt_tokens` and `completion_tokens` (64-bit integers >= 0);
- optional: `request_id`, `timestamp`, `task_family`, `reference_answer` (strings; null or absent
  is kept as None);
- any other field is kept, as JSON text in the `extra` column (null when there is none).

A quarantined line gets one reason (the first problem by field order; `message` lists them all):

- before parsing: `oversized_line` (more than `max_line_bytes` bytes, never parsed), `invalid_utf8`
  (the bytes are not UTF-8, or a `\\uD8xx` escape decodes to a lone surrogate that no UTF-8 file can
  hold), `bad_json` (NaN and Infinity included), `not_an_object`;
- from `COLLECTED_SCHEMA` (pandera, one lazy validation per batch): `missing_field` (absent or
  null), `wrong_type`, `empty_string`, `negative_value`, `oversized_prompt`, `oversized_completion`.

Blank lines are counted (`blank_lines`), not quarantined. A good row whose digest (`row_digest`:
sha256 of the JSON array `[prompt, completion, model, adapter_version]`) was collected before, from
this file or any earlier one, counts as a duplicate and is not written again. For every processed file,
`lines == blank_lines + rows + duplicates + quarantined`.

Outputs, named after the file's content sha256 so that a re-run writes the same bytes to the same
names: `{out_dir}/parts/{sha[:16]}.parquet` (the new good rows, one row group per batch;
`PART_SCHEMA`) and `{out_dir}/quarantine/{sha[:16]}.jsonl` (one record a line: `file` (its URI),
`file_sha256`, `line` (from 1), `reason`, `field`, `value` (repr, at most 200 characters),
`message`, and the line without its newline as `raw` when it is UTF-8 text, else base64 in
`raw_b64`; an oversized line always goes to `raw_b64` and adds its `bytes`). A file with no new
good row gets no part, one with no bad line no quarantine; either way it is marked as processed.

State lives in one SQLite file: processed files (content sha256 as key), the digest of every row
ever collected (so memory does not grow with the dataset), and the (uri, size, modified) each file
was last seen with, which lets an unchanged file be skipped without reading or downloading it.
Each file is one transaction, committed after its outputs are renamed into place: a crash mid-file
leaves no mark, and the re-run rewrites the same outputs. One collector per state file at a time
(a lock file enforces it). Local folders are listed recursively; names starting with "." (files
still being written by an atomic writer) are skipped. Give `collect` complete files only (rotated,
or not modified for a while: `LogFile.modified`). A file collected while still being appended to
ends in a partial line, quarantined as `bad_json`; once complete it has a new sha and is collected
again: its earlier good rows count as duplicates, its bad lines are quarantined a second time.
"""

from __future__ import annotations

import base64
import fcntl
import fnmatch
import hashlib
import json
import os
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.parquet as pq

from srl_platform.steps import truncate
from srl_platform.collector_rows import (  # noqa: F401 (re-exported: the collector's public API)
    COLLECTED_SCHEMA,
    DIGEST_FIELDS,
    FIELD_SET,
    FIELDS,
    OPTIONAL_FIELDS,
    REASONS,
    REQUIRED_FIELDS,
    CollectorConfig,
    collected_schema,
    parse_line,
    problem_message,
    row_digest,
    schema_failures,
)

PART_SCHEMA = pyarrow.schema(
    [pyarrow.field(name, pyarrow.string(), nullable=False) for name in DIGEST_FIELDS]
    + [pyarrow.field("latency_ms", pyarrow.float64(), nullable=False),
       pyarrow.field("prompt_tokens", pyarrow.int64(), nullable=False),
       pyarrow.field("completion_tokens", pyarrow.int64(), nullable=False)]
    + [pyarrow.field(name, pyarrow.string()) for name in (*OPTIONAL_FIELDS, "extra")]
    + [pyarrow.field("source_file", pyarrow.string(), nullable=False),
       pyarrow.field("line", pyarrow.int64(), nullable=False),
       pyarrow.field("file_sha256", pyarrow.string(), nullable=False),
       pyarrow.field("row_digest", pyarrow.string(), nullable=False)]
)
"""Columns of a part: the row's fields, `extra` (JSON text), and where the row came from."""

_CHUNK = 1 << 20


@dataclass(frozen=True)
class LogFile:
    """One serving-log file: `name` relative to the listed source, `size` in bytes, `modified` as a
    POSIX timestamp (mtime or S3 LastModified), `uri` an absolute local path or s3://bucket/key."""

    name: str
    size: int
    modified: float
    uri: str


@dataclass
class FileStats:
    """What `collect` did with one file; `rows` counts new good rows, and all counts are 0 when the
    file was `skipped` (its content was collected before)."""

    name: str
    uri: str
    sha256: str
    skipped: bool = False
    lines: int = 0
    blank_lines: int = 0
    rows: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    part: str | None = None
    quarantine: str | None = None


@dataclass
class CollectStats:
    """What one `collect` call did, per file and in total."""

    files: list[FileStats] = field(default_factory=list)

    def _sum(self, name: str) -> int:
        return sum(getattr(stats, name) for stats in self.files)

    @property
    def files_seen(self) -> int:
        return len(self.files)

    @property
    def skipped_files(self) -> int:
        return sum(stats.skipped for stats in self.files)

    @property
    def files_processed(self) -> int:
        return self.files_seen - self.skipped_files

    @property
    def lines(self) -> int:
        return self._sum("lines")

    @property
    def blank_lines(self) -> int:
        return self._sum("blank_lines")

    @property
    def rows(self) -> int:
        return self._sum("rows")

    @property
    def duplicates(self) -> int:
        return self._sum("duplicates")

    @property
    def quarantined(self) -> int:
        return self._sum("quarantined")

    @property
    def reasons(self) -> dict[str, int]:
        total = Counter()
        for stats in self.files:
            total.update(stats.reasons)
        return dict(sorted(total.items()))

    def as_dict(self) -> dict:
        totals = ("files_seen", "files_processed", "skipped_files", "lines", "blank_lines", "rows",
                  "duplicates", "quarantined", "reasons")
        return {**{name: getattr(self, name) for name in totals},
                "files": [asdict(stats) for stats in self.files]}


# ---- reading one file ---------------------------------------------------------------------------

class _HashingReader:
    """Lines of a binary file, hashed as they are read: proves the content parsed is the content
    whose sha256 named the outputs (a local file may change between the hash pass and the parse)."""

    def __init__(self, stream) -> None:
        self._stream, self.sha256 = stream, hashlib.sha256()

    def readline(self, limit: int) -> bytes:
        line = self._stream.readline(limit)
        self.sha256.update(line)
        return line


def _quarantine(file: LogFile, sha: str, line: int, reason: str, name: str | None, value: object,
                message: str, raw: str | bytes) -> dict:
    record = {"file": file.uri, "file_sha256": sha, "line": line, "reason": reason, "field": name,
              "value": None if value is None else truncate(value, 200), "message": f"line {line}: {message}"}
    if isinstance(raw, str):
        record["raw"] = raw
    else:
        record["raw_b64"] = base64.b64encode(raw).decode("ascii")
    return record


class _Outputs:
    """One file's part and quarantine, written to temp files and renamed into place by `publish`.

    The temp names are fixed too, so a crashed run's leftovers are overwritten, never piled up."""

    def __init__(self, out_dir: Path, sha: str, file: LogFile) -> None:
        self.part = out_dir / "parts" / f"{sha[:16]}.parquet"
        self.quarantine = out_dir / "quarantine" / f"{sha[:16]}.jsonl"
        self._file, self._sha = file, sha
        self._writer: pq.ParquetWriter | None = None
        self._text = None

    @staticmethod
    def _temp(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f".{path.name}.tmp")

    def write_rows(self, table: pyarrow.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._temp(self.part), PART_SCHEMA)
        self._writer.write_table(table, row_group_size=table.num_rows)

    def write_quarantine(self, records: list[dict]) -> None:
        out = self._quarantine_stream()
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")

    def write_oversized(self, line: int, first: bytes, reader: _HashingReader, limit: int) -> None:
        """Quarantine a line longer than `limit`, streaming its bytes (from `first` on) as base64."""
        message = (f"line {line}: longer than max_line_bytes={limit:,} (size in `bytes`), not parsed; "
                   "raise CollectorConfig.max_line_bytes to collect it, or split the record")
        head = {"file": self._file.uri, "file_sha256": self._sha, "line": line, "reason": "oversized_line",
                "field": None, "value": None, "message": message}
        out = self._quarantine_stream()
        out.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "raw_b64": "')
        carry, size, chunk = b"", 0, first
        while chunk:
            done = chunk.endswith(b"\n")
            chunk = chunk[:-1] if done else chunk
            size += len(chunk)
            data = carry + chunk
            cut = len(data) - len(data) % 3  # base64 of whole 3-byte groups concatenates exactly
            out.write(base64.b64encode(data[:cut]).decode("ascii"))
            carry = data[cut:]
            chunk = b"" if done else reader.readline(_CHUNK)
        out.write(base64.b64encode(carry).decode("ascii") + f'", "bytes": {size}}}\n')

    def _quarantine_stream(self):
        if self._text is None:
            self._text = self._temp(self.quarantine).open("w", encoding="utf-8")
        return self._text

    def _close(self) -> list[tuple[Path, bool]]:
        if self._writer is not None:
            self._writer.close()
        if self._text is not None:
            self._text.close()
        return [(self.part, self._writer is not None), (self.quarantine, self._text is not None)]

    def publish(self) -> tuple[str | None, str | None]:
        """Rename the written outputs into place (durably) and remove stale ones of an earlier run."""
        published = []
        for target, written in self._close():
            if written:
                temp = target.with_name(f".{target.name}.tmp")
                _fsync(temp)
                os.replace(temp, target)
                _fsync(target.parent)
                published.append(str(target))
            else:
                target.unlink(missing_ok=True)
                published.append(None)
        return published[0], published[1]

    def discard(self) -> None:
        for target, _ in self._close():
            target.with_name(f".{target.name}.tmp").unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class FileChangedError(RuntimeError):
    """A file's content changed while it was being collected (a log still being written)."""


class _FileCollector:
    """Collects one file inside the state transaction the caller opened: reads it line by line,
    validates and deduplicates batch by batch, and writes the outputs as it goes."""

    def __init__(self, file: LogFile, sha: str, db: sqlite3.Connection, out_dir: Path,
                 schema: pa.DataFrameSchema, config: CollectorConfig, say: Callable[[str], None]) -> None:
        self.file, self.sha, self.db, self.schema, self.config, self.say = file, sha, db, schema, config, say
        self.stats = FileStats(file.name, file.uri, sha)
        self.outputs = _Outputs(out_dir, sha, file)
        self.reasons: Counter[str] = Counter()
        self.batch: list[tuple[int, dict, str]] = []  # (line, row, raw text) of parsed objects
        self.rejects: list[dict] = []  # quarantine records of the lines since the last flush

    def run(self, path: Path) -> FileStats:
        """Collect `path` (the file's content, sha256 `self.sha`) and publish its outputs."""
        limit, stats = self.config.max_line_bytes, self.stats
        try:
            with path.open("rb") as stream:
                reader = _HashingReader(stream)
                while line := reader.readline(limit + 1):
                    stats.lines += 1
                    if len(line) > limit and not line.endswith(b"\n"):
                        self._flush()  # keeps the quarantine in line order
                        self.outputs.write_oversized(stats.lines, line, reader, limit)
                        stats.quarantined += 1
                        self.reasons["oversized_line"] += 1
                        continue
                    self._read(stats.lines, line.removesuffix(b"\n"))
                    if len(self.batch) + len(self.rejects) >= self.config.batch_rows:
                        self._flush()
                self._flush()
            if reader.sha256.hexdigest() != self.sha:
                raise FileChangedError(
                    f"{self.file.uri} changed while it was being collected (sha256 {self.sha[:12]}… at "
                    f"first, {reader.sha256.hexdigest()[:12]}… when read): collect it again once the "
                    "serving tier has finished writing it")
            stats.part, stats.quarantine = self.outputs.publish()
        except BaseException:
            self.outputs.discard()
            raise
        stats.reasons = dict(sorted(self.reasons.items()))
        return stats

    def _read(self, number: int, content: bytes) -> None:
        if not content.strip():
            self.stats.blank_lines += 1
            return
        row, text, problem = parse_line(content)
        if problem is None:
            self.batch.append((number, row, text))
        else:
            raw = content if text is None else text
            self.rejects.append(_quarantine(self.file, self.sha, number, *problem, raw=raw))

    def _flush(self) -> None:
        if self.batch:
            self._check_rows()
        if self.rejects:
            self.rejects.sort(key=lambda record: record["line"])
            self.outputs.write_quarantine(self.rejects)
            self.stats.quarantined += len(self.rejects)
            self.reasons.update(record["reason"] for record in self.rejects)
        if self.batch or self.rejects:
            self.say(f"{self.file.name}: {self.stats.lines:,} lines read, {self.stats.rows:,} new rows, "
                     f"{self.stats.duplicates:,} duplicates, {self.stats.quarantined:,} quarantined")
        self.batch, self.rejects = [], []

    def _check_rows(self) -> None:
        """Validate the batch with the schema, quarantine what it rejects, keep the rows not seen before."""
        frame = pd.DataFrame({name: pd.Series([row.get(name) for _, row, _ in self.batch], dtype=object)
                              for name in FIELDS})
        failures = schema_failures(frame, self.schema)
        good: dict[str, list] = {name: [] for name in PART_SCHEMA.names}
        for position, (number, row, text) in enumerate(self.batch):
            if position in failures:
                cells = failures[position]
                problems = [(cells[name], name) for name in FIELDS if name in cells]
                kind, name = problems[0]
                message = "; ".join(problem_message(k, n, row, self.config) for k, n in problems)
                self.rejects.append(_quarantine(self.file, self.sha, number, kind, name, row.get(name),
                                                message, text))
                continue
            digest = row_digest(row)
            # The digest table is the dedup memory: inserts of this file are visible to the rest of
            # it (same transaction) and roll back with it, so a crash forgets them too.
            if not self.db.execute("INSERT OR IGNORE INTO row_digests VALUES (?)", (digest,)).rowcount:
                self.stats.duplicates += 1
                continue
            for name in FIELDS:
                good[name].append(row.get(name))
            extra = {key: value for key, value in row.items() if key not in FIELD_SET}
            good["extra"].append(json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None)
            good["line"].append(number)
            good["row_digest"].append(digest.hex())
        if count := len(good["line"]):
            good["source_file"], good["file_sha256"] = [self.file.uri] * count, [self.sha] * count
            self.outputs.write_rows(pyarrow.table(good, schema=PART_SCHEMA))
            self.stats.rows += count


# ---- state, listing, and the entry points --------------------------------------------------------

_STATE_TABLES = """
CREATE TABLE IF NOT EXISTS processed_files (
    sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, uri TEXT NOT NULL, size INTEGER NOT NULL,
    lines INTEGER NOT NULL, blank_lines INTEGER NOT NULL, new_rows INTEGER NOT NULL,
    duplicates INTEGER NOT NULL, quarantined INTEGER NOT NULL, reasons TEXT NOT NULL,
    part TEXT, quarantine TEXT, collected_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS row_digests (digest BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen_files (
    uri TEXT PRIMARY KEY, size INTEGER NOT NULL, modified REAL NOT NULL, sha256 TEXT NOT NULL);
"""


class _State:
    """The collector's SQLite state, held under an exclusive lock for as long as it is open."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(path.with_name(path.name + ".lock"), "w")  # noqa: SIM115 (closed in close)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"another collector is using the state {path} (lock {self._lock.name}); "
                               "wait for it to finish, then run again") from None
        # Transactions are explicit, one per file. The default rollback journal keeps the state one
        # self-contained file after every commit, so callers may copy it (e.g. to an artefact store).
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript(_STATE_TABLES)

    def close(self) -> None:
        self.db.close()
        self._lock.close()

    def unchanged_sha(self, file: LogFile) -> str | None:
        """The sha256 of `file` when it was collected and is listed with the same size and mtime."""
        found = self.db.execute(
            "SELECT s.sha256 FROM seen_files s JOIN processed_files p ON p.sha256 = s.sha256 "
            "WHERE s.uri = ? AND s.size = ? AND s.modified = ?", (file.uri, file.size, file.modified)).fetchone()
        return found[0] if found else None

    def processed(self, sha: str) -> bool:
        return self.db.execute("SELECT 1 FROM processed_files WHERE sha256 = ?", (sha,)).fetchone() is not None

    def remember(self, file: LogFile, sha: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO seen_files VALUES (?, ?, ?, ?)",
                        (file.uri, file.size, file.modified, sha))

    def mark(self, file: LogFile, size: int, stats: FileStats) -> None:
        self.db.execute(
            "INSERT INTO processed_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (stats.sha256, file.name, file.uri, size, stats.lines, stats.blank_lines, stats.rows,
             stats.duplicates, stats.quarantined, json.dumps(stats.reasons), stats.part, stats.quarantine,
             datetime.now(UTC).isoformat(timespec="seconds")))
        self.remember(file, stats.sha256)


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ValueError(f"{uri!r} is not an S3 location: write it as s3://bucket/prefix")
    return bucket, key


def _wanted(name: str, pattern: str) -> bool:
    parts = name.split("/")
    return fnmatch.fnmatchcase(parts[-1], pattern) and not any(part.startswith(".") for part in parts)


def list_log_files(source: str | Path, s3_client=None, pattern: str = CollectorConfig.pattern) -> list[LogFile]:
    """The log files under `source` whose base name matches `pattern`, oldest first (by modified
    time, then name). `source` is a local folder (searched recursively) or `s3://bucket/prefix`
    (every key under `prefix/`, listed page by page with `s3_client`); names starting with "."
    (in-progress temp files), in any folder of the path, are left out."""
    files = []
    if str(source).startswith("s3://"):
        if s3_client is None:
            raise ValueError(f"listing {source} needs s3_client (a boto3 S3 client)")
        bucket, prefix = _split_s3(str(source))
        prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                name = entry["Key"][len(prefix):]
                if _wanted(name, pattern):
                    files.append(LogFile(name, entry["Size"], entry["LastModified"].timestamp(),
                                         f"s3://{bucket}/{entry['Key']}"))
    else:
        root = Path(source)
        if not root.is_dir():
            raise FileNotFoundError(f"log source {source} is not a folder: give a local folder or s3://bucket/prefix")
        for path in root.rglob("*"):
            name = path.relative_to(root).as_posix()
            if _wanted(name, pattern) and path.is_file():
                status = path.stat()
                files.append(LogFile(name, status.st_size, status.st_mtime, str(path.resolve())))
    return sorted(files, key=lambda file: (file.modified, file.name))


def _download(client, uri: str, target: Path) -> str:
    """Copy an S3 object to `target` chunk by chunk; its sha256."""
    if client is None:
        raise ValueError(f"collecting {uri} needs s3_client (a boto3 S3 client)")
    bucket, key = _split_s3(uri)
    digest = hashlib.sha256()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    with target.open("wb") as out:
        for chunk in body.iter_chunks(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _local_sha256(path: Path, out_dir: Path) -> str:
    """The sha256 of a local log, in a cheap pass of its own: a known file is never parsed."""
    if path.resolve().is_relative_to(out_dir.resolve()):
        raise ValueError(f"{path} lies under the collector's output {out_dir}: list the logs from a "
                         "folder that does not contain the output, or it would collect its own quarantine")
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _collect_file(file: LogFile, state: _State, out_dir: Path, downloads: Path, schema: pa.DataFrameSchema,
                  config: CollectorConfig, s3_client, say: Callable[[str], None]) -> FileStats:
    sha = state.unchanged_sha(file)
    if sha is not None:
        say(f"{file.name}: skipped, unchanged since it was collected")
        return FileStats(file.name, file.uri, sha, skipped=True)
    from_s3 = file.uri.startswith("s3://")
    path = downloads / "object.jsonl" if from_s3 else Path(file.uri)
    try:
        sha = _download(s3_client, file.uri, path) if from_s3 else _local_sha256(path, out_dir)
        if state.processed(sha):
            state.remember(file, sha)
            say(f"{file.name}: skipped, its content (sha256 {sha[:12]}…) was collected before")
            return FileStats(file.name, file.uri, sha, skipped=True)
        say(f"{file.name}: collecting {file.size:,} bytes (sha256 {sha[:12]}…)")
        state.db.execute("BEGIN IMMEDIATE")
        try:
            stats = _FileCollector(file, sha, state.db, out_dir, schema, config, say).run(path)
            state.mark(file, path.stat().st_size, stats)
            state.db.execute("COMMIT")
        except BaseException:
            state.db.execute("ROLLBACK")
            raise
    finally:
        if from_s3:
            path.unlink(missing_ok=True)
    say(f"{file.name}: {stats.rows:,} new rows, {stats.duplicates:,} duplicates, "
        f"{stats.quarantined:,} quarantined, {stats.blank_lines:,} blank lines")
    return stats


def collect(files: Iterable[LogFile], state_path: str | Path, out_dir: str | Path,
            config: CollectorConfig = CollectorConfig(), s3_client=None,
            progress: Callable[[str], None] | None = None) -> CollectStats:
    """Collect `files` (e.g. from `list_log_files`) in the order given into `out_dir`, remembering
    what was collected in the SQLite file `state_path` (see the module docstring).

    Idempotent: a file whose content was collected before is skipped, so re-running over the same
    files adds nothing. `s3_client` (boto3) is needed for s3:// files; `progress` receives a line
    per file and per batch. A failure leaves the file being collected unmarked (earlier files stay
    collected) and is raised.
    """
    out_dir = Path(out_dir)
    say = progress or (lambda message: None)
    schema = collected_schema(config)
    result = CollectStats()
    state = _State(Path(state_path))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # S3 objects are copied next to the outputs, not to /tmp, which may be memory (tmpfs).
        with tempfile.TemporaryDirectory(prefix=".download-", dir=out_dir) as downloads:
            for file in files:
                result.files.append(_collect_file(file, state, out_dir, Path(downloads), schema, config,
                                                  s3_client, say))
    finally:
        state.close()
    return result


def collected_summary(state_path: str | Path) -> dict:
    """What the state at `state_path` says was collected so far, over all runs: `files` processed,
    `rows` written, `duplicates`, `quarantined`, and `file_sha256`, the sorted content hashes of
    the processed files (a stable identity of the dataset, e.g. for a Dagster DataVersion)."""
    with closing(sqlite3.connect(Path(state_path).resolve().as_uri() + "?mode=ro", uri=True)) as db:
        files, rows, duplicates, quarantined = db.execute(
            "SELECT COUNT(*), TOTAL(new_rows), TOTAL(duplicates), TOTAL(quarantined) FROM processed_files"
        ).fetchone()
        hashes = [sha for (sha,) in db.execute("SELECT sha256 FROM processed_files ORDER BY sha256")]
    return {"files": files, "rows": int(rows), "duplicates": int(duplicates), "quarantined": int(quarantined),
            "file_sha256": hashes}


def read_collected(out_dir: str | Path, batch_rows: int = 10_000) -> Iterator[dict]:
    """Every collected row, `batch_rows` at a time from disk: part by part (in part-name order), in
    file order within a part, with `extra` decoded back to a dict ({} when the row had none)."""
    for part in sorted((Path(out_dir) / "parts").glob("*.parquet")):
        with pq.ParquetFile(part) as parquet:
            for batch in parquet.iter_batches(batch_size=batch_rows):
                for row in batch.to_pylist():
                    row["extra"] = json.loads(row["extra"]) if row["extra"] else {}
                    yield row
