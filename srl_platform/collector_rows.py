"""Serving-log rows: the fields, the pandera schema, and what is wrong with a bad line.

Everything about one line of a serving log, apart from where it is read from and written to
(`srl_platform.collector`): the row schema (`COLLECTED_SCHEMA`, applied per batch), line-level
parsing (UTF-8, JSON, an object), the reasons a line is quarantined, and messages that name the
line, field and value and say what to fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa

from srl_platform.steps import truncate
from srl_platform.traces import canonical_json
from srl_platform.validation import cell_failures

REQUIRED_FIELDS = ("prompt", "completion", "model", "adapter_version", "latency_ms", "prompt_tokens",
                   "completion_tokens")
OPTIONAL_FIELDS = ("request_id", "timestamp", "task_family", "reference_answer")
FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
FIELD_SET = frozenset(FIELDS)
DIGEST_FIELDS = ("prompt", "completion", "model", "adapter_version")
REASONS = ("invalid_utf8", "bad_json", "not_an_object", "missing_field", "wrong_type", "empty_string",
           "negative_value", "oversized_completion", "oversized_prompt", "oversized_line")

_INT64_MAX = 2**63 - 1
# A \uXXXX escape for a surrogate: json.loads pairs valid ones, so only then is a lone one possible.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class CollectorConfig:
    """How serving logs are read.

    max_completion_chars: a longer `completion` is quarantined as `oversized_completion`.
    max_prompt_chars: a longer `prompt` is quarantined as `oversized_prompt`.
    max_line_bytes: a longer line (newline excluded) is quarantined as `oversized_line` without being
        parsed, its bytes streamed to the quarantine: no line, however long, is held in memory.
    batch_rows: lines parsed and validated together, written as one Parquet row group. Memory
        grows with this, never with the size of a file or of the dataset.
    pattern: glob on the file's base name that `list_log_files` matches.
    """

    max_completion_chars: int = 32_000
    max_prompt_chars: int = 32_000
    max_line_bytes: int = 1_000_000
    batch_rows: int = 10_000
    pattern: str = "*.jsonl"

    def __post_init__(self) -> None:
        for name in ("max_completion_chars", "max_prompt_chars", "max_line_bytes", "batch_rows"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"CollectorConfig.{name}={value!r} must be a positive integer")


def row_digest(row: dict) -> bytes:
    """A row's identity for deduplication: sha256 of the JSON array of its `DIGEST_FIELDS`."""
    return hashlib.sha256(json.dumps([row[name] for name in DIGEST_FIELDS], ensure_ascii=False,
                                     separators=(",", ":")).encode("utf-8")).digest()


def _is_number(value: object) -> bool:
    return (type(value) is int and abs(value) <= _INT64_MAX) or (type(value) is float and math.isfinite(value))


def _is_count(value: object) -> bool:
    return type(value) is int and abs(value) <= _INT64_MAX


def _check(reason: str, ok: Callable[[object], bool]) -> pa.Check:
    # Named after the quarantine reason it gives; `ok` only judges values of the right type, since
    # a value of the wrong type already fails the type check and one reason per problem is enough.
    return pa.Check(lambda column: column.map(ok).astype(bool), name=reason)


