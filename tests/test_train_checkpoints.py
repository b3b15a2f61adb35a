"""`srl train` checkpointing: SIGTERM save + distinct exit code, exact resume, wall-clock interval,
atomic saves, the SageMaker container contract, and refusal to resume a different plan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import REPO, read_metrics, run_train, train_command
from srl_platform.train import EXIT_PREEMPTED, _drop_rows_after
from srl_platform.trainer import STAGING_DIR, STATE_FILE, complete_checkpoints, latest_checkpoint

FAST = ["--num-generations", "2", "--prompts-per-step", "1", "--max-completion-length", "8"]


def _args(model: Path, data: Path, out: Path, ckpt: Path, *extra: str) -> list[str]:
    return ["--stage", "srl", "--base-model", str(model), "--data", str(data),
            "--output-dir", str(out), "--checkpoint-dir", str(ckpt), *FAST, *extra]


def test_sigterm_saves_exits_75_and_resume_redoes_no_step(tiny_model_dir, arithmetic_traces, tmp_path):
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    args = _args(tiny_model_dir, arithmetic_traces, out, ckpt, "--max-steps", "12")
    proc = subprocess.Popen(train_command(*args), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and any(r["step"] >= 2 for r in read_metrics(metrics))):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "training never reached step 2"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=300)

    assert proc.returncode == EXIT_PREEMPTED, log
    saved = latest_checkpoint(ckpt)
    assert saved is not None, log
    stopped_at = int(saved.name.split("-")[1])
    assert 2 <= stopped_at < 12
    assert f"checkpoint saved at step {stopped_at}" in log
    assert not (out / "adapter_model.safetensors").exists()  # not finished: no final adapter
    first_run_steps = [r["step"] for r in read_metrics(metrics) if "loss" in r]
    assert first_run_steps == list(range(1, stopped_at + 1))

    resumed = run_train(*args)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming from {saved}" in resumed.stdout
    rows = [r for r in read_metrics(metrics) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 13))  # every step once: none re-done, none lost
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["global_step"] == 12 and summary["resumed_from"] == str(saved)
    # The linear schedule spans the planned 12 steps across both runs: lr(step) = lr0 * (1 - (s-1)/12).
    for row in rows:
        assert row["learning_rate"] == pytest.approx(1e-4 * (1 - (row["step"] - 1) / 12), rel=1e-6)
    assert (out / "adapter_model.safetensors").is_file()


def test_sagemaker_contract_interval_checkpoints_and_rotation(tiny_model_dir, arithmetic_traces,
                                                              tmp_path):
    channel, model_dir, output_data = tmp_path / "train", tmp_path / "model", tmp_path / "output"
    channel.mkdir()
    (channel / "traces.jsonl").write_bytes(arithmetic_traces.read_bytes())
    ckpt = tmp_path / "ckpt"
    env = {"SM_CHANNEL_TRAIN": str(channel), "SM_MODEL_DIR": str(model_dir),
           "SM_OUTPUT_DATA_DIR": str(output_data)}

    result = run_train("--stage", "srl", "--base-model", str(tiny_model_dir), "--checkpoint-dir",
                       str(ckpt), "--max-steps", "4", "--checkpoint-interval-minutes", "0", *FAST,
                       env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "decomposed" in result.stdout  # traces given to SRL are split into step instances
    assert (model_dir / "adapter_model.safetensors").is_file()
    assert (model_dir / "adapter_config.json").is_file()
    assert not list(model_dir.glob("*.bin"))  # no pickles next to the adapter
    assert (output_data / "metrics.jsonl").is_file()
    assert (output_data / "training_summary.json").is_file()
    # Interval 0 saves after every step; only the newest two complete checkpoints are kept.
    assert [p.name for p in complete_checkpoints(ckpt)] == ["checkpoint-3", "checkpoint-4"]
    assert not list((ckpt / STAGING_DIR).glob("checkpoint-*"))


def test_default_interval_saves_only_at_the_end(tiny_model_dir, arithmetic_traces, tmp_path):
    ckpt = tmp_path / "ckpt"
    result = run_train(*_args(tiny_model_dir, arithmetic_traces, tmp_path / "out", ckpt,
                              "--max-steps", "3"))
    assert result.returncode == 0, result.stderr
    assert [p.name for p in complete_checkpoints(ckpt)] == ["checkpoint-3"]

    # Running the finished command again resumes at the end and trains nothing more.
    again = run_train(*_args(tiny_model_dir, arithmetic_traces, tmp_path / "out", ckpt,
                             "--max-steps", "3"))
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stdout
    assert "nothing to train" in again.stdout
    assert "step 1/3" not in again.stdout and "step 4/3" not in again.stdout
    assert [r["step"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if "loss" in r] \
        == [1, 2, 3]


def test_resume_with_a_different_plan_is_refused(tiny_model_dir, arithmetic_traces, tmp_path):
    ckpt = tmp_path / "ckpt"
    first = run_train(*_args(tiny_model_dir, arithmetic_traces, tmp_path / "out", ckpt,
                             "--max-steps", "2"))
    assert first.returncode == 0, first.stderr

    second = run_train(*_args(tiny_model_dir, arithmetic_traces, tmp_path / "out", ckpt,
                              "--max-steps", "5"))

    assert second.returncode == 2
    assert "max_steps: checkpoint 2 vs now 5" in second.stderr


def test_incomplete_checkpoints_are_never_resumed(tmp_path):
    good = tmp_path / "checkpoint-4"
    good.mkdir()
    (good / STATE_FILE).write_text("{}")
    (tmp_path / "checkpoint-6").mkdir()  # no state file: a save that never finished
    (tmp_path / STAGING_DIR / "checkpoint-8").mkdir(parents=True)  # killed mid-write
    assert latest_checkpoint(tmp_path) == good


def test_a_resume_forgets_the_metrics_rows_trained_after_its_checkpoint(tmp_path):
    """A SIGKILL between checkpoints leaves rows of steps the resume trains again (and maybe a row
    torn mid-write): they go, so the curve has each optimizer step once."""
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": step, "loss": 0.0, "reward": 0.5} for step in range(1, 6)]
    metrics.write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"step": 6, "lo')
    _drop_rows_after(metrics, 3)
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3]


def test_bad_input_names_the_record_and_field(tiny_model_dir, tmp_path):
    data = tmp_path / "steps.jsonl"
    data.write_text(json.dumps({"id": "p/step1", "question": "2+2?", "target": "  ",
                                "split": "train"}) + "\n")
    result = run_train(*_args(tiny_model_dir, data, tmp_path / "out", tmp_path / "ckpt"))
    assert result.returncode == 2
    assert "record 'p/step1' field 'target'" in result.stderr


def test_missing_base_model_says_how_to_get_it(tmp_path, arithmetic_traces):
    env = {"SRL_HOME": str(tmp_path / "empty-home")}
    result = run_train("--stage", "srl", "--data", str(arithmetic_traces), "--output-dir",
                       str(tmp_path / "o"), "--checkpoint-dir", str(tmp_path / "c"), env=env)
    assert result.returncode == 2
    assert "srl models pull smollm2-135m-instruct" in result.stderr


def test_no_data_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SM_CHANNEL_TRAIN"}
    result = subprocess.run(train_command("--stage", "rlvr", "--output-dir", str(tmp_path)),
                            capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 2
    assert "SM_CHANNEL_TRAIN" in result.stderr


def test_rlvr_reads_gsm8k_directly_and_quarantines_bad_rows(tiny_model_dir, tmp_path):
    fixture = REPO / "tests" / "fixtures" / "gsm8k_sample.jsonl"
    out = tmp_path / "out"
    result = run_train("--stage", "rlvr", "--base-model", str(tiny_model_dir), "--data",
                       str(fixture), "--output-dir", str(out), "--checkpoint-dir",
                       str(tmp_path / "ckpt"), "--max-steps", "1", *FAST)
    assert result.returncode == 0, result.stdout + result.stderr
    quarantine = [json.loads(line) for line in (out / "train.quarantine.jsonl").read_text().splitlines()]
    assert len(quarantine) == 5
    assert all(row["reason"] and row["field"] for row in quarantine)
    assert "5 rejected rows" in result.stdout
