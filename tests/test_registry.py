"""Model registry: one behavioural suite over the local SQLite registry and SageMaker Model Registry
(a moto server on loopback, real HTTP), plus what each does under concurrent registration."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timezone

import boto3
import pytest

from srl_platform.registry import (
    APPROVED,
    PENDING,
    REGISTRY_ACTOR,
    REJECTED,
    DecisionFinalError,
    LocalModelRegistry,
    SageMakerModelRegistry,
    UnknownVersionError,
)
from srl_platform.storage import LocalArtifactStore, S3ArtifactStore

QUALITY = {"student_score": "0.61", "teacher_score": "0.74", "train_cost_usd": "1.25", "base_model": "smollm2"}


@pytest.fixture(scope="module")
def sagemaker_endpoint(moto_endpoint):
    return moto_endpoint


def _sagemaker_registry(endpoint: str) -> SageMakerModelRegistry:
    client = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    # moto's backend is shared by the whole process: a fresh prefix gives each test its own groups.
    return SageMakerModelRegistry(client, group_prefix=f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["local", "sagemaker"])
def registry(request, tmp_path):
    if request.param == "local":
        return LocalModelRegistry(tmp_path / "registry" / "models.sqlite")
    return _sagemaker_registry(request.getfixturevalue("sagemaker_endpoint"))


def _moment(iso: str) -> datetime:
    moment = datetime.fromisoformat(iso)
    assert moment.utcoffset().total_seconds() == 0, f"{iso} is not UTC"
    return moment


def _register_n(registry, tier: str, n: int) -> list:
    return [registry.register(tier, f"s3://artefacts/adapters/{tier}/v{i}", f"hash{i}", {"round": str(i)})
            for i in range(1, n + 1)]


def test_register_is_pending_and_idempotent_per_tier(registry):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    first = registry.register("gold", "s3://artefacts/adapters/gold/srl", "abc123", QUALITY)
    assert (first.tier, first.version, first.status) == ("gold", 1, PENDING)
    assert (first.adapter_uri, first.data_version, first.metadata) == ("s3://artefacts/adapters/gold/srl",
                                                                       "abc123", QUALITY)
    assert first.decided_by is first.decision_reason is first.decided_at is None
    assert _moment(first.created_at) >= before
    assert (first.arn is None) == isinstance(registry, LocalModelRegistry)

    again = registry.register("gold", "s3://elsewhere/copy", "abc123", {"note": "retried run"})
    assert again == first, "the same adapter content registers once; the first URI and metadata stand"
    assert registry.versions("gold") == [first]
    assert registry.register("silver", "s3://artefacts/adapters/silver/srl", "abc123").version == 1
    assert registry.register("gold", "s3://artefacts/adapters/gold/srl2", "def456").version == 2


def test_versions_are_numbered_in_registration_order(registry):
    registered = _register_n(registry, "bronze", 3)
    listed = registry.versions("bronze")
    assert [m.version for m in listed] == [1, 2, 3]
    assert [m.data_version for m in listed] == ["hash1", "hash2", "hash3"]
    assert [m.metadata for m in listed] == [{"round": "1"}, {"round": "2"}, {"round": "3"}]
    assert listed == registered
    assert registry.get("bronze", 2) == registered[1]
    assert registry.versions("gold") == [] and registry.latest_approved("gold") is None


def test_decisions_record_who_why_and_when(registry):
    one, two = _register_n(registry, "gold", 2)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    approved = registry.approve("gold", 1, by="quality-gate", reason="student 0.61 >= floor 0.5 (n=64)")
    rejected = registry.reject("gold", 2, by="alice@example.com", reason="regressed on GSM8K: 0.41 < 0.61")
    after = datetime.now(timezone.utc)

    assert (approved.status, approved.decided_by) == (APPROVED, "quality-gate")
    assert approved.decision_reason == "student 0.61 >= floor 0.5 (n=64)"
    assert before <= _moment(approved.decided_at) <= after
    assert (rejected.status, rejected.decided_by) == (REJECTED, "alice@example.com")
    assert rejected.decision_reason == "regressed on GSM8K: 0.41 < 0.61"
    # A decision changes the status and the decider, nothing the registration recorded.
    assert (approved.metadata, approved.adapter_uri, approved.created_at) == (one.metadata, one.adapter_uri,
                                                                             one.created_at)
    assert registry.get("gold", 1) == approved and registry.get("gold", 2) == rejected
    assert registry.versions("gold") == [approved, rejected]


def test_decisions_are_final_and_repeating_one_is_idempotent(registry):
    _register_n(registry, "gold", 2)
    approved = registry.approve("gold", 1, by="quality-gate", reason="passed")
    assert registry.approve("gold", 1, by="someone-else", reason="retried gate") == approved
    with pytest.raises(DecisionFinalError, match=r"gold version 1 .*already Approved by quality-gate.*final"):
        registry.reject("gold", 1, by="alice", reason="changed my mind")
    registry.reject("gold", 2, by="quality-gate", reason="below floor")
    with pytest.raises(DecisionFinalError, match=r"gold version 2 .*already Rejected.*below floor.*final"):
        registry.approve("gold", 2, by="alice", reason="override")
    assert registry.get("gold", 1).status == APPROVED and registry.get("gold", 2).status == REJECTED


def test_latest_approved_skips_pending_and_rejected(registry):
    assert registry.latest_approved("silver") is None
    _register_n(registry, "silver", 4)
    registry.approve("silver", 1, by="gate", reason="passed")
    registry.reject("silver", 2, by="gate", reason="below floor")
    assert registry.latest_approved("silver").version == 1
    registry.approve("silver", 3, by="gate", reason="passed")
    latest = registry.latest_approved("silver")
    assert (latest.version, latest.data_version, latest.status) == (3, "hash3", APPROVED)
    registry.reject("silver", 4, by="gate", reason="retrain regressed")
    assert registry.latest_approved("silver") == registry.get("silver", 3), "falls back to the last approved"


def test_errors_name_what_was_wrong(registry):
    with pytest.raises(ValueError, match="unknown tier 'platinum'.*gold, silver, bronze"):
        registry.register("platinum", "s3://a/b", "h1")
    with pytest.raises(UnknownVersionError, match=r"'gold' has no model version 1 \(none registered yet\)"):
        registry.get("gold", 1)
    _register_n(registry, "gold", 2)
    with pytest.raises(UnknownVersionError, match=r"'gold' has no model version 9 \(versions 1\.\.2\)"):
        registry.approve("gold", 9, by="gate", reason="passed")
    with pytest.raises(ValueError, match="version=0 must be an integer >= 1"):
        registry.get("gold", 0)
    with pytest.raises(ValueError, match=r"metadata\['student_score'\] = 0.61 is a float.*'0.61'"):
        registry.register("gold", "s3://a/b", "h3", {"student_score": 0.61})
    with pytest.raises(ValueError, match="metadata key 'data_version' is written by the registry"):
        registry.register("gold", "s3://a/b", "h3", {"data_version": "x"})
    with pytest.raises(ValueError, match=r"metadata\['note'\] = 'good, mostly' must be 1-256 letters"):
        registry.register("gold", "s3://a/b", "h3", {"note": "good, mostly"})
    with pytest.raises(ValueError, match="data_version='' must be a non-empty string"):
        registry.register("gold", "s3://a/b", "")
    with pytest.raises(ValueError, match="gold version 1: by='' must name the decider"):
        registry.approve("gold", 1, by="", reason="passed")
    with pytest.raises(ValueError, match="gold version 1: the reason must be non-empty"):
        registry.reject("gold", 1, by="gate", reason=" ")
    assert [m.version for m in registry.versions("gold")] == [1, 2] and registry.get("gold", 1).status == PENDING


def _register_all(path: str, data_versions: list[str], start_at: float) -> dict[str, int]:
    """One worker: register every data version (in its own order) through its own registry object."""
    registry = LocalModelRegistry(path)
    time.sleep(max(0.0, start_at - time.time()))
    return {dv: registry.register("gold", f"file:///adapters/{dv}", dv).version for dv in data_versions}


def test_local_concurrent_registrations_get_one_version_each(tmp_path):
    path = str(tmp_path / "models.sqlite")
    start = threading.Barrier(12)

    def same(_):
        start.wait()
        return LocalModelRegistry(path).register("gold", "file:///adapters/same", "same-hash").version

    with ThreadPoolExecutor(12) as pool:
        assert set(pool.map(same, range(12))) == {1}

    # Three processes and three threads race over 60 data versions, each in its own shuffled order,
    # all starting together once the processes are up: with a plain deferred BEGIN instead of
    # BEGIN IMMEDIATE this fails ("database is locked") on every run tried.
    data_versions = [f"h{i:02d}" for i in range(60)]
    orders = [random.Random(seed).sample(data_versions, len(data_versions)) for seed in range(6)]
    start_at = time.time() + 2.0
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as processes, \
            ThreadPoolExecutor(3) as threads:
        futures = [processes.submit(_register_all, path, order, start_at) for order in orders[:3]]
        futures += [threads.submit(_register_all, path, order, start_at) for order in orders[3:]]
        results = [future.result() for future in futures]
    assert all(result == results[0] for result in results), "every worker saw the same version per data version"
    assert sorted(results[0].values()) == list(range(2, 62)), "distinct consecutive versions, no gaps"
    listed = LocalModelRegistry(path).versions("gold")
    assert [m.version for m in listed] == list(range(1, 62))
    assert {m.data_version: m.version for m in listed[1:]} == results[0]


def test_sagemaker_concurrent_registration_converges_on_one_version(sagemaker_endpoint):
    """SageMaker has no conditional create: racing registrations may each create a package. The
    documented outcome: every caller gets the lowest version carrying the data version, and any other
    package with it is rejected by the registry as a duplicate, so it can never be served."""
    registry = _sagemaker_registry(sagemaker_endpoint)
    registry.register("gold", "s3://artefacts/adapters/gold/first", "first-hash")
    start = threading.Barrier(6)

    def race(_):
        start.wait()
        return registry.register("gold", "s3://artefacts/adapters/gold/srl", "raced-hash", QUALITY)

    with ThreadPoolExecutor(6) as pool:
        returned = list(pool.map(race, range(6)))
    assert {model.version for model in returned} == {2}
    carrying = [m for m in registry.versions("gold") if m.data_version == "raced-hash"]
    winner, duplicates = carrying[0], carrying[1:]
    assert winner.version == 2 and winner.status == PENDING
    for duplicate in duplicates:
        assert (duplicate.status, duplicate.decided_by) == (REJECTED, REGISTRY_ACTOR)
        assert duplicate.decision_reason.startswith("duplicate of version 2 (data version raced-hash)")
    registry.approve("gold", 2, by="gate", reason="passed")
    assert registry.latest_approved("gold").version == 2
    assert registry.register("gold", "s3://x", "raced-hash").version == 2


def test_sagemaker_groups_and_packages_as_aws_sees_them(sagemaker_endpoint):
    registry = _sagemaker_registry(sagemaker_endpoint)
    model = registry.register("gold", "s3://artefacts/adapters/gold/srl", "abc123", QUALITY)
    registry.approve("gold", 1, by="quality-gate", reason="passed")
    client, group = registry.client, registry.group_name("gold")
    assert group == f"{registry.group_prefix}-gold"
    created = client.describe_model_package_group(ModelPackageGroupName=group)["CreationTime"]
    package = client.describe_model_package(ModelPackageName=model.arn)
    assert package["ModelApprovalStatus"] == APPROVED and package["ApprovalDescription"] == "passed"
    assert package["ModelPackageDescription"] == "gold adapter, data version abc123"
    assert package["CustomerMetadataProperties"] == {
        **QUALITY, "adapter_uri": "s3://artefacts/adapters/gold/srl", "data_version": "abc123",
        "decided_by": "quality-gate", "decided_at": registry.get("gold", 1).decided_at}
    # A second registry object (another process) finds the existing group instead of replacing it.
    other = SageMakerModelRegistry(client, registry.group_prefix)
    assert other.register("gold", "s3://a/b", "abc123").version == 1
    assert client.describe_model_package_group(ModelPackageGroupName=group)["CreationTime"] == created
    with pytest.raises(ValueError, match="group_prefix='srl_' must be letters, digits and hyphens"):
        SageMakerModelRegistry(client, "srl_")


def test_resource_picks_the_backend(tmp_path, sagemaker_endpoint, monkeypatch):
    # Imported here: the spawned workers above import this module, and need no Dagster.
    from resources.registry import ModelRegistryResource

    store = LocalArtifactStore(tmp_path / "store")
    local = ModelRegistryResource().client(store)
    assert isinstance(local, LocalModelRegistry) and local.path == store.path("registry/models.sqlite")
    local.register("gold", store.uri("adapters/gold/srl"), "abc123")
    assert store.exists("registry/models.sqlite")

    with pytest.raises(ValueError, match="needs a local store root, not 's3://artefacts/srl'.*backend='sagemaker'"):
        ModelRegistryResource().client(S3ArtifactStore("s3://artefacts/srl", client=None))

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    resource = ModelRegistryResource(backend="sagemaker", group_prefix=f"r{uuid.uuid4().hex[:12]}",
                                     region_name="us-east-1", endpoint_url=sagemaker_endpoint)
    remote = resource.client(S3ArtifactStore("s3://artefacts/srl", client=None))
    assert isinstance(remote, SageMakerModelRegistry)
    assert remote.register("silver", "s3://artefacts/srl/adapters/silver/srl", "abc123").arn.startswith(
        "arn:aws:sagemaker:us-east-1:")
