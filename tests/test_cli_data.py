"""`srl data generate | import | steps`, run through the `data` command group's parser."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from srl_platform.cli_data import add_data_commands
from srl_platform.steps import parse_steps
from srl_platform.traces import read_records, write_jsonl

FIXTURES = Path(__file__).parent / "fixtures"


def srl(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="srl")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *argv])
    return args.handler(args)


def test_generate_prints_counts_per_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "traces.jsonl"
    assert srl("generate", "--n", "40", "--seed", "0", "--out", str(out)) == 0
    records = read_records(out)
    assert len(records) == 40
    printed = capsys.readouterr().out
    counts = {s: sum(r["split"] == s for r in records) for s in ("train", "validation", "test")}
    assert f"train={counts['train']} validation={counts['validation']} test={counts['test']}" in printed
    again = tmp_path / "again.jsonl"
    srl("generate", "--n", "40", "--seed", "0", "--out", str(again))
    assert again.read_bytes() == out.read_bytes()


def test_import_gsm8k_writes_traces_and_quarantine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gsm8k.jsonl"
    assert srl("import", str(FIXTURES / "gsm8k_sample.jsonl"), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "imported=4 rejected=5" in printed and "format=gsm8k" in printed
    quarantine = tmp_path / "gsm8k.quarantine.jsonl"
    assert f"quarantine: 5 records → {quarantine}" in printed
    assert len(read_records(out)) == 4
    assert [q["record"] for q in read_records(quarantine)] == [f"gsm8k-{n}" for n in range(5, 10)]


def test_import_s1k_to_parquet_with_explicit_quarantine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, quarantine = tmp_path / "s1k.parquet", tmp_path / "q" / "rejects.jsonl"
    code = srl("import", str(FIXTURES / "s1k_sample.jsonl"), "--format", "s1k", "--out", str(out),
               "--quarantine", str(quarantine))
    assert code == 0
    assert "imported=3 rejected=4" in capsys.readouterr().out
    assert [t["meta"]["family"] for t in read_records(out)] == ["s1k"] * 3
    assert len(read_records(quarantine)) == 4


def test_import_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_jsonl([{"question": "q", "answer": "no final line"}], tmp_path / "bad.jsonl")
    assert srl("import", str(bad), "--format", "gsm8k", "--out", str(tmp_path / "o.jsonl")) == 1
    unknown = write_jsonl([{"prompt": "q"}], tmp_path / "unknown.jsonl")
    assert srl("import", str(unknown), "--out", str(tmp_path / "o.jsonl")) == 2
    assert "cannot tell the format from columns ['prompt']" in capsys.readouterr().err
    assert srl("steps", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "s.jsonl")) == 2


def test_main_cli_runs_the_data_commands(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    done = subprocess.run([sys.executable, "-m", "srl_platform.cli", "data", "generate", "--n", "5",
                           "--out", str(out)], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert "generated 5 arithmetic traces" in done.stdout and len(read_records(out)) == 5


def test_steps_decomposes_one_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    traces = tmp_path / "traces.jsonl"
    srl("generate", "--n", "30", "--seed", "1", "--out", str(traces))
    out = tmp_path / "steps.jsonl"
    capsys.readouterr()
    assert srl("steps", str(traces), "--out", str(out), "--split", "train", "--include-next-title") == 0
    instances = read_records(out)
    train = [t for t in read_records(traces) if t["split"] == "train"]
    expected = sum(len(parse_steps(t["solution"])) for t in train)
    printed = capsys.readouterr().out
    assert f"trajectories={len(train)} instances={expected} quarantined=0" in printed
    assert "quarantine: none written" in printed and not (tmp_path / "steps.quarantine.jsonl").exists()
    assert len(instances) == expected and all(i["split"] == "train" and i["next_title"] for i in instances)


def test_steps_quarantines_bad_traces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = {"id": "ok", "question": "q?", "solution": "1. **A**: 1 + 1 = 2. The answer is 2.",
            "answer": "2", "source": "test", "split": "train", "meta": {}}
    rows = [
        good,
        {**good, "id": "gap", "solution": "1. **A**: a\n3. **C**: c"},
        {**good, "id": "bad", "split": "x"},
    ]
    traces = write_jsonl(rows, tmp_path / "t.jsonl")
    out = tmp_path / "steps.jsonl"
    assert srl("steps", str(traces), "--out", str(out)) == 0
    assert "trajectories=1 instances=1 quarantined=2" in capsys.readouterr().out
    quarantined = read_records(tmp_path / "steps.quarantine.jsonl")
    assert {(q["record"], q["field"]) for q in quarantined} == {("gap", "solution"), ("bad", "split")}
    assert all(q["reason"] for q in quarantined)
