"""Acceptance: the embedded server (a real process on loopback, the real SmolLM2 base) serves the gold
adapter, a new version is promoted while a stream of concurrent requests runs, every request is
answered, the answers after the swap come from the new version, and failed loads keep it serving.

The two adapters are real peft LoRAs (r=4 on q/v, B initialised non-zero) whose greedy answers differ,
so "which version answered" is read both from `system_fingerprint` (the weights' hash) and from the
text, which must equal what the same merged weights produce in this process.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from serving_support import post, random_lora

from srl_platform.clients.base import GenerationParams, ModelClientError
from srl_platform.serving_backends import AdapterRejected, SwapFailed
from srl_platform.serving_process import embedded_server
from srl_platform.serving_server import weights_fingerprint

ASK = [{"role": "user", "content": "What is 2 + 3?"}]
MAX_TOKENS = 4
GREEDY = GenerationParams(max_tokens=MAX_TOKENS, temperature=0.0)


def reference_answer(base_dir: Path, adapter: Path) -> str:
    """What the server must answer with `adapter`: the same merge and dtype, greedy, in this process."""
    import torch

    from srl_platform.evaluate import load_policy_model
    from srl_platform.prompts import render

    tokenizer, model = load_policy_model(str(base_dir), str(adapter), "bfloat16")
    ids = tokenizer(render(tokenizer, ASK), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_TOKENS,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def adapters(base_model_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gold-adapters")
    v1, v2 = random_lora(base_model_dir, root / "v1", seed=1), random_lora(base_model_dir, root / "v2", seed=2)
    corrupt = root / "corrupt"
    shutil.copytree(v2, corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"not a safetensors file" * 8)
    wide = random_lora(base_model_dir, root / "wide", seed=3, r=16)
    return {"v1": v1, "v2": v2, "corrupt": corrupt, "wide": wide,
            "v2_answer": reference_answer(base_model_dir, v2)}


class Stream:
    """Concurrent clients sending the same greedy request until stopped; every outcome is kept."""

    def __init__(self, serving, clients: int = 3):
        self.serving, self.clients = serving, clients
        self.results: list[tuple[float, float, object]] = []  # (sent, answered, completion or error)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(clients)

    def _client(self):
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                outcome = self.serving.complete("gold", ASK, GREEDY)
            except ModelClientError as error:
                outcome = error
            self.results.append((sent, time.monotonic(), outcome))

    def __enter__(self):
        for _ in range(self.clients):
            self._pool.submit(self._client)
        return self

    def wait_for(self, count: int, sent_after: float = 0.0, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(sent > sent_after for sent, _, _ in self.results) < count:
            assert time.monotonic() < deadline, f"fewer than {count} answers in {timeout_s} s"
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._pool.shutdown(wait=True)


def test_promotion_mid_stream_answers_every_request_and_failed_loads_keep_the_new_version(
        base_model_dir, adapters, tmp_path):
    v1_print, v2_print = weights_fingerprint("gold", adapters["v1"]), weights_fingerprint("gold", adapters["v2"])
    with embedded_server(str(base_model_dir), {"gold": adapters["v1"]}, max_lora_rank=8,
                         log_path=tmp_path / "serve.log") as server:
        serving = server.serving
        cards = {card["id"]: card for card in serving.models()}
        assert cards["gold"]["root"] == str(adapters["v1"]) and cards["gold"]["parent"] == str(base_model_dir)
        assert cards[str(base_model_dir)]["parent"] is None
        v1_answer = serving.complete("gold", ASK, GREEDY)
        assert v1_answer.system_fingerprint == v1_print and v1_answer.output_tokens == MAX_TOKENS
        assert v1_answer.text != adapters["v2_answer"], "the two adapters must answer differently"

        with Stream(serving) as stream:
            stream.wait_for(2)
            swap_started = time.monotonic()
            swap = serving.swap("gold", adapters["v2"], "v2")
            swapped = time.monotonic()
            stream.wait_for(3, sent_after=swapped)
        assert swap.previous_dir == str(adapters["v1"])
        outcomes = [outcome for _, _, outcome in stream.results]
        assert [o for o in outcomes if isinstance(o, Exception)] == []  # every request answered
        by_print = {v1_print: v1_answer.text, v2_print: adapters["v2_answer"]}
        assert all(o.text == by_print[o.system_fingerprint] for o in outcomes)  # each answer is one version's
        during = [o for sent, answered, o in stream.results if swap_started < answered < swapped]
        assert during and during[0].system_fingerprint == v1_print, "v1 kept answering while v2 was merged"
        after = [o for sent, _, o in stream.results if sent > swapped]
        assert after and {o.system_fingerprint for o in after} == {v2_print}

        with Stream(serving, clients=2) as stream:
            with pytest.raises(SwapFailed, match="previous adapter .*v2 is still serving gold") as failure:
                serving.swap("gold", adapters["corrupt"], "v3")
            assert "HTTP 400" in str(failure.value) and failure.value.serving == str(adapters["v2"])
            with pytest.raises(AdapterRejected, match="rank 16, above the server's max_lora_rank 8"):
                serving.swap("gold", adapters["wide"], "v3")
            # The server enforces the rank itself too, whatever a client checks.
            status, body = post(server.url, "/v1/load_lora_adapter",
                                {"lora_name": "gold", "lora_path": str(adapters["wide"]), "load_inplace": True})
            assert status == 400 and "LoRA rank 16" in body["error"]["message"]
            assert "greater than max_lora_rank 8" in body["error"]["message"]
            marked = time.monotonic()
            stream.wait_for(2, sent_after=marked)
        outcomes = [outcome for _, _, outcome in stream.results]
        assert outcomes and all(not isinstance(o, Exception) for o in outcomes)
        assert {o.system_fingerprint for o in outcomes} == {v2_print}
        assert serving.loaded() == {"gold": str(adapters["v2"])}


def test_the_api_answers_bad_requests_like_vllm(base_model_dir, adapters, tmp_path):
    with embedded_server(str(base_model_dir), {"gold": adapters["v1"]}, max_lora_rank=8,
                         log_path=tmp_path / "serve.log") as server:
        url = server.url
        status, body = post(url, "/v1/load_lora_adapter", {"lora_name": "gold", "lora_path": str(adapters["v2"])})
        assert status == 400 and body["error"]["type"] == "InvalidUserInput"
        assert "'gold' has already been loaded" in body["error"]["message"] and "load_inplace" in body["error"]["message"]
        status, body = post(url, "/v1/load_lora_adapter", {"lora_name": "silver"})
        assert (status, body["error"]["message"]) == (400, "Both 'lora_name' and 'lora_path' must be provided.")
        status, body = post(url, "/v1/load_lora_adapter", {"lora_name": "silver", "lora_path": "/nowhere"})
        assert status == 404 and "No adapter found for /nowhere" in body["error"]["message"]
        status, body = post(url, "/v1/unload_lora_adapter", {"lora_name": "silver"})
        assert (status, body["error"]["message"]) == (404, "The lora adapter 'silver' cannot be found.")
        status, body = post(url, "/v1/chat/completions", {"model": "silver", "messages": ASK})
        assert (status, body["error"]["message"]) == (404, "The model `silver` does not exist.")
        status, body = post(url, "/v1/chat/completions", {"model": "gold", "messages": ASK, "max_tokens": 0})
        assert status == 400 and body["error"]["param"] == "max_tokens"
        assert "field 'max_tokens' must be an integer >= 1, got 0" in body["error"]["message"]
        status, body = post(url, "/v1/chat/completions", {"model": "gold", "messages": [{"role": "robot"}]})
        assert status == 400 and "field 'messages[0]'" in body["error"]["message"]
        status, body = post(url, "/v1/chat/completions", {"model": "gold", "messages": ASK, "stream": True})
        assert status == 400 and body["error"]["param"] == "stream"

        # A stop (SIGTERM) lets an accepted request finish.
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(server.serving.complete, "gold", ASK, GenerationParams(max_tokens=8, temperature=0))
            time.sleep(0.3)
            server.process.terminate()
            assert pending.result(timeout=120).output_tokens > 0
        assert server.process.wait(timeout=60) == 0
