"""Expert traces: the canonical record, its files, and importers for GSM8K and s1K-1.1.

A canonical trace is one solved problem:
`{"id", "question", "solution", "answer", "source", "split", "meta"}` where `solution` holds the
numbered steps (`N. **Title**: body`, see `srl_platform.steps`) and `answer` the final answer text.
Importers never drop a row silently: every row becomes a trace or a reject
`{"record", "field", "value", "reason", "row"}` that says what was wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from srl_platform.steps import StepParseError, format_step, parse_steps, truncate

TRACE_FIELDS = ("id", "question", "solution", "answer", "source", "split", "meta")
SPLITS = ("train", "validation", "test")
TraceFormat = Literal["auto", "canonical", "gsm8k", "s1k"]
TRACE_FORMATS: tuple[str, ...] = ("auto", "canonical", "gsm8k", "s1k")

# Parquet has no free-form dict type: dict columns (a trace's `meta`) are stored as JSON text and
# listed under this schema-metadata key so `read_records` gives back the same dicts.
_JSON_COLUMNS_KEY = b"srl_platform.json_columns"


def normalize_question(question: str) -> str:
    """The question as compared for duplicates and split assignment: lower case, single spaces."""
    return " ".join(question.lower().split())


def assign_split(question: str, splits: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """The split a question belongs to, from a stable hash of its normalized text.

    The same question always lands in the same split, whatever generated or imported it.
    """
    if len(splits) != len(SPLITS) or min(splits) < 0 or abs(sum(splits) - 1.0) > 1e-9:
        raise ValueError(
            f"splits={splits!r}: give three non-negative fractions (train, validation, test) summing to 1"
        )
    digest = hashlib.sha256(normalize_question(question).encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    bound = 0.0
    for name, fraction in zip(SPLITS, splits, strict=True):
        bound += fraction
        if position < bound:
            return name
    return SPLITS[-1]  # position within float rounding of 1.0


def _suffix(path: Path) -> str:
    if path.suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl or .parquet")
    return path.suffix


def _rows(path: str | Path) -> Iterator[tuple[int, object, str | None]]:
    """(row number from 1, decoded row or raw line, decode error or None) for each row of a file."""
    if str(path).startswith("s3://"):
        raise ValueError(f"{path}: S3 paths are not read here yet; copy the file to a local path first")
    path = Path(path)
    if _suffix(path) == ".parquet":
        for number, row in enumerate(_table_records(pq.read_table(path)), start=1):
            yield number, row, None
        return
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None
            except json.JSONDecodeError as error:
                reason = f"line is not valid JSON ({error.msg} at column {error.colno})"
                yield number, line.rstrip("\n"), reason


def first_record(path: str | Path) -> dict | None:
    """The first row that is a JSON object (to tell what a file holds), or None."""
    return next((row for _, row, error in _rows(path) if not error and isinstance(row, dict)), None)


def read_records(path: str | Path) -> list[dict]:
    """All records of a local `.jsonl` or `.parquet` file; a line that is not JSON is an error."""
    records = []
    for number, row, error in _rows(path):
        if error or not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: {error or 'row is not a JSON object'}; fix or remove it")
        records.append(row)
    return records


def _atomic_target(path: str | Path) -> tuple[Path, Path]:
    # Write next to the target and rename over it, so a reader never sees half a file. (Not
    # mkstemp: its 0600 mode would survive the rename.)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def write_jsonl(records: Iterable[dict], path: str | Path) -> Path:
    """Write records one JSON object a line (UTF-8, non-ASCII kept), atomically."""
    path, temp = _atomic_target(path)
    try:
        with temp.open("x", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def _records_table(records: Iterable[dict]) -> pa.Table:
    """Records as an Arrow table: one column per key any record has (None where a record lacks it);
    dict fields as JSON text, listed in the schema metadata so `_table_records` decodes them."""
    rows = [dict(record) for record in records]
    # Every key of every row, in first-seen order (`from_pylist` alone keeps the first row's keys).
    columns = list(dict.fromkeys(key for row in rows for key in row))
    json_columns = sorted({key for row in rows for key, value in row.items() if isinstance(value, dict)})
    for row in rows:
        for column in json_columns:
            if column in row and row[column] is not None:
                row[column] = json.dumps(row[column], ensure_ascii=False, sort_keys=True)
    table = pa.Table.from_pylist([{column: row.get(column) for column in columns} for row in rows])
    return table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _JSON_COLUMNS_KEY: json.dumps(json_columns).encode()}
    )


def _table_records(table: pa.Table) -> list[dict]:
    """The records `_records_table` stored, JSON columns decoded back into dicts."""
    json_columns = json.loads((table.schema.metadata or {}).get(_JSON_COLUMNS_KEY, b"[]"))
    rows = table.to_pylist()
    for row in rows:
        for column in json_columns:
            if isinstance(row.get(column), str):
                row[column] = json.loads(row[column])
    return rows


def parquet_bytes(records: Iterable[dict]) -> bytes:
    """Records as the bytes of a Parquet file, as `write_parquet` writes it (for artefact stores)."""
    sink = pa.BufferOutputStream()
    pq.write_table(_records_table(records), sink)
    return sink.getvalue().to_pybytes()


def records_from_parquet_bytes(data: bytes) -> list[dict]:
    """The records of Parquet bytes from `parquet_bytes` (dict fields decoded)."""
    return _table_records(pq.read_table(pa.BufferReader(data)))


def jsonl_bytes(records: Iterable[dict]) -> bytes:
    """Records one JSON object a line (UTF-8, non-ASCII kept), as `write_jsonl` writes them."""
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")


def records_from_jsonl_bytes(data: bytes) -> list[dict]:
    """The records of JSONL bytes; blank lines are skipped, a line that is not JSON is an error."""
    records = []
    # Split on "\n" only: `str.splitlines` also splits on U+2028 and kin, which JSON text may hold.
    for number, line in enumerate(data.decode("utf-8").split("\n"), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                reason = f"JSONL line {number} is not valid JSON ({error.msg}): {line[:80]!r}"
                raise ValueError(reason) from None
    return records


def canonical_json(value: object) -> bytes:
    """`value` as JSON with sorted keys and non-ASCII kept: the same data always gives the same bytes."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def write_parquet(records: Iterable[dict], path: str | Path) -> Path:
    """Write records as Parquet, atomically; dict fields are stored as JSON text and read back as dicts.

    Every key any record has becomes a column; a record without it reads back with None there."""
    table = _records_table(records)
    path, temp = _atomic_target(path)
    try:
        pq.write_table(table, temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def write_records(records: Iterable[dict], path: str | Path) -> Path:
    """Write records as JSONL or Parquet, chosen by the file suffix."""
    if _suffix(Path(path)) == ".parquet":
        return write_parquet(records, path)
    return write_jsonl(records, path)


def _reject(record: object, field: str, value: object, reason: str, row: object) -> dict:
    return {"record": record, "field": field, "value": truncate(value), "reason": reason, "row": row}


def _trace_problems(rec: dict) -> list[tuple[str, object, str]]:
    """(field, value, what is wrong) for each problem of a canonical trace."""
    problems = []
    for field in TRACE_FIELDS:
        if field not in rec:
            problems.append((field, None, "is missing"))
            continue
        value = rec[field]
        if field == "split":
            if value not in SPLITS:
                problems.append((field, value, f"must be one of {SPLITS}"))
        elif field == "meta":
            if not isinstance(value, dict):
                problems.append((field, value, "must be an object (use {} when there is nothing to say)"))
        elif not isinstance(value, str) or not value.strip():
            problems.append((field, value, "must be a non-empty string"))
    return problems


def validate_trace(rec: object, index: int) -> list[str]:
    """What is wrong with one canonical trace, one message per bad field (empty when it is valid)."""
    if not isinstance(rec, dict):
        return [f"record {index}: must be an object with fields {TRACE_FIELDS}, got {truncate(rec)}"]
    name = f"record {index} (id={rec.get('id')!r})"
    return [
        f"{name}: field {field!r} = {truncate(value)} {problem}"
        for field, value, problem in _trace_problems(rec)
    ]


def _read_canonical(path: str | Path) -> tuple[list[dict], list[dict]]:
    traces, rejects, first_seen = [], [], {}
    for number, row, error in _rows(path):
        if error or not isinstance(row, dict):
            rejects.append(_reject(number, "row", row, error or "row is not a JSON object", row))
            continue
        problems = _trace_problems(row)
        if problems:
            field, value, _ = problems[0]
            reason = "; ".join(f"{f} {p}" for f, _, p in problems)
            rejects.append(_reject(row.get("id", number), field, value, reason, row))
        elif row["id"] in first_seen:
            reason = f"duplicate id (first used by row {first_seen[row['id']]}); ids must be unique"
            rejects.append(_reject(row["id"], "id", row["id"], reason, row))
        else:
            first_seen[row["id"]] = number
            traces.append(row)
    return traces, rejects


_ANNOTATION = re.compile(r"<<[^<>]*>>")


def read_gsm8k(path: str | Path) -> tuple[list[dict], list[dict]]:
    """GSM8K rows as canonical traces: each solution line one step, the `####` line the answer.

    Calculator annotations (`<<48/2=24>>`) are removed; the answer loses its thousands commas.
    The id is `gsm8k-<line number>` and the split is `train` (the file is GSM8K's train split).
    """
    traces, rejects = [], []
    for number, row, error in _rows(path):
        record = f"gsm8k-{number}"
        if error or not isinstance(row, dict):
            rejects.append(_reject(record, "row", row, error or "row is not a JSON object", row))
            continue
        question, answer = row.get("question"), row.get("answer")
        if not isinstance(question, str) or not question.strip():
            reason = "question must be a non-empty string"
            rejects.append(_reject(record, "question", question, reason, row))
            continue
        lines = answer.splitlines() if isinstance(answer, str) else []
        marks = [i for i, line in enumerate(lines) if line.strip().startswith("####")]
        if not marks:
            reason = "answer must be solution lines ending in a '#### <final answer>' line"
            rejects.append(_reject(record, "answer", answer, reason, row))
            continue
        final = lines[marks[-1]].strip().removeprefix("####").strip().replace(",", "")
        steps = [s for s in (_ANNOTATION.sub("", line).strip() for line in lines[: marks[-1]]) if s]
        after = [line for line in lines[marks[-1] + 1 :] if line.strip()]
        reason = (
            "the '####' line has no answer" if not final
            else "no solution steps before the '####' line" if not steps
            else "text after the '####' line" if after
            else None
        )
        if reason:
            rejects.append(_reject(record, "answer", answer, reason, row))
            continue
        traces.append(
            {
                "id": record,
                "question": question.strip(),
                "solution": "\n".join(format_step(i, f"Step {i}", s) for i, s in enumerate(steps, start=1)),
                "answer": final,
                "source": "gsm8k",
                "split": "train",
                "meta": {"family": "gsm8k", "file": Path(path).name, "line": number},
            }
        )
    return traces, rejects


_BOXED = re.compile(r"\\boxed\s*\{")


def last_boxed(text: str) -> str | None:
    """The content of the last complete `\\boxed{...}` in `text` (braces balanced), else None."""
    found = None
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                found = text[start:i]
                break
    return found.strip() if found is not None else None


# Step headings DeepSeek-style attempts use, each at the start of a line, tried one style at a
# time: `1. **Title**: body`, `**Step 1: Title**`, `### Step 1: Title` / `### 1. Title`.
_STEP_STYLES = (
    re.compile(r"(\d+)\.[ \t]+\*\*(.+?)\*\*[ \t]*:?[ \t]*(.*)"),
    re.compile(
        r"(?:#{1,6}[ \t]+)?\*\*Step[ \t]+(\d+)[ \t]*[:.)\-–—]?[ \t]*(.*?)\*\*[ \t]*:?[ \t]*(.*)"
    ),
    re.compile(r"#{1,6}[ \t]+(?:Step[ \t]+)?(\d+)[ \t]*(?:[:.)\-–—][ \t]*(.*))?()"),
)


def parse_attempt_steps(attempt: str) -> tuple[str, list[tuple[str, str]]]:
    """(preamble, [(title, body), ...]) of a free-form numbered solution; StepParseError if none.

    Lenient about how a heading looks, exact about numbering: headings of one style must count
    1..N in order. When several styles qualify, the one whose first heading comes first is the
    outline (a numbered list inside a `### Step` is body text). A heading without a title is titled
    `Step N`. Text after the last heading belongs to it.
    """
    lines = attempt.splitlines()
    outlines, first_error = [], None
    for style in _STEP_STYLES:
        heads = [(i, m) for i, line in enumerate(lines) if (m := style.fullmatch(line.rstrip()))]
        numbers = [int(m.group(1)) for _, m in heads]
        if heads and numbers == list(range(1, len(numbers) + 1)):
            outlines.append(heads)
        elif heads:
            reason = f"steps are numbered {numbers[:12]}, not 1..{len(numbers)} in order"
            first_error = first_error or reason
    if not outlines:
        raise StepParseError(
            first_error or "no numbered steps ('1. **Title**', '**Step 1: …**', '### Step 1')"
        )
    heads = min(outlines, key=lambda h: h[0][0])
    steps = []
    for k, (i, match) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
        title = (match.group(2) or "").replace("*", "").strip().rstrip(":").strip() or f"Step {k + 1}"
        steps.append((title, "\n".join([match.group(3) or "", *lines[i + 1 : end]]).strip()))
    return "\n".join(lines[: heads[0][0]]).strip(), steps


def _s1k_trace(number: int, row: dict) -> tuple[dict | None, dict | None]:
    record = f"s1k-{number}"
    question, solution, attempt = row.get("question"), row.get("solution"), row.get("deepseek_attempt")
    for field, value in (("question", question), ("solution", solution), ("deepseek_attempt", attempt)):
        if not isinstance(value, str) or not value.strip():
            return None, _reject(record, field, value, f"{field} must be a non-empty string", row)
    try:
        preamble, steps = parse_attempt_steps(attempt)
        canonical = "\n".join(format_step(i, t, b) for i, (t, b) in enumerate(steps, start=1))
        reparsed = parse_steps(canonical)
    except StepParseError as error:
        return None, _reject(record, "deepseek_attempt", attempt, str(error), row)
    if len(reparsed) != len(steps):
        reason = (
            f"{len(steps)} steps become {len(reparsed)} when re-read "
            "(a body line looks like a step heading)"
        )
        return None, _reject(record, "deepseek_attempt", attempt, reason, row)
    meta = {"family": "s1k", "row": number}
    meta.update({k: row[k] for k in ("cot_type", "source_type") if isinstance(row.get(k), str)})
    if preamble:
        meta["preamble"] = preamble
    answer = last_boxed(solution) or solution.strip()
    trace = {"id": record, "question": question.strip(), "solution": canonical, "answer": answer,
             "source": "s1k-1.1", "split": "train", "meta": meta}
    return trace, None


def read_s1k(path: str | Path) -> tuple[list[dict], list[dict]]:
    """s1K-1.1 rows as canonical traces: steps from `deepseek_attempt`, answer from `solution`.

    The answer is the last `\\boxed{...}` of `solution`, else the whole solution. Text before the
    first step is kept in `meta["preamble"]`. The id is `s1k-<row number>`; the split is `train`.
    """
    traces, rejects = [], []
    for number, row, error in _rows(path):
        if error or not isinstance(row, dict):
            rejects.append(_reject(f"s1k-{number}", "row", row, error or "row is not a JSON object", row))
            continue
        trace, reject = _s1k_trace(number, row)
        (traces if trace else rejects).append(trace or reject)
    return traces, rejects


def detect_format(path: str | Path) -> str:
    """`canonical`, `s1k` or `gsm8k`, from the columns of the file's first object row."""
    for _, row, error in _rows(path):
        if error or not isinstance(row, dict):
            continue
        if set(TRACE_FIELDS) <= row.keys():
            return "canonical"
        if "deepseek_attempt" in row:
            return "s1k"
        if {"question", "answer"} <= row.keys():
            return "gsm8k"
        raise ValueError(
            f"{path}: cannot tell the format from columns {sorted(row)}; expected canonical "
            f"{TRACE_FIELDS}, s1K (question, solution, deepseek_attempt) or GSM8K (question, answer)"
        )
    return "canonical"  # no rows: nothing to convert


def load_traces(path: str | Path, fmt: TraceFormat = "auto") -> tuple[list[dict], list[dict]]:
    """(traces, rejects) from a canonical, GSM8K or s1K file; `auto` tells them apart by columns."""
    if fmt not in TRACE_FORMATS:
        raise ValueError(f"trace format {fmt!r} is unknown; use one of {TRACE_FORMATS}")
    if fmt == "auto":
        fmt = detect_format(path)
    readers = {"canonical": _read_canonical, "gsm8k": read_gsm8k, "s1k": read_s1k}
    return readers[fmt](path)


def read_trace_rows(path: str | Path, fmt: TraceFormat = "auto") -> tuple[list[dict], list[dict]]:
    """(rows, rejects) to validate later: a canonical file's object rows exactly as they are, or
    GSM8K/s1K rows converted by their readers.

    Unlike `load_traces`, a canonical row with a missing field or a wrong type is kept: deciding what
    is wrong with it is `srl_platform.validation`'s job, which quarantines it with every reason. The
    rejects are rows there is nothing to keep of: a line that is not JSON, a row that is not an
    object, a GSM8K/s1K row its reader cannot convert.
    """
    if fmt not in TRACE_FORMATS:
        raise ValueError(f"trace format {fmt!r} is unknown; use one of {TRACE_FORMATS}")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt != "canonical":
        return load_traces(path, fmt)
    rows, rejects = [], []
    for number, row, error in _rows(path):
        if error or not isinstance(row, dict):
            rejects.append(_reject(number, "row", row, error or "row is not a JSON object", row))
        else:
            rows.append(row)
    return rows, rejects
