"""`served_adapters` through `dagster.materialize`: the registry's approved versions, via
`serving_manifest`, deployed to the vLLM stand-in (a real HTTP process) with per-tier outcomes, the
`serves_the_manifest` check, and a clear failure when the endpoint is down."""

from __future__ import annotations

import json

import pytest
from dagster import DagsterInstance, materialize
from serving_support import fake_adapter, running_stub
from support_loopback import free_port

from assets.promotion import serving_manifest
from assets.serving import served_adapters
from resources.registry import ModelRegistryResource
from resources.serving import ServingResource
from resources.storage import ArtifactStore
from srl_platform.registry import LocalModelRegistry
from srl_platform.storage import LocalArtifactStore, content_hash, put_dir
from srl_platform.tiers import ADAPTER_WEIGHTS


@pytest.fixture
def world(tmp_path):
    store = LocalArtifactStore(tmp_path / "artifacts")
    registry = LocalModelRegistry.in_store(store)
    (tmp_path / "dagster-home").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster-home"))

    def approve(tier: str, name: str, r: int = 8) -> int:
        directory = fake_adapter(tmp_path / "built" / tier / name, r=r, seed=sum(map(ord, tier + name)) + r)
        uri = put_dir(store, f"adapters/{tier}/distilled/{name}", directory)
        version = registry.register(tier, uri, content_hash((directory / ADAPTER_WEIGHTS).read_bytes())).version
        registry.approve(tier, version, by="test", reason="passes the gate")
        return version

    yield {"store": store, "approve": approve, "instance": instance, "cache": tmp_path / "serving-cache"}
    instance.dispose()


def run(world, url: str, **kwargs):
    resources = {"store": ArtifactStore(root=world["store"].root), "registry": ModelRegistryResource(),
                 "serving": ServingResource(kind="vllm", url=url, max_lora_rank=16,
                                            adapter_dir=str(world["cache"]))}
    result = materialize([serving_manifest, served_adapters], instance=world["instance"], resources=resources,
                         **kwargs)
    if not result.success:
        return result, None, None
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["served_adapters"]]
    [check] = result.get_asset_check_evaluations()
    return result, event.materialization.metadata, check


def test_approved_versions_are_deployed_unchanged_versions_left_alone_and_failures_reported(world):
    with running_stub() as url:
        from srl_platform.serving_backends import VLLMServing

        server = VLLMServing(url)
        world["approve"]("gold", "a")
        _, meta, check = run(world, url)
        gold_dir = world["cache"] / "gold"
        [v1_dir] = list(gold_dir.iterdir())
        assert server.loaded() == {"gold": str(v1_dir.resolve())}
        assert "| gold | deployed | v1 |" in meta["tiers"].value and "| silver | skipped |" in meta["tiers"].value
        assert meta["deployed"].value == 1 and meta["failed_tiers"].value == "none" and check.passed

        _, meta, check = run(world, url)
        assert "| gold | unchanged | v1 |" in meta["tiers"].value and meta["deployed"].value == 0 and check.passed

        world["approve"]("gold", "b")
        world["approve"]("silver", "a")
        _, meta, check = run(world, url)
        assert "| gold | deployed | v2 |" in meta["tiers"].value and "| silver | deployed | v1 |" in meta["tiers"].value
        v2_dir = server.loaded()["gold"]
        assert v2_dir != str(v1_dir.resolve()) and server.complete("gold", [{"role": "user", "content": "hi"}]).text \
            == f"[gold] answered by {v2_dir}"

        world["approve"]("gold", "wide", r=64)
        _, meta, check = run(world, url)
        assert "| gold | failed | v3 |" in meta["tiers"].value and meta["failed_tiers"].value == "gold"
        assert not check.passed and "LoRA rank 64" in check.description and "keeps serving" in check.description
        assert server.loaded()["gold"] == v2_dir  # the previous version still serves
        assert meta["gold_serving"].value == v2_dir


def test_an_unreachable_endpoint_fails_the_asset_clearly(world):
    world["approve"]("gold", "a")
    url = f"http://127.0.0.1:{free_port()}"
    result, _, _ = run(world, url, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
                 and e.step_key == "served_adapters"]
    message = failure.step_failure_data.error.message
    assert f"the vllm serving endpoint {url} is unreachable" in message and "srl serve" in message


def test_the_deploy_sensor_requests_a_deploy_when_the_endpoint_lags_the_manifest(world):
    from dagster import RunRequest, SkipReason, build_sensor_context

    from sensors.serving import serving_deploy_sensor

    def tick(url: str):
        resources = {"store": ArtifactStore(root=world["store"].root),
                     "serving": ServingResource(kind="vllm", url=url, adapter_dir=str(world["cache"]))}
        with build_sensor_context(instance=world["instance"], resources=resources) as context:
            return serving_deploy_sensor(context)

    down = f"http://127.0.0.1:{free_port()}"
    assert "does not exist yet" in tick(down).skip_message
    world["approve"]("gold", "a")
    materialize([serving_manifest], instance=world["instance"],
                resources={"store": ArtifactStore(root=world["store"].root), "registry": ModelRegistryResource()})
    skipped = tick(down)
    assert isinstance(skipped, SkipReason) and "does not answer" in skipped.skip_message

    with running_stub() as url:
        first = tick(url)
        assert isinstance(first, RunRequest) and first.tags["srl/deploy"] == "gold=v1"
        assert tick(url).run_key == first.run_key  # the same mismatch is the same request

        _, meta, check = run(world, url)  # what the requested run does
        assert check.passed
        [v1_dir] = (world["cache"] / "gold").iterdir()
        assert json.loads((v1_dir / "srl_adapter.json").read_text())["version"] == "v1"
        assert "serves every tier's approved version" in tick(url).skip_message

        world["approve"]("gold", "b")  # a promotion
        materialize([serving_manifest], instance=world["instance"],
                    resources={"store": ArtifactStore(root=world["store"].root), "registry": ModelRegistryResource()})
        second = tick(url)
        assert isinstance(second, RunRequest) and second.tags["srl/deploy"] == "gold=v2"
        assert second.run_key != first.run_key
