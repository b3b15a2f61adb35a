"""Trace validation: a pandera schema for canonical traces, and a quarantine for every row it rejects.

Rows come from JSON or Parquet, so any field may hold anything. `validate_traces` builds a frame of
object dtype with one column per canonical field (None where a row lacks the field), so pandera
checks each value's type element-wise instead of coercing it, and validates lazily to collect every
failure of every row at once. Each failure maps back to its row through the frame's index, which is
the row's position in the input.

A row is quarantined when any of these holds, each a reason *kind*:

- `missing_field` / `null_value`: a canonical field is absent, or present but null;
- `wrong_type`: `meta` is not an object, or another field is not a string;
- `empty_string`: `id`, `question`, `solution`, `answer` or `source` is blank (whitespace only);
- `bad_split`: `split` is not one of train / validation / test;
- `unparseable_steps`: `parse_steps` rejects the `solution`;
- `duplicate_id`: an earlier row already has this id (the first row with an id keeps it, whatever
  else is wrong with that row);
- `not_an_object`: the row is not a JSON object at all.

A quarantine entry is one rejected row: `{"record", "row_index", "field", "value", "reason",
"problems", "row"}`. `problems` lists every problem of the row as `{"field", "kind", "value",
"reason"}`; `field`, `value` (truncated repr) are the first problem's, and `reason` joins all
reasons with "; ". `record` is the row's id when that is a non-empty string or an integer, else the
row index (0-based position in the input). `row` is the row exactly as given.

Raw rows are also stored here (`raw_rows_parquet`), because a row with wrong types cannot go
through a typed Parquet column and must still reach validation unchanged.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.parquet as pq

from srl_platform.steps import StepParseError, parse_steps, truncate
from srl_platform.traces import SPLITS, TRACE_FIELDS

TEXT_FIELDS = ("id", "question", "solution", "answer", "source")
"""Fields that must be non-blank strings (`split` must be a string too, one of `SPLITS`)."""


def _not_blank(value: object) -> bool:
    # Only judges strings: a non-string already fails the dtype check, once is enough.
    return not isinstance(value, str) or bool(value.strip())


def _known_split(value: object) -> bool:
    return not isinstance(value, str) or value in SPLITS


def _steps_error(solution: str) -> str | None:
    """Why `parse_steps` rejects `solution`, or None when it parses."""
    try:
        parse_steps(solution)
    except StepParseError as error:
        return str(error)
    return None


def _steps_parse(value: object) -> bool:
    # Blank or non-string solutions already fail another check.
    return not isinstance(value, str) or not value.strip() or _steps_error(value) is None


def _first_use_of_id(ids: pd.Series) -> pd.Series:
    """True where a row is the first with its id. Only string ids are compared (a list is not even
    hashable), and non-strings already fail the dtype check."""
    is_text = ids.map(lambda value: isinstance(value, str)).astype(bool)
    repeated = ids[is_text].duplicated(keep="first")
    return ~repeated.reindex(ids.index, fill_value=False)


_NOT_BLANK = pa.Check(_not_blank, element_wise=True, name="not_blank")

TRACE_SCHEMA = pa.DataFrameSchema(
    columns={
        "id": pa.Column(str, checks=[_NOT_BLANK, pa.Check(_first_use_of_id, name="unique_id")]),
        "question": pa.Column(str, checks=[_NOT_BLANK]),
        "solution": pa.Column(
            str, checks=[_NOT_BLANK, pa.Check(_steps_parse, element_wise=True, name="steps_parse")]
        ),
        "answer": pa.Column(str, checks=[_NOT_BLANK]),
        "source": pa.Column(str, checks=[_NOT_BLANK]),
        "split": pa.Column(str, checks=[pa.Check(_known_split, element_wise=True, name="known_split")]),
        "meta": pa.Column(dict),
    },
    strict=True,
    coerce=False,
    name="canonical_trace",
)
"""The canonical trace, checked on a frame of object dtype (see `validate_traces`)."""

_KIND_BY_CHECK = {
    "not_nullable": "null_value",
    "not_blank": "empty_string",
    "known_split": "bad_split",
    "steps_parse": "unparseable_steps",
    "unique_id": "duplicate_id",
}
# When a cell fails several checks (pandera reports a null `meta` as both not-nullable and not a
# dict), the first kind here is the one kept.
_KIND_ORDER = ("missing_field", "null_value", "wrong_type", "empty_string", "bad_split",
               "unparseable_steps", "duplicate_id")


@dataclass(frozen=True)
class TraceValidation:
    """What `validate_traces` found: the `valid` rows in input order, one `quarantine` entry per
    rejected row, the `total` rows given, `valid_fraction` = valid / total (0.0 when no rows were
    given: nothing to train on is not a pass) and `reasons`, the number of problems of each kind
    (a row with two problems counts under both, so the counts may sum to more than the rows)."""

    valid: list[dict]
    quarantine: list[dict]
    total: int
    valid_fraction: float
    reasons: dict[str, int] = field(default_factory=dict)


def _record(row: dict, index: int) -> object:
    ident = row.get("id")
    if (isinstance(ident, str) and ident.strip()) or (isinstance(ident, int) and not isinstance(ident, bool)):
        return ident
    return index


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number"}.get(type(value), type(value).__name__)


def _problem(kind: str, name: str, row: dict, index: int, first_use: dict[str, int]) -> dict:
    value = row.get(name)
    if kind == "missing_field":
        reason = f"field {name!r} is missing"
    elif kind == "null_value":
        reason = f"field {name!r} is null"
    elif kind == "wrong_type":
        wanted = "an object ({} when there is nothing to say)" if name == "meta" else "a string"
        reason = f"field {name!r} must be {wanted}, got {_type_name(value)} {truncate(value, 60)}"
    elif kind == "empty_string":
        reason = f"field {name!r} is blank"
    elif kind == "bad_split":
        reason = f"field 'split' = {truncate(value, 60)} must be one of {SPLITS}"
    elif kind == "unparseable_steps":
        reason = f"field 'solution' is not numbered steps: {_steps_error(value)}"
    elif kind == "duplicate_id":
        reason = (f"duplicate id {truncate(value, 60)}: row {first_use[value]} already has it "
                  "(the first row with an id keeps it); give this row its own id")
    else:
        reason = f"field {name!r} failed pandera check {kind!r}"
    return {"field": name, "kind": kind, "value": truncate(value), "reason": reason}


def cell_failures(frame: pd.DataFrame, schema: pa.DataFrameSchema, kinds: dict[str, str],
                  order: tuple[str, ...]) -> dict[int, dict[str, str]]:
    """{row index: {field: kind}} for every cell `schema` rejects (lazy validation).

    A check's name maps to a kind through `kinds` (a failed dtype check is `wrong_type`, an unmapped
    check keeps its name); when a cell fails several checks, the kind first in `order` is kept.
    """
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return {}
    failures: dict[int, dict[str, str]] = {}
    for case in cases.itertuples(index=False):
        if case.index is None or pd.isna(case.index):
            # The frame always has exactly the schema's columns, so every failure is some row's.
            raise RuntimeError(
                f"pandera failure not tied to a row: column {case.column!r}, check {case.check!r}, "
                f"value {truncate(case.failure_case)}"
            )
        check = str(case.check)
        kind = "wrong_type" if check.startswith("dtype(") else kinds.get(check, check)
        cell = failures.setdefault(int(case.index), {})
        known = [k for k in (cell.get(case.column), kind) if k is not None]
        cell[case.column] = min(known, key=lambda k: order.index(k) if k in order else len(order))
    return failures


def validate_traces(rows: list[dict]) -> TraceValidation:
    """Split `rows` into valid canonical traces and a quarantine of the others, with reasons.

    Quarantines exactly the rows that break `TRACE_SCHEMA` (see the module docstring for the
    reason kinds and the entry format); every other row is returned unchanged, in order.
    """
    objects = {index: row for index, row in enumerate(rows) if isinstance(row, dict)}
    frame = pd.DataFrame(
        {name: pd.Series([row.get(name) for row in objects.values()], index=list(objects), dtype=object)
         for name in TRACE_FIELDS},
        columns=list(TRACE_FIELDS),
    )
    # An empty frame: pandera would judge the dtype of the empty object columns, not of any value.
    failures = {} if frame.empty else cell_failures(frame, TRACE_SCHEMA, _KIND_BY_CHECK, _KIND_ORDER)
    first_use: dict[str, int] = {}
    for index, row in objects.items():
        if isinstance(row.get("id"), str):
            first_use.setdefault(row["id"], index)

    valid, quarantine, reasons = [], [], Counter()
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            problems = [{"field": "row", "kind": "not_an_object", "value": truncate(row),
                         "reason": f"row is {_type_name(row)}, not an object with fields {TRACE_FIELDS}"}]
            record = index
        elif index in failures:
            cells = failures[index]
            problems = [
                _problem("missing_field" if name not in row else cells[name], name, row, index, first_use)
                for name in TRACE_FIELDS if name in cells
            ]
            record = _record(row, index)
        else:
            valid.append(row)
            continue
        reasons.update(problem["kind"] for problem in problems)
        quarantine.append({
            "record": record,
            "row_index": index,
            "field": problems[0]["field"],
            "value": problems[0]["value"],
            "reason": "; ".join(problem["reason"] for problem in problems),
            "problems": problems,
            "row": row,
        })
    total = len(rows)
    return TraceValidation(
        valid=valid,
        quarantine=quarantine,
        total=total,
        valid_fraction=len(valid) / total if total else 0.0,
        reasons=dict(sorted(reasons.items())),
    )


def valid_fraction_verdict(valid: int, total: int, floor: float) -> tuple[bool, str]:
    """(passed, description) for the gate `valid / total >= floor`; no rows at all never pass."""
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"valid-fraction floor {floor!r} must be between 0 and 1 (0.9 means 90%)")
    fraction = valid / total if total else 0.0
    passed = total > 0 and fraction >= floor
    relation = ">=" if passed else "<"
    return passed, f"{valid} of {total} rows valid ({fraction:.1%}) {relation} floor {floor * 100:g}%"


# Raw rows as Parquet. Columns: `row_index`; one string column per canonical field holding the
# value when it is a string (null otherwise, for reading the table in any Parquet tool); `meta` as
# JSON text when it is an object; and `row`, the whole row as JSON text, which is what
# `raw_rows_from_parquet` reads back: values of any type, missing fields and extra fields survive.
RAW_ROW_COLUMN = "row"


def unencodable_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(rows JSON can hold, rejects for the others), e.g. a Parquet timestamp with no JSON form.

    A reject is `{"record", "field", "value", "reason", "row"}` with `row` as its repr (a JSONL
    file cannot hold the row itself).
    """
    kept, rejects = [], []
    for index, row in enumerate(rows):
        try:
            json.dumps(row, ensure_ascii=False)
        except (TypeError, ValueError):
            bad = next((k for k, v in row.items() if not _json_encodable(v)), "row")
            value = row.get(bad, row)
            reason = (f"field {bad!r} holds a {type(value).__name__}, which has no JSON form; "
                      "convert it to text or a number in the source")
            rejects.append({"record": _record(row, index), "field": bad, "value": truncate(value),
                            "reason": reason, "row": repr(row)})
        else:
            kept.append(row)
    return kept, rejects


