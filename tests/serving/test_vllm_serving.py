"""`VLLMServing` and `sync_manifest` against the vLLM stand-in (`vllm_stub_server.py`), a real HTTP
process on loopback: hot swap as unload then load, the rank checked before anything is unloaded,
readiness after the load, rollback to the previous adapter when a load fails, and no request dropped
while a name is between its unload and its load."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serving_support import admin_calls, fake_adapter, running_stub, stub_log
from support_loopback import free_port

from srl_platform.clients.base import GenerationParams, ModelClientError
from srl_platform.serving_backends import (
    AdapterRejected,
    ServingUnavailable,
    SwapFailed,
    VLLMServing,
    sync_manifest,
)

ASK = [{"role": "user", "content": "What is 2 + 3?"}]
GREEDY = GenerationParams(max_tokens=16, temperature=0.0)


def test_swap_is_unload_then_load_checked_for_readiness(tmp_path):
    v1, v2 = fake_adapter(tmp_path / "gold-v1", seed=1), fake_adapter(tmp_path / "gold-v2", seed=2)
    with running_stub() as url:
        serving = VLLMServing(url, max_lora_rank=16)
        first = serving.swap("gold", v1, "v1")
        assert (first.previous_dir, serving.loaded()) == (None, {"gold": str(v1)})
        assert admin_calls(url) == [("load_lora_adapter", str(v1), 200)]  # nothing to unload yet

        mark = len(stub_log(url))
        second = serving.swap("gold", v2, "v2")
        assert second.previous_dir == str(v1) and second.version == "v2"
        assert admin_calls(url, mark) == [("unload_lora_adapter", None, 200), ("load_lora_adapter", str(v2), 200)]
        # Readiness: after the load, the model list was read and a 1-token completion answered.
        log = stub_log(url)[mark:]
        after_load = log[next(i for i, e in enumerate(log) if e["path"] == "/v1/load_lora_adapter") + 1:]
        assert any(e["path"] == "/v1/models" for e in after_load)
        probes = [e for e in after_load if e["path"] == "/v1/chat/completions"]
        assert probes and probes[0]["body"]["max_tokens"] == 1 and probes[0]["status"] == 200

        answer = serving.complete("gold", ASK, GREEDY)
        assert answer.text == f"[gold] answered by {v2}"
        assert answer.system_fingerprint.startswith("gold-") and answer.output_tokens == 4
        assert serving.loaded() == {"gold": str(v2)}


def test_rank_above_max_lora_rank_is_rejected_before_anything_is_unloaded(tmp_path):
    v1, wide = fake_adapter(tmp_path / "v1", r=8), fake_adapter(tmp_path / "wide", r=32)
    with running_stub("--max-lora-rank", "16") as url:
        serving = VLLMServing(url, max_lora_rank=16)
        serving.swap("gold", v1, "v1")
        mark = len(stub_log(url))
        with pytest.raises(AdapterRejected, match=r"LoRA rank 32, above the server's max_lora_rank 16.*nothing was "
                                                  r"changed"):
            serving.swap("gold", wide, "v2")
        assert admin_calls(url, mark) == []  # no unload, no load
        assert serving.complete("gold", ASK, GREEDY).text == f"[gold] answered by {v1}"

        missing = tmp_path / "no-config"
        missing.mkdir()
        with pytest.raises(AdapterRejected, match="adapter_config.json does not exist"):
            serving.swap("gold", missing, "v3")
        assert admin_calls(url, mark) == []


@pytest.mark.parametrize("case", ["corrupt weights", "the server's own rank limit"])
def test_a_failed_load_puts_the_previous_adapter_back(tmp_path, case):
    v1 = fake_adapter(tmp_path / "v1", r=4)
    # Second case: the client is told the server takes rank 16, the server was started with 4.
    bad = fake_adapter(tmp_path / "v2", r=4 if case == "corrupt weights" else 8, corrupt=case == "corrupt weights")
    expected = "not a safetensors file" if case == "corrupt weights" else "greater than max_lora_rank 4"
    with running_stub("--max-lora-rank", "4") as url:
        serving = VLLMServing(url, max_lora_rank=16)
        serving.swap("gold", v1, "v1")
        mark = len(stub_log(url))
        with pytest.raises(SwapFailed, match=f"the previous adapter {v1} is serving gold again") as failure:
            serving.swap("gold", bad, "v2")
        assert failure.value.serving == str(v1)
        assert expected in str(failure.value) and "HTTP 400" in str(failure.value)
        calls = admin_calls(url, mark)
        assert calls[:2] == [("unload_lora_adapter", None, 200), ("load_lora_adapter", str(bad), 400)]
        assert calls[-1] == ("load_lora_adapter", str(v1), 200)
        assert serving.loaded() == {"gold": str(v1)}
        assert serving.complete("gold", ASK, GREEDY).text == f"[gold] answered by {v1}"


def test_an_adapter_that_loads_but_does_not_answer_fails_readiness_and_is_rolled_back(tmp_path):
    v1, broken = fake_adapter(tmp_path / "v1"), fake_adapter(tmp_path / "broken-v2")
    with running_stub("--fail-completions-for", "broken") as url:
        serving = VLLMServing(url, readiness_timeout_s=1.0)
        serving.swap("gold", v1, "v1")
        with pytest.raises(SwapFailed, match=r"gold not ready after 1 s: .*HTTP 500.*previous adapter .* is "
                                             r"serving gold again"):
            serving.swap("gold", broken, "v2")
        assert serving.loaded() == {"gold": str(v1)}
        assert serving.complete("gold", ASK, GREEDY).text == f"[gold] answered by {v1}"


def test_requests_sent_during_a_swap_are_all_answered(tmp_path):
    """The stand-in takes 1 s per load, so the unload→load gap is wide; `complete()` waits it out."""
    v1, v2 = fake_adapter(tmp_path / "v1", seed=1), fake_adapter(tmp_path / "v2", seed=2)
    with running_stub("--load-delay-s", "1.0") as url:
        serving = VLLMServing(url, swap_grace_s=10.0)
        serving.swap("gold", v1, "v1")
        stop, results = threading.Event(), []

        def stream():
            while not stop.is_set():
                started = time.monotonic()
                try:
                    results.append((started, serving.complete("gold", ASK, GREEDY)))
                except ModelClientError as error:  # recorded, and the assertion below shows it
                    results.append((started, error))
                time.sleep(0.01)

        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(stream)
            time.sleep(0.2)
            swap = serving.swap("gold", v2, "v2")
            swapped_at = time.monotonic()
            time.sleep(0.2)
            stop.set()
        errors = [r for _, r in results if isinstance(r, Exception)]
        assert errors == [] and len(results) > 20
        gap_404s = [e for e in stub_log(url) if e["path"] == "/v1/chat/completions" and e["status"] == 404]
        assert gap_404s, "no request landed in the unload→load gap: the test did not exercise it"
        waited = [r for _, r in results if r.swap_wait_s > 0]
        assert waited and all(r.text.endswith(str(v2)) for r in waited)  # they waited for v2, not failed
        after = [r for started, r in results if started > swapped_at]
        assert after and all(r.text == f"[gold] answered by {v2}" for r in after)
        assert swap.seconds >= 1.0


def test_a_404_outside_a_swap_fails_after_the_grace_period():
    with running_stub() as url:
        serving = VLLMServing(url, swap_grace_s=0.3)
        started = time.monotonic()
        with pytest.raises(ModelClientError, match="does not exist"):
            serving.complete("nobody", ASK, GREEDY)
        assert 0.3 <= time.monotonic() - started < 5


def test_lora_routes_missing_without_runtime_updating_is_a_clear_failure(tmp_path):
    with running_stub(runtime_updates=False) as url, pytest.raises(SwapFailed, match="HTTP 404"):
        VLLMServing(url).swap("gold", fake_adapter(tmp_path / "v1"), "v1")


def test_sync_manifest_deploys_what_is_not_served_and_reports_every_tier(tmp_path):
    dirs = {("gold", 1): fake_adapter(tmp_path / "gold-1", seed=1), ("gold", 2): fake_adapter(tmp_path / "gold-2"),
            ("silver", 1): fake_adapter(tmp_path / "silver-1", r=64)}

    def manifest(gold: int | None, silver: int | None) -> dict:
        entry = lambda v: {"serving_version": v, "adapter_uri": f"file:///{v}", "reason": "why"}
        return {"tiers": {"gold": entry(gold), "silver": {**entry(silver), "reason": "no version approved"}}}

    resolve = lambda tier, entry: dirs[(tier, entry["serving_version"])]
    with running_stub() as url:
        serving = VLLMServing(url, max_lora_rank=16)
        first = {o.tier: o for o in sync_manifest(serving, manifest(1, None), resolve)}
        assert (first["gold"].status, first["gold"].version, first["gold"].serving) == ("deployed", "v1", str(dirs[("gold", 1)]))
        assert (first["silver"].status, first["silver"].reason) == ("skipped", "no version approved")

        again = {o.tier: o.status for o in sync_manifest(serving, manifest(1, None), resolve)}
        assert again == {"gold": "unchanged", "silver": "skipped"}

        outcomes = {o.tier: o for o in sync_manifest(serving, manifest(2, 1), resolve)}
        assert outcomes["gold"].status == "deployed" and outcomes["gold"].serving == str(dirs[("gold", 2)])
        silver = outcomes["silver"]
        assert silver.status == "failed" and "LoRA rank 64" in silver.reason and silver.serving is None
        assert serving.loaded() == {"gold": str(dirs[("gold", 2)])}

        def unreadable(tier, entry):
            raise FileNotFoundError(f"no object at {entry['adapter_uri']}")

        failed = sync_manifest(serving, manifest(3, None), unreadable)[0]
        assert failed.status == "failed" and "no object at file:///3" in failed.reason
        assert failed.serving == str(dirs[("gold", 2)]) and f"{dirs[('gold', 2)]} keeps serving" in failed.reason

    with pytest.raises(ServingUnavailable, match="unreachable"):
        sync_manifest(VLLMServing(f"http://127.0.0.1:{free_port()}"), manifest(1, None), resolve)
    with pytest.raises(ValueError, match="field 'tiers'"):
        sync_manifest(serving, {"gold": {}}, resolve)
