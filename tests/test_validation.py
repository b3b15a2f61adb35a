"""Trace validation: the pandera schema, quarantine entries, the floor verdict, raw row storage."""

import copy
import datetime
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srl_platform.tasks.arithmetic import generate_traces
from srl_platform.traces import (
    jsonl_bytes,
    parquet_bytes,
    records_from_jsonl_bytes,
    records_from_parquet_bytes,
)
from srl_platform.validation import (
    raw_rows_from_parquet,
    raw_rows_parquet,
    unencodable_rows,
    valid_fraction_verdict,
    validate_traces,
)


@pytest.fixture()
def rows() -> list[dict]:
    return copy.deepcopy(generate_traces(8, seed=3))


def test_clean_traces_are_all_valid(rows):
    result = validate_traces(rows)
    assert result.valid == rows
    assert result.quarantine == []
    assert (result.total, result.valid_fraction, result.reasons) == (8, 1.0, {})


def _drop(field):
    def change(row):
        del row[field]
    return change


def _set(field, value):
    def change(row):
        row[field] = value
    return change


@pytest.mark.parametrize(
    ("change", "field", "kind", "in_reason"),
    [
        (_drop("answer"), "answer", "missing_field", "'answer' is missing"),
        (_drop("meta"), "meta", "missing_field", "'meta' is missing"),
        (_set("answer", 42), "answer", "wrong_type", "must be a string, got integer 42"),
        (_set("question", ["a", "b"]), "question", "wrong_type", "got array ['a', 'b']"),
        (_set("id", {"n": 1}), "id", "wrong_type", "got object"),
        (_set("meta", "family=arithmetic"), "meta", "wrong_type", "must be an object"),
        (_set("meta", None), "meta", "null_value", "'meta' is null"),
        (_set("source", None), "source", "null_value", "'source' is null"),
        (_set("solution", ""), "solution", "empty_string", "'solution' is blank"),
        (_set("answer", "  \n"), "answer", "empty_string", "'answer' is blank"),
        (_set("split", "dev"), "split", "bad_split", "'dev' must be one of"),
        (_set("split", ""), "split", "bad_split", "must be one of"),
        (_set("solution", "Add them up: 12."), "solution", "unparseable_steps", "text before step 1"),
        (_set("solution", "1. **A**: x\n3. **B**: y"), "solution", "unparseable_steps",
         "found 3 where 2 belongs"),
    ],
)
def test_each_malformation_quarantines_exactly_that_row(rows, change, field, kind, in_reason):
    change(rows[5])
    result = validate_traces(rows)

    assert [entry["row_index"] for entry in result.quarantine] == [5]
    entry = result.quarantine[0]
    assert entry["field"] == field
    assert [problem["kind"] for problem in entry["problems"]] == [kind]
    assert in_reason in entry["reason"]
    assert entry["row"] is rows[5]
    assert result.valid == rows[:5] + rows[6:]
    assert result.reasons == {kind: 1}
    assert result.valid_fraction == pytest.approx(7 / 8)


def test_values_are_checked_not_coerced(rows):
    rows[0]["answer"], rows[1]["answer"], rows[2]["id"] = 42, "42", True
    result = validate_traces(rows)
    assert [entry["row_index"] for entry in result.quarantine] == [0, 2]
    assert rows[1] in result.valid


def test_a_row_with_several_problems_is_one_entry_listing_all(rows):
    rows[2]["question"], rows[2]["split"], rows[2]["meta"] = 7, "dev", []
    result = validate_traces(rows)
    (entry,) = result.quarantine
    assert [p["field"] for p in entry["problems"]] == ["question", "split", "meta"]
    assert (entry["field"], entry["value"]) == ("question", "7")
    assert entry["reason"] == "; ".join(p["reason"] for p in entry["problems"])
    assert result.reasons == {"bad_split": 1, "wrong_type": 2}