def _json_encodable(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def raw_rows_parquet(rows: list[dict]) -> bytes:
    """Rows of any shape as Parquet bytes, losslessly (see `RAW_ROW_COLUMN`); rows must be
    JSON-encodable (`unencodable_rows` sorts out the others first)."""
    columns: dict[str, list] = {"row_index": list(range(len(rows)))}
    for name in TRACE_FIELDS:
        if name == "meta":
            columns[name] = [json.dumps(r[name], ensure_ascii=False, sort_keys=True)
                             if isinstance(r.get(name), dict) else None for r in rows]
        else:
            columns[name] = [r.get(name) if isinstance(r.get(name), str) else None for r in rows]
    columns[RAW_ROW_COLUMN] = [json.dumps(row, ensure_ascii=False) for row in rows]
    schema = pyarrow.schema([("row_index", pyarrow.int64())]
                            + [(name, pyarrow.string()) for name in (*TRACE_FIELDS, RAW_ROW_COLUMN)])
    sink = pyarrow.BufferOutputStream()
    pq.write_table(pyarrow.table(columns, schema=schema), sink)
    return sink.getvalue().to_pybytes()


def raw_rows_from_parquet(data: bytes) -> list[dict]:
    """The rows `raw_rows_parquet` stored, exactly as they were given."""
    table = pq.read_table(pyarrow.BufferReader(data), columns=[RAW_ROW_COLUMN])
    return [json.loads(text) for text in table.column(RAW_ROW_COLUMN).to_pylist()]
