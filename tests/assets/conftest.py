"""Fixtures for the training and evaluation assets: a store seeded with tiny datasets, a temp
Dagster instance, and run config that trains the tiny model for a couple of steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance

from srl_platform.steps import decompose
from srl_platform.storage import LocalArtifactStore
from srl_platform.tasks.arithmetic import generate_traces
from srl_platform.traces import parquet_bytes

# Rollouts short and few: mechanics, not learning (the slow tests train the real model).
TINY_BUDGET = {"max_steps": 2, "prompts_per_step": 1, "num_generations": 2,
               "max_completion_length": 8}
TINY_EVAL = {"max_problems": 3, "max_step_instances": 4, "solve_max_new_tokens": 12,
             "step_max_new_tokens": 8}


def seed_datasets(root: Path) -> LocalArtifactStore:
    """Write the three datasets the training and evaluation assets read, in the shapes the data
    assets produce them (validated traces, train-split step instances, problems of every split)."""
    store = LocalArtifactStore(root)
    traces = generate_traces(60, seed=0)
    assert {t["split"] for t in traces} >= {"train", "test"}
    instances, _, _ = decompose([t for t in traces if t["split"] == "train"])
    problems = [{k: t[k] for k in ("id", "question", "answer", "split", "meta")} for t in traces]
    store.put_bytes("datasets/validated_traces.parquet", parquet_bytes(traces))
    store.put_bytes("datasets/srl_steps.parquet", parquet_bytes(instances))
    store.put_bytes("datasets/rlvr_problems.parquet", parquet_bytes(problems))
    return store


@pytest.fixture(scope="module")
def seeded_store_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    seed_datasets(root)
    return root


@pytest.fixture(scope="module")
def dagster_instance(tmp_path_factory):
    instance = DagsterInstance.local_temp(str(tmp_path_factory.mktemp("dagster-home")))
    yield instance
    instance.dispose()


@pytest.fixture(scope="module")
def tiny_training(tiny_model_dir) -> dict:
    """`TrainingRunConfig` for the tiny model."""
    return {"base_model": str(tiny_model_dir), **TINY_BUDGET}


@pytest.fixture
def tiny_eval() -> dict:
    """`EvalConfig` for a handful of short generations."""
    return dict(TINY_EVAL)


@pytest.fixture
def seeded_store():
    """`seeded_store(root)`: a fresh store root with the datasets written."""
    return seed_datasets