def test_duplicate_ids_keep_the_first_row(rows):
    rows[4]["id"] = rows[1]["id"]
    rows.append(copy.deepcopy(rows[1]))
    result = validate_traces(rows)
    assert [entry["row_index"] for entry in result.quarantine] == [4, 8]
    for entry in result.quarantine:
        assert entry["record"] == rows[1]["id"]
        assert "row 1 already has it" in entry["reason"]
        assert entry["problems"][0]["kind"] == "duplicate_id"
    assert rows[1] in result.valid
    assert result.reasons == {"duplicate_id": 2}


def test_unhashable_and_missing_ids_do_not_break_the_duplicate_check(rows):
    rows[0]["id"], rows[1]["id"] = ["x"], ["x"]
    del rows[2]["id"]
    result = validate_traces(rows)
    assert [(e["row_index"], e["record"]) for e in result.quarantine] == [(0, 0), (1, 1), (2, 2)]
    assert result.reasons == {"missing_field": 1, "wrong_type": 2}


def test_rows_that_are_not_objects_are_quarantined(rows):
    result = validate_traces([rows[0], "a line of text", [1, 2]])
    assert [(e["row_index"], e["field"]) for e in result.quarantine] == [(1, "row"), (2, "row")]
    assert result.reasons == {"not_an_object": 2}
    assert result.valid == [rows[0]]


def test_quarantine_entries_are_json(rows):
    rows[0]["answer"] = 1.5
    entry = validate_traces(rows).quarantine[0]
    assert set(entry) == {"record", "row_index", "field", "value", "reason", "problems", "row"}
    assert json.loads(json.dumps(entry)) == entry


def test_no_rows_is_not_a_pass():
    result = validate_traces([])
    assert (result.total, result.valid_fraction) == (0, 0.0)
    assert valid_fraction_verdict(0, 0, 0.9) == (False, "0 of 0 rows valid (0.0%) < floor 90%")


def test_verdict_names_the_counts():
    assert valid_fraction_verdict(12, 40, 0.9) == (False, "12 of 40 rows valid (30.0%) < floor 90%")
    assert valid_fraction_verdict(36, 40, 0.9) == (True, "36 of 40 rows valid (90.0%) >= floor 90%")
    assert valid_fraction_verdict(37, 40, 0.925)[1].endswith("floor 92.5%")
    with pytest.raises(ValueError, match="between 0 and 1"):
        valid_fraction_verdict(1, 2, 90)


def test_raw_rows_survive_parquet_exactly(rows):
    rows[0]["answer"] = 42
    rows[1]["question"] = ["a", {"b": None}]
    del rows[2]["meta"]
    rows[3]["extra"] = {"nested": [1.5, "ü"]}
    rows[4]["split"] = None
    data = raw_rows_parquet(rows)
    assert raw_rows_from_parquet(data) == rows

    table = pq.read_table(pa.BufferReader(data))
    assert table.column_names[:2] == ["row_index", "id"]
    assert table.column("answer").to_pylist()[:2] == [None, rows[1]["answer"]]
    assert table.column("meta").to_pylist()[2] is None
    assert raw_rows_from_parquet(raw_rows_parquet([])) == []


def test_rows_with_no_json_form_are_rejected_by_field(rows):
    rows[1]["answer"] = datetime.date(2024, 1, 2)
    kept, rejects = unencodable_rows(rows)
    assert kept == rows[:1] + rows[2:]
    (reject,) = rejects
    assert (reject["record"], reject["field"]) == (rows[1]["id"], "answer")
    assert "date" in reject["reason"]
    json.dumps(reject)


def test_record_bytes_round_trip_keeps_every_key():
    records = [{"id": "a", "meta": {"x": 1}}, {"id": "b", "extra": "only here \u2028 too"}]
    assert records_from_parquet_bytes(parquet_bytes(records)) == [
        {"id": "a", "meta": {"x": 1}, "extra": None},
        {"id": "b", "meta": None, "extra": "only here \u2028 too"},
    ]
    assert records_from_jsonl_bytes(jsonl_bytes(records)) == records
    assert records_from_parquet_bytes(parquet_bytes([])) == []
    assert jsonl_bytes([]) == b""
