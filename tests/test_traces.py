"""Canonical trace files and the GSM8K / s1K-1.1 importers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srl_platform.steps import StepParseError, decompose, parse_steps
from srl_platform.tasks.arithmetic import generate_traces
from srl_platform.traces import (
    detect_format,
    last_boxed,
    load_traces,
    parse_attempt_steps,
    read_gsm8k,
    read_records,
    read_s1k,
    validate_trace,
    write_jsonl,
    write_parquet,
    write_records,
)

FIXTURES = Path(__file__).parent / "fixtures"
GSM8K = FIXTURES / "gsm8k_sample.jsonl"
S1K = FIXTURES / "s1k_sample.jsonl"


def test_jsonl_round_trip_keeps_unicode_and_is_atomic(tmp_path: Path) -> None:
    records = [{"id": "a", "text": "12 × 8 ÷ 2 — café"}, {"id": "b", "nested": {"k": [1, 2]}}]
    path = write_jsonl(records, tmp_path / "sub" / "r.jsonl")
    assert read_records(path) == records
    assert "×" in path.read_text(encoding="utf-8")  # ensure_ascii=False
    assert [p.name for p in path.parent.iterdir()] == ["r.jsonl"]  # no temp file left behind


def test_parquet_round_trip_keeps_meta_dicts(tmp_path: Path) -> None:
    traces = generate_traces(20, seed=1)
    path = write_parquet(traces, tmp_path / "t.parquet")
    assert read_records(path) == traces
    assert write_records(traces, tmp_path / "t2.parquet").suffix == ".parquet"
    assert read_records(write_records(traces, tmp_path / "t.jsonl")) == traces


def test_unsupported_suffix_and_bad_json_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.csv"):
        read_records(tmp_path / "x.csv")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: line is not valid JSON"):
        read_records(bad)


def test_validate_trace_names_record_field_and_value() -> None:
    good = generate_traces(1, seed=0)[0]
    assert validate_trace(good, 0) == []
    bad = {**good, "split": "dev", "answer": ""}
    del bad["meta"]
    errors = validate_trace(bad, 7)
    assert len(errors) == 3
    assert any("record 7" in e and "'split' = 'dev'" in e and "train" in e for e in errors)
    assert any("'answer' = ''" in e and "non-empty string" in e for e in errors)
    assert any("'meta'" in e and "missing" in e for e in errors)
    assert "must be an object" in validate_trace(["not", "a", "dict"], 3)[0]


def test_read_gsm8k_converts_steps_and_answers() -> None:
    traces, rejects = read_gsm8k(GSM8K)
    assert [t["id"] for t in traces] == ["gsm8k-1", "gsm8k-2", "gsm8k-3", "gsm8k-4"]
    first = traces[0]
    assert first["solution"] == (
        "1. **Step 1**: Tom has 3*12 = 36 marbles.\n"
        "2. **Step 2**: After giving some away he has 36-7 = 29 marbles."
    )
    assert first["answer"] == "29" and first["split"] == "train" and first["source"] == "gsm8k"
    assert traces[1]["answer"] == "2434"  # thousands separator removed
    assert "<<" not in traces[1]["solution"]
    assert [len(parse_steps(t["solution"])) for t in traces] == [2, 2, 1, 3]
    assert all(validate_trace(t, i) == [] for i, t in enumerate(traces))


def test_read_gsm8k_rejects_say_what_was_wrong() -> None:
    _, rejects = read_gsm8k(GSM8K)
    by_record = {r["record"]: r for r in rejects}
    assert sorted(by_record) == ["gsm8k-5", "gsm8k-6", "gsm8k-7", "gsm8k-8", "gsm8k-9"]
    assert by_record["gsm8k-5"]["field"] == "answer" and "####" in by_record["gsm8k-5"]["reason"]
    assert by_record["gsm8k-6"]["field"] == "question"
    assert by_record["gsm8k-7"]["field"] == "row" and "not valid JSON" in by_record["gsm8k-7"]["reason"]
    assert "no solution steps" in by_record["gsm8k-8"]["reason"]
    assert "has no answer" in by_record["gsm8k-9"]["reason"]
    for reject in rejects:
        assert set(reject) == {"record", "field", "value", "reason", "row"}
        assert isinstance(reject["value"], str) and len(reject["value"]) <= 200
    assert by_record["gsm8k-6"]["row"]["question"] == ""


def test_boxed_answer_extraction() -> None:
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}} end") == "\\frac{1}{2}"
    assert last_boxed("\\boxed {x^{2}}") == "x^{2}"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("no box") is None


def test_parse_attempt_steps_styles() -> None:
    preamble, steps = parse_attempt_steps("Intro.\n1. **A:** one\n2. **B**\ntwo\nmore")
    assert preamble == "Intro." and steps == [("A", "one"), ("B", "two\nmore")]
    bold = parse_attempt_steps("**Step 1: Set up**\nx\n**Step 2:** y")[1]
    assert bold == [("Set up", "x"), ("Step 2", "y")]
    assert parse_attempt_steps("### Step 1: Go\nx\n### 2. Stop\ny")[1] == [("Go", "x"), ("Stop", "y")]
    with pytest.raises(StepParseError, match=r"numbered \[1, 3\]"):
        parse_attempt_steps("1. **A**: a\n3. **C**: c")
    with pytest.raises(StepParseError, match="no numbered steps"):
        parse_attempt_steps("Just prose.")


def test_read_s1k_jsonl() -> None:
    traces, rejects = read_s1k(S1K)
    assert [t["id"] for t in traces] == ["s1k-1", "s1k-2", "s1k-3"]
    first, second, third = traces
    assert first["answer"] == "1000"
    assert first["solution"] == (
        "1. **Compute the power**: $2^{10} = 1024$.\n"
        "2. **Subtract**: $1024 - 24 = 1000$.\n\nThus the answer is $\\boxed{1000}$."
    )
    assert first["meta"] == {"family": "s1k", "row": 1, "cot_type": "math", "source_type": "fixture/powers",
                             "preamble": "To find the value we work in two steps."}
    assert second["answer"] == "\\frac{1}{2}"
    assert [s.title for s in parse_steps(second["solution"])] == ["Find the common factor", "Divide"]
    # No \boxed in the solution: the whole solution is the answer.
    assert third["answer"] == "Write them as 2a and 2b; the sum 2(a+b) is even."
    assert all(validate_trace(t, i) == [] for i, t in enumerate(traces))

    by_record = {r["record"]: r for r in rejects}
    assert sorted(by_record) == ["s1k-4", "s1k-5", "s1k-6", "s1k-7"]
    assert "no numbered steps" in by_record["s1k-4"]["reason"]
    assert "[1, 3]" in by_record["s1k-5"]["reason"] and by_record["s1k-5"]["field"] == "deepseek_attempt"
    assert by_record["s1k-6"]["field"] == "deepseek_attempt" and by_record["s1k-6"]["value"] == "None"
    assert by_record["s1k-7"]["field"] == "question"


def test_read_s1k_parquet_matches_jsonl(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in S1K.read_text(encoding="utf-8").splitlines()]
    path = tmp_path / "s1k.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    from_parquet, from_jsonl = read_s1k(path), read_s1k(S1K)
    assert from_parquet[0] == from_jsonl[0]
    # Parquet fills absent columns with None, so only the rows differ.
    drop_row = [{k: v for k, v in r.items() if k != "row"} for r in from_jsonl[1]]
    assert [{k: v for k, v in r.items() if k != "row"} for r in from_parquet[1]] == drop_row


def test_s1k_outline_is_the_style_that_starts_first(tmp_path: Path) -> None:
    attempt = (
        "Plan.\n### Step 1: Cases\nTwo cases:\n\n1. **First**: a\n2. **Second**: b\n"
        "### Step 2: End\nc"
    )
    preamble, steps = parse_attempt_steps(attempt)
    assert preamble == "Plan." and [t for t, _ in steps] == ["Cases", "End"]
    assert steps[0][1] == "Two cases:\n\n1. **First**: a\n2. **Second**: b"


def test_s1k_body_that_looks_like_a_step_is_rejected_not_mangled(tmp_path: Path) -> None:
    rows = [
        {"question": "q", "solution": "\\boxed{1}", "deepseek_attempt": "### Step 1: A\nx\n2. **B**: y"},
        {"question": "q", "solution": "\\boxed{1}",
         "deepseek_attempt": "### Step 1: A\nx\n1. **Sub**: y\n### Step 2: B\nz"},
    ]
    traces, rejects = read_s1k(write_jsonl(rows, tmp_path / "s.jsonl"))
    assert traces == []
    assert "1 steps become 2 when re-read" in rejects[0]["reason"]
    assert "found 1 where 2 belongs" in rejects[1]["reason"]


def test_load_traces_detects_formats(tmp_path: Path) -> None:
    canonical = write_jsonl(generate_traces(5, seed=2), tmp_path / "c.jsonl")
    assert detect_format(GSM8K) == "gsm8k"
    assert detect_format(S1K) == "s1k"
    assert detect_format(canonical) == "canonical"
    assert load_traces(GSM8K) == read_gsm8k(GSM8K)
    assert load_traces(S1K, "s1k") == read_s1k(S1K)
    traces, rejects = load_traces(canonical)
    assert len(traces) == 5 and rejects == []
    other = write_jsonl([{"prompt": "x"}], tmp_path / "o.jsonl")
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_traces(other)
    with pytest.raises(ValueError, match="'csv'"):
        load_traces(GSM8K, "csv")  # type: ignore[arg-type]


def test_canonical_loading_rejects_invalid_and_duplicate_records(tmp_path: Path) -> None:
    good = generate_traces(2, seed=2)
    rows = [good[0], {**good[1], "split": "dev"}, good[0]]
    path = write_jsonl(rows, tmp_path / "c.jsonl")
    traces, rejects = load_traces(path, "canonical")
    assert traces == [good[0]]
    assert [(r["record"], r["field"]) for r in rejects] == [(good[1]["id"], "split"), (good[0]["id"], "id")]
    assert "duplicate id" in rejects[1]["reason"]


def test_imported_traces_decompose(tmp_path: Path) -> None:
    traces = read_gsm8k(GSM8K)[0] + read_s1k(S1K)[0]
    instances, quarantined, stats = decompose(traces)
    assert quarantined == [] and stats.trajectories == 7
    assert stats.instances == 2 + 2 + 1 + 3 + 2 + 2 + 2
