"""The data assets through `dagster.materialize` on an ephemeral instance, local store and moto S3."""

from pathlib import Path

import boto3
import pytest
from dagster import DagsterInstance, materialize
from dagster_aws.s3 import S3Resource

from support import AWS_TEST_CREDENTIALS
from assets.data import (
    EXPERT_TRACES_KEY,
    EXPERT_TRACES_REJECTS_KEY,
    RLVR_PROBLEMS_KEY,
    SRL_STEPS_KEY,
    SRL_STEPS_QUARANTINE_KEY,
    VALIDATED_TRACES_KEY,
    VALIDATED_TRACES_QUARANTINE_KEY,
    expert_traces,
    rlvr_problems,
    srl_steps,
    valid_fraction_above_floor,
    validated_traces,
)
from resources.storage import ArtifactStore
from srl_platform.tasks.arithmetic import generate_traces
from srl_platform.traces import (
    load_traces,
    records_from_jsonl_bytes,
    records_from_parquet_bytes,
    write_parquet,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MALFORMED = FIXTURES / "malformed_traces.jsonl"
ALL_DATA = [expert_traces, validated_traces, valid_fraction_above_floor, srl_steps, rlvr_problems]
DATA_ASSETS = ("expert_traces", "validated_traces", "srl_steps", "rlvr_problems")
# Row index in the fixture (after the non-JSON last line is set aside) → the reason kind expected.
MALFORMED_ROWS = {6: "missing_field", 7: "wrong_type", 8: "wrong_type", 9: "unparseable_steps",
                  10: "duplicate_id", 11: "empty_string", 12: "bad_split"}


def run_data(store: ArtifactStore, *, floor: float | None = None, raise_on_error: bool = True,
             selection=ALL_DATA, **expert_config):
    ops = {"expert_traces": {"config": expert_config}}
    if floor is not None:
        ops["validated_traces_valid_fraction_above_floor"] = {"config": {"floor": floor}}
    return materialize(selection, resources={"store": store}, instance=DagsterInstance.ephemeral(),
                       run_config={"ops": ops}, raise_on_error=raise_on_error)


def metadata(result, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def data_versions(result) -> dict[str, str]:
    return {asset: result.asset_materializations_for_node(asset)[0].tags["dagster/data_version"]
            for asset in DATA_ASSETS}


def the_check(result):
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "valid_fraction_above_floor"
    return evaluation


def test_generated_traces_flow_through_every_data_asset(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    result = run_data(store, n=40, seed=1)
    assert result.success
    assert the_check(result).passed
    assert the_check(result).description.startswith("40 of 40 rows valid (100.0%) >= floor 90%")

    client = store.client()
    traces = generate_traces(40, seed=1)
    expert = metadata(result, "expert_traces")
    assert (expert["rows"], expert["rejected"]) == (40, 0)
    assert expert["uri"] == client.uri(EXPERT_TRACES_KEY)
    assert "| id | split | question | answer |" in expert["preview"]

    validated = metadata(result, "validated_traces")
    assert (validated["total"], validated["valid"], validated["quarantined"]) == (40, 40, 0)
    assert validated["valid_fraction"] == 1.0
    assert records_from_parquet_bytes(client.get_bytes(VALIDATED_TRACES_KEY)) == traces
    assert client.get_bytes(VALIDATED_TRACES_QUARANTINE_KEY) == b""

    train = [t for t in traces if t["split"] == "train"]
    steps = records_from_parquet_bytes(client.get_bytes(SRL_STEPS_KEY))
    assert len(steps) == sum(t["meta"]["num_ops"] for t in train)
    srl = metadata(result, "srl_steps")
    assert (srl["trajectories"], srl["instances"], srl["quarantined"]) == (len(train), len(steps), 0)
    assert srl["other_splits"] == 40 - len(train)
    assert client.exists(SRL_STEPS_QUARANTINE_KEY)

    problems = records_from_parquet_bytes(client.get_bytes(RLVR_PROBLEMS_KEY))
    assert [set(p) for p in problems] == [{"id", "question", "answer", "split", "meta"}] * 40
    rlvr = metadata(result, "rlvr_problems")
    assert rlvr["problems_train"] == len(train)
    assert rlvr["problems_train"] + rlvr["problems_validation"] + rlvr["problems_test"] == 40


def test_same_config_gives_the_same_data_versions(tmp_path):
    first = data_versions(run_data(ArtifactStore(root=str(tmp_path / "a")), n=30, seed=2))
    again = data_versions(run_data(ArtifactStore(root=str(tmp_path / "b")), n=30, seed=2))
    assert first == again
    other = run_data(ArtifactStore(root=str(tmp_path / "c")), n=30, seed=3,
                     selection=[expert_traces])
    assert other.asset_materializations_for_node("expert_traces")[0].tags["dagster/data_version"] \
        != first["expert_traces"]


def test_malformed_rows_are_quarantined_exactly_with_reasons(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    result = run_data(store, source=str(MALFORMED), floor=0.4)
    assert result.success
    assert the_check(result).passed

    client = store.client()
    quarantine = records_from_jsonl_bytes(client.get_bytes(VALIDATED_TRACES_QUARANTINE_KEY))
    assert {e["row_index"]: e["problems"][0]["kind"] for e in quarantine} == MALFORMED_ROWS
    assert all(len(e["problems"]) == 1 for e in quarantine)
    by_index = {e["row_index"]: e for e in quarantine}
    assert by_index[6]["record"] == "bad-missing-answer" and by_index[6]["field"] == "answer"
    assert by_index[7]["reason"] == "field 'answer' must be a string, got integer 5"
    assert by_index[8]["field"] == "question"
    assert "text before step 1" in by_index[9]["reason"]
    assert by_index[10]["record"] == "t2" and "row 1 already has it" in by_index[10]["reason"]
    assert by_index[12]["value"] == "'dev'"

    valid = records_from_parquet_bytes(client.get_bytes(VALIDATED_TRACES_KEY))
    assert [t["id"] for t in valid] == ["t1", "t2", "t3", "t4", "t5", "t6"]
    (reject,) = records_from_jsonl_bytes(client.get_bytes(EXPERT_TRACES_REJECTS_KEY))
    assert (reject["record"], reject["row"]) == (14, "this line is not JSON")

    meta = metadata(result, "validated_traces")
    assert (meta["total"], meta["valid"], meta["quarantined"]) == (13, 6, 7)
    assert (meta["reader_rejected"], meta["source_rows"]) == (1, 14)
    assert meta["valid_fraction"] == pytest.approx(6 / 14)
    reasons = {record.data["reason"]: record.data["count"] for record in meta["reasons"].records}
    assert reasons == {"bad_split": 1, "duplicate_id": 1, "empty_string": 1, "missing_field": 1,
                       "unparseable_steps": 1, "wrong_type": 2}
    assert metadata(result, "srl_steps")["trajectories"] == 4
    assert metadata(result, "rlvr_problems")["problems"] == 6


def test_mostly_bad_file_fails_the_blocking_check(tmp_path):
    result = run_data(ArtifactStore(root=str(tmp_path)), source=str(MALFORMED), raise_on_error=False)
    assert not result.success
    check = the_check(result)
    assert check.passed is False
    assert check.description == ("6 of 14 rows valid (42.9%) < floor 90% "
                                 "(7 quarantined, 1 rejected by the reader)")
    assert check.metadata["floor"].value == 0.9
    # Blocking: the step fails and nothing downstream is built from the bad data.
    assert "validated_traces_valid_fraction_above_floor" in [
        event.step_key for event in result.get_step_failure_events()]
    assert result.asset_materializations_for_node("srl_steps") == []
    assert result.asset_materializations_for_node("rlvr_problems") == []


def test_gsm8k_rows_the_reader_rejects_count_against_the_floor(tmp_path):
    source = FIXTURES / "gsm8k_sample.jsonl"
    traces, reader_rejects = load_traces(source, "gsm8k")
    assert traces and reader_rejects  # the sample holds both kinds of row
    store = ArtifactStore(root=str(tmp_path))
    result = run_data(store, source=str(source), raise_on_error=False,
                      selection=[expert_traces, validated_traces, valid_fraction_above_floor])

    expert = metadata(result, "expert_traces")
    assert (expert["rows"], expert["rejected"]) == (len(traces), len(reader_rejects))
    assert records_from_jsonl_bytes(store.client().get_bytes(EXPERT_TRACES_REJECTS_KEY)) == reader_rejects
    validated = metadata(result, "validated_traces")
    total = len(traces) + len(reader_rejects)
    assert (validated["valid"], validated["source_rows"]) == (len(traces), total)
    assert the_check(result).passed is False
    assert the_check(result).description.startswith(f"{len(traces)} of {total} rows valid")


def test_canonical_parquet_source(tmp_path):
    source = write_parquet(generate_traces(12, seed=4), tmp_path / "traces.parquet")
    store = ArtifactStore(root=str(tmp_path / "store"))
    result = run_data(store, source=str(source), selection=[expert_traces, validated_traces])
    assert metadata(result, "validated_traces")["valid"] == 12
    assert records_from_parquet_bytes(store.client().get_bytes(VALIDATED_TRACES_KEY)) == \
        generate_traces(12, seed=4)


def test_a_missing_source_fails_without_retrying(tmp_path):
    result = run_data(ArtifactStore(root=str(tmp_path)), source=str(tmp_path / "nope.jsonl"),
                      raise_on_error=False, selection=[expert_traces])
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "nope.jsonl" in failure.event_specific_data.error.message
    assert "no such file" in failure.event_specific_data.error.message
    assert not [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]


@pytest.fixture()
def moto_s3(moto_endpoint):
    client = boto3.client("s3", endpoint_url=moto_endpoint, **AWS_TEST_CREDENTIALS)
    client.create_bucket(Bucket="srl")
    return client, S3Resource(endpoint_url=moto_endpoint, **AWS_TEST_CREDENTIALS)


def test_s3_source_and_store_behave_like_local(moto_s3, tmp_path):
    client, s3 = moto_s3
    client.upload_file(str(MALFORMED), "srl", "incoming/traces.jsonl")
    store = ArtifactStore(root="s3://srl/artifacts", s3=s3)
    result = run_data(store, source="s3://srl/incoming/traces.jsonl", floor=0.4)
    assert result.success

    keys = {obj["Key"] for obj in client.list_objects_v2(Bucket="srl", Prefix="artifacts/")["Contents"]}
    assert keys == {f"artifacts/{key}" for key in (
        EXPERT_TRACES_KEY, EXPERT_TRACES_REJECTS_KEY, VALIDATED_TRACES_KEY,
        VALIDATED_TRACES_QUARANTINE_KEY, SRL_STEPS_KEY, SRL_STEPS_QUARANTINE_KEY, RLVR_PROBLEMS_KEY)}
    assert metadata(result, "validated_traces")["uri"] == "s3://srl/artifacts/datasets/validated_traces.parquet"
    quarantine = client.get_object(Bucket="srl", Key=f"artifacts/{VALIDATED_TRACES_QUARANTINE_KEY}")
    entries = records_from_jsonl_bytes(quarantine["Body"].read())
    assert {entry["row_index"] for entry in entries} == set(MALFORMED_ROWS)

    local = run_data(ArtifactStore(root=str(tmp_path)), source=str(MALFORMED), floor=0.4)
    assert data_versions(local) == data_versions(result)
