"""Artefact store: the local and S3 clients behave the same (S3 against a moto server on loopback)."""

from __future__ import annotations


import boto3
import pytest

from srl_platform.storage import LocalArtifactStore, S3ArtifactStore, get_dir, put_dir


@pytest.fixture(scope="module")
def s3_endpoint(moto_endpoint):
    return moto_endpoint


def _s3_store(endpoint: str) -> S3ArtifactStore:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="artefacts")
    return S3ArtifactStore("s3://artefacts/srl/nightly", client)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, s3_endpoint):
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "store")
    return _s3_store(s3_endpoint)


def test_round_trip_listing_and_directories(store, tmp_path):
    uri = store.put_bytes("datasets/a.jsonl", b'{"x": 1}\n')
    assert uri.endswith("datasets/a.jsonl")
    assert store.get_bytes("datasets/a.jsonl") == b'{"x": 1}\n'
    assert store.exists("datasets/a.jsonl") and not store.exists("datasets/a.json")

    adapter = tmp_path / "adapter"
    (adapter / "sub").mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"\x00\x01")
    (adapter / "sub" / "metrics.jsonl").write_text("{}\n")
    put_dir(store, "adapters/gold/srl", adapter)
    assert store.list("adapters/gold/srl") == [
        "adapters/gold/srl/adapter_model.safetensors", "adapters/gold/srl/sub/metrics.jsonl"]
    back = get_dir(store, "adapters/gold/srl", tmp_path / "back")
    assert (back / "adapter_model.safetensors").read_bytes() == b"\x00\x01"
    assert (back / "sub" / "metrics.jsonl").read_text() == "{}\n"


def test_s3_uris_carry_bucket_and_prefix(s3_endpoint):
    store = _s3_store(s3_endpoint)
    assert store.put_bytes("reports/x.json", b"{}") == "s3://artefacts/srl/nightly/reports/x.json"


@pytest.mark.parametrize("key", ["/abs/path", "../escape", "a/../../b", ""])
def test_keys_must_stay_under_the_root(tmp_path, key):
    with pytest.raises(ValueError, match="relative path"):
        LocalArtifactStore(tmp_path).put_bytes(key, b"")