def collected_schema(config: CollectorConfig = CollectorConfig()) -> pa.DataFrameSchema:
    """The pandera schema of a serving-log row, with `config`'s size limits, for a frame of object
    dtype (one column per field, None where a row lacks it) so every value's type is checked."""
    not_blank = _check("empty_string", lambda v: not isinstance(v, str) or bool(v.strip()))
    non_negative = _check("negative_value", lambda v: not _is_number(v) or v >= 0)
    columns = {
        "prompt": pa.Column(str, checks=[not_blank, _check(
            "oversized_prompt", lambda v: not isinstance(v, str) or len(v) <= config.max_prompt_chars)]),
        "completion": pa.Column(str, checks=[_check(
            "oversized_completion",
            lambda v: not isinstance(v, str) or len(v) <= config.max_completion_chars)]),
        "model": pa.Column(str, checks=[not_blank]),
        "adapter_version": pa.Column(str, checks=[not_blank]),
        "latency_ms": pa.Column(checks=[_check("wrong_type", _is_number), non_negative]),
        "prompt_tokens": pa.Column(checks=[_check("wrong_type", _is_count), non_negative]),
        "completion_tokens": pa.Column(checks=[_check("wrong_type", _is_count), non_negative]),
        **{name: pa.Column(str, nullable=True) for name in OPTIONAL_FIELDS},
    }
    return pa.DataFrameSchema(columns, strict=True, coerce=False, name="serving_log_row")


COLLECTED_SCHEMA = collected_schema()
"""The serving-log row schema at the default limits (`collect` builds one from its config)."""

_EXPECTED = {"latency_ms": "a finite number >= 0 (not a boolean)",
             "prompt_tokens": "an integer >= 0 that fits in 64 bits",
             "completion_tokens": "an integer >= 0 that fits in 64 bits"}
TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}
_KIND_ORDER = ("missing_field", "wrong_type", "empty_string", "negative_value", "oversized_prompt",
               "oversized_completion")


def schema_failures(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> dict[int, dict[str, str]]:
    """{row position: {field: reason}} for every cell `schema` rejects."""
    return cell_failures(frame, schema, {"not_nullable": "missing_field"}, _KIND_ORDER)


def problem_message(kind: str, name: str, row: dict, config: CollectorConfig) -> str:
    value = row.get(name)
    where = f"field {name!r}"
    if kind == "missing_field":
        state = "null" if name in row else "missing"
        return f"{where} is {state}: every serving-log row needs it, fix the logger"
    if kind == "wrong_type":
        wanted = _EXPECTED.get(name, "a string")
        got = TYPE_NAMES.get(type(value), type(value).__name__)
        return f"{where} must be {wanted}, got {got} {truncate(value, 60)}: fix the type the logger writes"
    if kind == "empty_string":
        return f"{where} is blank: the logger must write the real {name}"
    if kind == "negative_value":
        return f"{where} = {value!r} is negative: it must be >= 0, fix the logger's measurement"
    limit = config.max_prompt_chars if name == "prompt" else config.max_completion_chars
    return (f"{where} has {len(value):,} characters, more than max_{name}_chars={limit:,}: raise "
            f"CollectorConfig.max_{name}_chars to collect it")


def parse_line(content: bytes) -> tuple[dict | None, str | None, tuple | None]:
    """(object, text, None) for a good line, else (None, text or None when not UTF-8, problem), a
    problem being (reason, field, value, message)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        near = content[max(0, error.start - 20):error.start + 20]
        return None, None, ("invalid_utf8", None, near, f"byte {error.start + 1} is not UTF-8 "
                            f"({error.reason}); the exact bytes are in raw_b64: write the log as UTF-8")
    try:
        row = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        detail = error.msg if isinstance(error, json.JSONDecodeError) else str(error) or "nested too deep"
        return None, text, ("bad_json", None, text[:60], f"not valid JSON ({detail}): the logger must "
                            "write one complete JSON object per line")
    if not isinstance(row, dict):
        kind = TYPE_NAMES.get(type(row), type(row).__name__)
        return None, text, ("not_an_object", None, row, f"a JSON {kind}, not an object: log one object "
                            f"with fields {REQUIRED_FIELDS} per line")
    if _SURROGATE_ESCAPE.search(content):
        for name, value in row.items():
            try:
                canonical_json({name: value})
            except UnicodeEncodeError:
                return None, text, ("invalid_utf8", name, value, f"field {name!r} holds a lone surrogate "
                                    "escape (\\uD800-\\uDFFF), which is not text: fix the logger's JSON encoder")
    return row, text, None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")
