"""`srl_checkpoint`, `rlvr_checkpoint` and `tier_eval` for the gold partition through
`dagster.materialize` on a temp instance: a local store seeded with tiny datasets, the local
training backend (a real `python -m srl_platform.train` subprocess under Dagster Pipes) and the tiny
model, trained for two steps."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from dagster import materialize

from assets.evaluation import tier_eval
from assets.training import rlvr_checkpoint, srl_checkpoint
from resources.monitoring import MonitoringResource
from resources.storage import ArtifactStore
from resources.training import LocalTrainingBackend
from srl_platform.monitoring import read_metrics
from srl_platform.storage import LocalArtifactStore, content_hash
from srl_platform.trainer import latest_checkpoint
from srl_platform.traces import parquet_bytes

ASSETS = [srl_checkpoint, rlvr_checkpoint, tier_eval]
TRAINING_FIELDS = {
    "adapter_uri", "global_step", "max_steps", "reward_curve", "reward_first", "reward_last",
    "reward_mean", "dynamic_sampling_drop_rate", "wall_seconds", "train_seconds", "resumed_from",
    "base_model", "init_from", "dataset_uri", "training_job", "checkpoint_dir", "metrics_streamed",
}
VERSION = re.compile(r"[0-9a-f]{16}")


def run(asset, store_root: Path, work_root: Path, instance, config: dict, **kwargs):
    return materialize(
        ASSETS, selection=[asset], partition_key="gold", instance=instance,
        resources={"store": ArtifactStore(root=str(store_root)), "monitoring": MonitoringResource(),
                   "training_backend": LocalTrainingBackend(work_root=str(work_root))},
        run_config={"ops": {asset.key.to_user_string(): {"config": config}}}, **kwargs)


def metadata(result, asset) -> dict:
    (event,) = result.asset_materializations_for_node(asset.key.to_user_string())
    return {key: value.value for key, value in event.metadata.items()}


def data_version(result, asset) -> str:
    (event,) = result.asset_materializations_for_node(asset.key.to_user_string())
    return event.tags["dagster/data_version"]


def local_path(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(uri[len("file://"):])


@pytest.fixture(scope="module")
def work_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def gold_srl(seeded_store_root, work_root, dagster_instance, tiny_training):
    return run(srl_checkpoint, seeded_store_root, work_root, dagster_instance, tiny_training)


@pytest.fixture(scope="module")
def gold_rlvr(gold_srl, seeded_store_root, work_root, dagster_instance, tiny_training):
    return run(rlvr_checkpoint, seeded_store_root, work_root, dagster_instance, tiny_training)


def test_srl_checkpoint_stores_a_safetensors_adapter_with_its_training_record(gold_srl):
    meta = metadata(gold_srl, srl_checkpoint)

    assert TRAINING_FIELDS <= meta.keys()
    adapter = local_path(meta["adapter_uri"])
    assert adapter.as_posix().endswith("adapters/gold/srl")
    weights = adapter / "adapter_model.safetensors"
    assert weights.is_file() and (adapter / "adapter_config.json").is_file()
    assert not [p for p in adapter.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]  # no pickles
    summary = json.loads((adapter / "training_summary.json").read_text())
    assert [json.loads(line)["step"] for line in (adapter / "metrics.jsonl").read_text().splitlines()
            if "reward" in line] == [1, 2]
    # The DataVersion is the content hash of the adapter weights, in the store's hash format.
    version = data_version(gold_srl, srl_checkpoint)
    assert VERSION.fullmatch(version) and version == content_hash(weights.read_bytes())
    assert meta["global_step"] == meta["max_steps"] == summary["global_step"] == 2
    assert meta["resumed_from"] == "none (fresh run)"
    assert meta["init_from"] == "none (fresh LoRA)"
    assert meta["reward_first"] == summary["reward_first"]
    assert meta["reward_curve"].splitlines()[0] == "| step | reward | reward std | drop rate |"
    assert len(meta["reward_curve"].splitlines()) == 2 + 2  # header, rule, one row per step
    assert 0.0 <= meta["dynamic_sampling_drop_rate"] <= 1.0
    assert meta["training_job"].startswith("srl-checkpoint-gold-")


def test_a_finished_run_records_its_reward_and_estimated_cost_in_the_metrics_sink(gold_srl, seeded_store_root):
    meta = metadata(gold_srl, srl_checkpoint)
    rows = [r for r in read_metrics(LocalArtifactStore(seeded_store_root)) if r["dimensions"]["asset"] == "srl_checkpoint"]
    assert {r["name"] for r in rows} >= {"TrainingReward", "TrainingCostEstimate", "TrainingDropRate"}
    assert all(r["dimensions"].keys() == {"tier", "asset", "job"} and r["dimensions"]["tier"] == "gold" for r in rows)
    assert any(r["name"] == "TrainingReward" and r["value"] == pytest.approx(meta["reward_last"]) for r in rows)
    # gold trains on one ml.g6.12xlarge: the launch's wall time at its list price
    hourly = MonitoringResource().training_price_per_hour["ml.g6.12xlarge"]
    assert any(r["name"] == "TrainingCostEstimate" and r["value"] == pytest.approx(hourly * meta["wall_seconds"] / 3600,
                                                                                   rel=1e-3) for r in rows)


def test_training_metrics_stream_through_pipes_into_the_run(gold_srl, dagster_instance):
    meta = metadata(gold_srl, srl_checkpoint)
    assert meta["metrics_streamed"] == 2  # one Pipes custom message per optimizer step

    messages = [entry.user_message for entry in dagster_instance.all_logs(gold_srl.run_id)]
    assert any(m.startswith("step 1/2 reward=") for m in messages), messages
    assert any(m.startswith("step 2/2 reward=") for m in messages), messages
    assert any("external process successfully opened dagster pipes" in m for m in messages)


def test_rematerializing_unchanged_inputs_trains_nothing_and_keeps_the_data_version(
        gold_srl, seeded_store_root, work_root, dagster_instance, tiny_training):
    again = run(srl_checkpoint, seeded_store_root, work_root, dagster_instance, tiny_training)

    meta = metadata(again, srl_checkpoint)
    assert meta["training_job"] == metadata(gold_srl, srl_checkpoint)["training_job"]
    assert meta["resumed_from"].endswith("checkpoints/checkpoint-2")
    assert meta["metrics_streamed"] == 0 and meta["global_step"] == 2
    assert data_version(again, srl_checkpoint) == data_version(gold_srl, srl_checkpoint)


def test_rlvr_checkpoint_continues_the_tiers_srl_adapter(gold_srl, gold_rlvr, seeded_store_root):
    srl_meta, meta = metadata(gold_srl, srl_checkpoint), metadata(gold_rlvr, rlvr_checkpoint)

    assert TRAINING_FIELDS <= meta.keys()
    assert meta["init_from"] == srl_meta["adapter_uri"]
    adapter = local_path(meta["adapter_uri"])
    assert adapter.as_posix().endswith("adapters/gold/rlvr")
    summary = json.loads((adapter / "training_summary.json").read_text())
    assert summary["stage"] == "rlvr" and summary["init_from"].endswith("inputs/init_from")
    assert meta["global_step"] == 2 and meta["metrics_streamed"] == 2
    assert data_version(gold_rlvr, rlvr_checkpoint) == content_hash(
        (adapter / "adapter_model.safetensors").read_bytes())
    # The tiny random model never answers right: every 0/1-reward group is all-equal and dropped.
    assert meta["dynamic_sampling_drop_rate"] == 1.0


def test_tier_eval_puts_the_base_model_beside_the_adapter_and_evaluates_it_once(
        gold_rlvr, seeded_store_root, work_root, dagster_instance, tiny_eval):
    first = run(tier_eval, seeded_store_root, work_root, dagster_instance, tiny_eval)
    again = run(tier_eval, seeded_store_root, work_root, dagster_instance, tiny_eval)

    meta = metadata(first, tier_eval)
    for name in ("accuracy", "mean_step_reward", "format_violation_rate", "mean_solve_tokens",
                 "mean_step_tokens"):
        assert {name, f"base_{name}", f"delta_{name}"} <= meta.keys()
    assert meta["problems"] == 3 and meta["step_instances"] == 4
    assert "| metric | adapter | base | delta |" in meta["comparison"]
    report = json.loads(local_path(meta["report_uri"]).read_text())
    assert local_path(meta["report_uri"]).as_posix().endswith("reports/gold/tier_eval.json")
    assert report["eval_data"]["split"] == "test"
    assert report["adapter"]["adapter"] == metadata(gold_rlvr, rlvr_checkpoint)["adapter_uri"]
    assert report["adapter_data_version"] == data_version(gold_rlvr, rlvr_checkpoint)
    assert report["deltas"]["accuracy"] == pytest.approx(
        report["adapter"]["accuracy"] - report["base"]["accuracy"])
    # The base model's numbers are computed once per (base model, eval data, settings).
    assert meta["base_cache"].startswith("miss: ")
    assert metadata(again, tier_eval)["base_cache"] == "hit: " + meta["base_cache"][len("miss: "):]
    assert data_version(again, tier_eval) == data_version(first, tier_eval)
    assert VERSION.fullmatch(data_version(first, tier_eval))


def test_a_missing_dataset_fails_naming_the_key_and_the_asset_to_run(tmp_path, dagster_instance,
                                                                     tiny_training):
    result = run(srl_checkpoint, tmp_path / "empty-store", tmp_path / "work", dagster_instance,
                 tiny_training, raise_on_error=False)

    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.step_failure_data.user_failure_data.description
    assert "datasets/srl_steps.parquet does not exist" in message
    assert "materialize `srl_steps` first" in message


def test_a_trainer_input_error_fails_with_the_trainers_own_message(
        tmp_path, dagster_instance, tiny_training):
    store = LocalArtifactStore(tmp_path / "artifacts")
    blank = {"id": "t1/step1", "trace_id": "t1", "step_index": 1, "num_steps": 1, "question": "1+1?",
             "previous_steps": [], "next_title": None, "target": " ", "answer": "2", "split": "train"}
    store.put_bytes("datasets/srl_steps.parquet", parquet_bytes([blank]))

    result = run(srl_checkpoint, store.root, tmp_path / "work", dagster_instance, tiny_training,
                 raise_on_error=False)

    (failure,) = result.get_step_failure_events()
    message = failure.step_failure_data.user_failure_data.description
    assert "rejected its input (exit 2)" in message
    assert "record 't1/step1' field 'target'" in message
    assert result.retry_attempts_for_node("srl_checkpoint") == 0  # bad input is not retried


def test_a_preempted_run_fails_saying_how_to_resume_and_a_rerun_resumes(
        tmp_path, dagster_instance, tiny_training, seeded_store):
    store_root, work_root = tmp_path / "artifacts", tmp_path / "work"
    seeded_store(store_root)
    config = {**tiny_training, "max_steps": 4}
    signalled: list[int] = []
    watcher = threading.Thread(target=_sigterm_after_first_step, args=(work_root, signalled),
                               daemon=True)
    watcher.start()

    stopped = run(srl_checkpoint, store_root, work_root, dagster_instance, config,
                  raise_on_error=False)

    watcher.join(timeout=5)
    assert signalled, "the trainer never reached step 1"
    assert not stopped.success
    (failure,) = stopped.get_step_failure_events()
    message = failure.step_failure_data.user_failure_data.description
    assert "was preempted (SIGTERM, exit 75)" in message
    assert "Re-run this partition with the same inputs and config to resume" in message
    (job,) = work_root.iterdir()
    saved = latest_checkpoint(job / "checkpoints")
    assert saved is not None and str(saved) in message
    assert not (job / "train.pid").exists()
    assert stopped.retry_attempts_for_node("srl_checkpoint") == 0

    resumed = run(srl_checkpoint, store_root, work_root, dagster_instance, config)

    meta = metadata(resumed, srl_checkpoint)
    assert meta["resumed_from"] == str(saved)
    assert meta["global_step"] == 4
    assert meta["metrics_streamed"] == 4 - int(saved.name.split("-")[1])  # only the new steps
    adapter = local_path(meta["adapter_uri"])
    steps = [json.loads(line)["step"] for line in (adapter / "metrics.jsonl").read_text().splitlines()
             if '"reward"' in line]
    assert steps == [1, 2, 3, 4]  # every step once across both launches


def _sigterm_after_first_step(work_root: Path, signalled: list[int]) -> None:
    """Send SIGTERM to the trainer once its first optimizer step is in its metrics file."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for pid_file in work_root.glob("*/train.pid"):
            metrics = pid_file.parent / "output" / "metrics.jsonl"
            if metrics.is_file() and '"reward"' in metrics.read_text():
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGTERM)
                signalled.append(pid)
                return
        time.sleep(0.05)
