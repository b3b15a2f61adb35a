"""`generated_traces` on the embedded default (SmolLM2 proposing, solving and judging), and how its
output and the weakness profile flow through the store into `expert_traces`."""

import json

import pytest
from dagster import DagsterInstance, materialize

from assets.data import EXPERT_TRACES_KEY, VALIDATED_TRACES_KEY, expert_traces
from assets.generation import generated_key, generated_traces
from resources.models import CollaborationModels
from resources.storage import ArtifactStore
from srl_platform.models import DEFAULT_BASE_MODEL
from srl_platform.storage import LocalArtifactStore
from srl_platform.tasks.arithmetic import generate_traces
from srl_platform.traces import parquet_bytes, records_from_jsonl_bytes, records_from_parquet_bytes
from srl_platform.validation import raw_rows_from_parquet

DAY = "2026-11-22"
SMOLLM2 = f"transformers:{DEFAULT_BASE_MODEL}"


def _metadata(result, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


@pytest.mark.slow
def test_smollm2_in_all_three_roles(tmp_path, base_model_dir) -> None:
    """Proposer and judge SmolLM2, solver the bronze tier, which has no adapter yet: its base
    model (SmolLM2) stands in. Few proposals verify with a 135M model; whatever happens, every
    proposal is either a trace or a reject with a reason, and the counts are metadata."""
    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    models = CollaborationModels(proposer=SMOLLM2, solver="tier:bronze", judge=SMOLLM2)
    result = materialize([generated_traces], partition_key=DAY, instance=DagsterInstance.ephemeral(),
                         resources={"store": store, "models": models},
                         run_config={"ops": {"generated_traces": {"config": {"proposals": 4,
                                                                            "solver_attempts": 1}}}})
    meta = _metadata(result, "generated_traces")
    assert meta["proposals"] == 4 and meta["accepted"] + meta["rejected"] == 4
    assert sum(row.data["count"] for row in meta["reasons"].records) == meta["rejected"]
    for role in ("proposer", "solver", "judge"):
        assert meta[f"{role}_model"].startswith(f"{SMOLLM2}@")
    assert "proposer" in meta["usage"] and meta["input_tokens"] > 0 and meta["output_tokens"] > 0

    client = LocalArtifactStore(tmp_path / "artifacts")
    report = json.loads(client.get_bytes(generated_key("arithmetic", DAY, "report.json")))
    assert report["usage"]["by_role"]["proposer"]["calls"] == 4
    assert report["weakness_profile"]["error_rates"] == {}  # no evaluation yet: uniform targets
    traces = records_from_parquet_bytes(client.get_bytes(generated_key("arithmetic", DAY, "parquet")))
    rejects = records_from_jsonl_bytes(client.get_bytes(generated_key("arithmetic", DAY, "rejects.jsonl")))
    assert len(traces) + len(rejects) == 4
    for row in rejects:
        assert row["stage"] in {"propose", "verify", "judge"} and row["reason"]
        assert row["lineage"]["proposer"] == meta["proposer_model"]
    for trace in traces:
        assert trace["meta"]["lineage"]["solver"] == meta["solver_model"]


def _seed_store(root, traces_by_day: dict[str, list[dict]]) -> LocalArtifactStore:
    client = LocalArtifactStore(root)
    for day, traces in traces_by_day.items():
        client.put_bytes(generated_key("arithmetic", day, "parquet"), parquet_bytes(traces))
    return client


def _generated(question: str, day: str) -> dict:
    return {"id": f"arithmetic-gen-{question.split()[0].lower()}", "question": question,
            "solution": "1. **Add**: 3 + 4 = 7. The answer is 7.", "answer": "7",
            "source": "generated:arithmetic:collaboration", "split": "train",
            "meta": {"family": "arithmetic", "lineage": {"run": day}}}


def test_expert_traces_adds_every_generated_day_once(tmp_path) -> None:
    first = _generated("Ava has 3 pens and gets 4 more. How many pens does she have?", "a")
    second = _generated("Liam has 3 cars and buys 4 more. How many cars does he have?", "b")
    again = {**first, "meta": {**first["meta"], "lineage": {"run": "c"}}}  # proposed again later
    client = _seed_store(tmp_path, {"2026-11-20": [first], "2026-11-21": [second, again]})
    result = materialize([expert_traces], instance=DagsterInstance.ephemeral(),
                         resources={"store": ArtifactStore(root=str(tmp_path))},
                         run_config={"ops": {"expert_traces": {"config": {"n": 10}}}})
    meta = _metadata(result, "expert_traces")
    assert (meta["from_source"], meta["from_generated"], meta["rows"]) == (10, 2, 12)
    rows = raw_rows_from_parquet(client.get_bytes(EXPERT_TRACES_KEY))
    generated = [r for r in rows if r["source"].startswith("generated:arithmetic:collaboration")]
    assert [r["question"] for r in generated] == [first["question"], second["question"]]
    assert generated[0]["meta"]["lineage"]["run"] == "a"  # the earliest day's row is kept

    result = materialize([expert_traces], instance=DagsterInstance.ephemeral(),
                         resources={"store": ArtifactStore(root=str(tmp_path))},
                         run_config={"ops": {"expert_traces": {"config": {
                             "n": 10, "include_generated": False}}}})
    assert _metadata(result, "expert_traces")["from_generated"] == 0


def test_weakness_profile_comes_from_the_latest_evaluation(tmp_path) -> None:
    """The bronze evaluation missed every farm problem: the generation's report says so, and most
    targets are farm problems. The proposer is a model that never answers in the format, so the
    run is fast and every proposal is rejected as unparseable, with its text kept."""
    traces = generate_traces(120, seed=0)
    client = LocalArtifactStore(tmp_path)
    client.put_bytes(VALIDATED_TRACES_KEY, parquet_bytes(traces))
    results = [{"id": t["id"], "correct": t["meta"]["template"] != "farm"} for t in traces]
    client.put_bytes("reports/bronze/tier_eval.json", json.dumps({"adapter": {"results": results}}).encode())

    models = CollaborationModels(proposer="openai:http://127.0.0.1:9/v1?model=none&max_retries=0",
                                 solver=SMOLLM2)
    result = materialize([generated_traces], partition_key=DAY, instance=DagsterInstance.ephemeral(),
                         resources={"store": ArtifactStore(root=str(tmp_path)), "models": models},
                         run_config={"ops": {"generated_traces": {"config": {"proposals": 40}}}})
    meta = _metadata(result, "generated_traces")
    assert meta["rejected"] == 40 and meta["accepted"] == 0
    assert {row.data["reason"]: row.data["count"] for row in meta["reasons"].records} == {"client_error": 40}
    report = json.loads(client.get_bytes(generated_key("arithmetic", DAY, "report.json")))
    assert report["weakness_profile"]["error_rates"]["template"]["farm"] == 1.0
    assert report["weakness_profile"]["source"].endswith("reports/bronze/tier_eval.json")
    farm = report["stats"]["targets"]["template"]["farm"]
    assert farm >= 24, f"only {farm} of 40 targets are farm problems (≈ 79% expected)"
    assert "| template | farm |" in meta["aim"]
