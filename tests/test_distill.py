"""`srl train --stage distill`: the path chosen by tokenizer (sequence-level when they differ),
unusable teacher traces quarantined with the reason, and SIGTERM/resume exactly as the GRPO stages."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from support import REPO, read_metrics, run_train, train_command
from srl_platform.distill import choose_method, usable_traces
from srl_platform.errors import InputError
from srl_platform.train import EXIT_PREEMPTED


def _traces(path: Path, n: int = 8) -> Path:
    rows = [{"id": f"p{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i),
             "completion": f"1. **Add**: {i} + {i} = {2 * i}.\nThe answer is {2 * i}.", "verified": i % 4 != 3}
            for i in range(n)]
    rows[1]["completion"] = "   "  # a teacher that wrote nothing
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _args(student: Path, teacher: Path, data: Path, tmp: Path, *extra: str) -> list[str]:
    return ["--stage", "distill", "--tier", "gold", "--base-model", str(student), "--teacher-base-model",
            str(teacher), "--data", str(data), "--output-dir", str(tmp / "out"), "--checkpoint-dir",
            str(tmp / "ckpt"), "--prompts-per-step", "1", "--max-completion-length", "8", *extra]


def test_choose_method_by_tokenizer(tiny_model_dir, other_tokenizer_model_dir):
    same, other = AutoTokenizer.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(other_tokenizer_model_dir)
    assert choose_method("auto", same, same)[0] == "on_policy"
    method, why = choose_method("auto", same, other)
    assert method == "sequence" and "differ" in why and "400 tokens" in why
    with pytest.raises(InputError, match="needs teacher and student to share a tokenizer"):
        choose_method("on_policy", same, other)


def test_usable_traces_quarantine_with_reasons():
    rows = [{"id": "a", "question": "q", "completion": "c", "verified": True},
            {"id": "b", "question": "q", "completion": "", "verified": True},
            {"id": "c", "question": "q", "completion": "c", "verified": False},
            {"id": "d", "question": None, "completion": "c", "verified": True}]
    kept, out = usable_traces(rows, "sequence", verified_only=True)
    assert [r["id"] for r in kept] == ["a"]
    assert [r["quarantine_reason"] for r in out] == [
        "row 'b' field 'completion' is ''; expected non-empty text",
        "row 'c' field 'verified' is False: not a verified teacher trace",
        "row 'd' field 'question' is None; expected non-empty text"]
    kept, out = usable_traces(rows, "on_policy", verified_only=True)  # the student writes its own
    assert [r["id"] for r in kept] == ["a", "b", "c"] and len(out) == 1


def test_a_student_with_another_tokenizer_is_distilled_from_verified_traces(
        tiny_model_dir, other_tokenizer_model_dir, tmp_path):
    data = _traces(tmp_path / "traces.jsonl")
    result = run_train(*_args(other_tokenizer_model_dir, tiny_model_dir, data, tmp_path, "--max-steps", "2"))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["method"] == "sequence" and "tokenizers differ" in summary["method_reason"]
    # 8 rows: p1 has no completion, p3 and p7 did not verify.
    assert (summary["examples"], summary["quarantined"], summary["global_step"]) == (5, 3, 2)
    quarantined = [json.loads(line) for line in (tmp_path / "out" / "train.quarantine.jsonl").read_text().splitlines()]
    assert [r["id"] for r in quarantined] == ["p1", "p3", "p7"]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_no_usable_trace_is_a_clear_error(tiny_model_dir, other_tokenizer_model_dir, tmp_path):
    data = tmp_path / "traces.jsonl"
    data.write_text(json.dumps({"id": "x", "question": "q", "completion": "c", "verified": False}) + "\n")
    result = run_train(*_args(other_tokenizer_model_dir, tiny_model_dir, data, tmp_path))
    assert result.returncode == 2
    assert "none of 1 teacher traces is usable by sequence distillation" in result.stderr
    assert "row 'x' field 'verified' is False" in result.stderr


def test_sigterm_saves_and_the_resume_redoes_no_step(tiny_model_dir, tmp_path):
    data = _traces(tmp_path / "traces.jsonl")
    args = _args(tiny_model_dir, tiny_model_dir, data, tmp_path, "--max-steps", "10")
    proc = subprocess.Popen(train_command(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    metrics = tmp_path / "out" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and any(r["step"] >= 2 for r in read_metrics(metrics))):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, log
    assert "distillation method: on_policy" in log

    resumed = run_train(*args)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from" in resumed.stdout
    steps = [r["step"] for r in read_metrics(metrics) if "loss" in r]
    assert steps == list(range(1, 11))
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["global_step"] == 10 and summary["resumed_from"]
