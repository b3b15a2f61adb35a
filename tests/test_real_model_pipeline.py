"""The method end to end on the real SmolLM2-135M-Instruct through the `srl` CLI, at a tiny budget:
generate → steps → SRL train → RLVR train from the SRL adapter → eval with the adapter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from support import REPO, read_metrics

pytestmark = pytest.mark.slow


def srl(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "srl_platform.cli", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_srl_then_rlvr_then_eval_on_smollm2(base_model_dir, tmp_path):
    traces, steps = tmp_path / "traces.jsonl", tmp_path / "steps.jsonl"
    srl("data", "generate", "--n", "40", "--seed", "3", "--out", str(traces))
    out = srl("data", "steps", str(traces), "--out", str(steps), "--split", "train").stdout
    assert "instances=" in out

    budget = ["--max-steps", "2", "--prompts-per-step", "1", "--num-generations", "4"]
    srl("train", "--stage", "srl", "--tier", "gold", "--base-model", "smollm2-135m-instruct",
        "--data", str(steps), "--output-dir", str(tmp_path / "srl"), "--checkpoint-dir",
        str(tmp_path / "ck-srl"), "--max-completion-length", "24", *budget)
    srl_summary = json.loads((tmp_path / "srl" / "training_summary.json").read_text())
    assert srl_summary["global_step"] == 2
    rewards = [r for r in read_metrics(tmp_path / "srl" / "metrics.jsonl") if "reward" in r]
    assert len(rewards) == 2 and all(-1.0 <= r["reward"] <= 1.0 for r in rewards)
    assert all("dynamic_sampling/drop_rate" in r for r in rewards)

    srl("train", "--stage", "rlvr", "--tier", "gold", "--base-model", "smollm2-135m-instruct",
        "--data", str(traces), "--output-dir", str(tmp_path / "rlvr"), "--checkpoint-dir",
        str(tmp_path / "ck-rlvr"), "--init-from", str(tmp_path / "srl"),
        "--max-completion-length", "32", "--max-refill-rounds", "0", *budget)
    rlvr_summary = json.loads((tmp_path / "rlvr" / "training_summary.json").read_text())
    assert rlvr_summary["init_from"] == str(tmp_path / "srl")
    # RLVR continued the SRL adapter (same LoRA tensors), it did not start a fresh one.
    srl_weights = load_file(tmp_path / "srl" / "adapter_model.safetensors")
    rlvr_weights = load_file(tmp_path / "rlvr" / "adapter_model.safetensors")
    assert srl_weights.keys() == rlvr_weights.keys()

    report_path = tmp_path / "report.json"
    srl("eval", "--model", "smollm2-135m-instruct", "--adapter", str(tmp_path / "rlvr"),
        "--data", str(traces), "--split", "test", "--out", str(report_path),
        "--max-problems", "2", "--max-step-instances", "2")
    report = json.loads(report_path.read_text())
    assert report["problems"] == 2 and report["step_instances"] == 2
    assert 0.0 <= report["accuracy"] <= 1.0
    assert -1.0 <= report["mean_step_reward"] <= 1.0
    assert report["mean_solve_tokens"] > 0
