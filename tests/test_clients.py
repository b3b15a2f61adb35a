"""Model clients: retries and accounting as pure logic; every backend against a real server process or
a real model — `transformers serve` for the OpenAI wire format, a loopback Converse endpoint driven by
a real boto3 client for Bedrock, and transformers models in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support_loopback import (
    LoopbackServer,
    Reply,
    after_failures,
    bedrock_converse,
    bedrock_error,
    free_port,
    openai_answer,
    scripted,
)

from srl_platform.clients import (
    BedrockClient,
    CallPolicy,
    ClientSpec,
    Completion,
    GenerationParams,
    ModelClientError,
    OpenAIClient,
    Pricing,
    TransformersClient,
    UsageLedger,
    with_retries,
)

GREEDY = GenerationParams(max_tokens=16, temperature=0)
FAST_RETRY = CallPolicy(timeout_s=5, max_retries=3, backoff_s=0.001, backoff_max_s=0.3)


class Flaky(Exception):
    def __init__(self, message="flaky", retry_after_s=None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def failing(errors, result="ok"):
    """A call that raises each of `errors` in turn, then returns `result`; counts its calls."""
    remaining = list(errors)

    def call():
        call.count += 1
        if remaining:
            raise remaining.pop(0)
        return result

    call.count = 0
    return call


def retry_flaky(error):
    return isinstance(error, Flaky)


# --- with_retries ------------------------------------------------------------------------------

def test_retries_wait_with_growing_capped_full_jitter():
    waits, draws = [], iter([0.5, 0.5, 0.5, 0.5, 1.0])
    call = failing([Flaky()] * 5)
    policy = CallPolicy(max_retries=5, backoff_s=1.0, backoff_max_s=5.0)

    result, attempts = with_retries(call, policy, retry_flaky, "m", sleep=waits.append, rng=lambda: next(draws))

    assert (result, attempts, call.count) == ("ok", 6, 6)
    # bounds 1, 2, 4, 8->5, 16->5 scaled by the jitter draw
    assert waits == [0.5, 1.0, 2.0, 2.5, 5.0]


def test_retry_after_replaces_jitter_and_is_capped():
    waits = []
    call = failing([Flaky(retry_after_s=0.2), Flaky(retry_after_s=60)])
    policy = CallPolicy(max_retries=3, backoff_s=1.0, backoff_max_s=5.0)

    assert with_retries(call, policy, retry_flaky, "m", sleep=waits.append, rng=lambda: 0.9) == ("ok", 3)
    assert waits == [0.2, 5.0]


def test_retries_give_up_naming_model_attempts_and_cause():
    waits = []
    call = failing([Flaky("HTTP 503 overloaded")] * 10)

    with pytest.raises(ModelClientError) as failure:
        with_retries(call, CallPolicy(max_retries=2), retry_flaky, "openai:http://x/v1#m",
                     sleep=waits.append, rng=lambda: 0.0)

    message = str(failure.value)
    assert "openai:http://x/v1#m" in message and "3 attempt" in message
    assert "retries exhausted" in message and "HTTP 503 overloaded" in message
    assert failure.value.attempts == 3 and call.count == 3 and len(waits) == 2
    assert isinstance(failure.value.__cause__, Flaky)


def test_non_retryable_errors_fail_on_the_first_attempt():
    waits = []
    call = failing([ValueError("bad request body")])

    with pytest.raises(ModelClientError, match="1 attempt.*not retryable.*bad request body") as failure:
        with_retries(call, CallPolicy(max_retries=5), retry_flaky, "m", sleep=waits.append)

    assert failure.value.attempts == 1 and call.count == 1 and waits == []


@pytest.mark.parametrize("make, field", [
    (lambda: CallPolicy(timeout_s=0), "timeout_s"),
    (lambda: CallPolicy(max_retries=-1), "max_retries"),
    (lambda: GenerationParams(max_tokens=0), "max_tokens"),
    (lambda: GenerationParams(top_p=0), "top_p"),
    (lambda: Pricing(input_per_mtok=-1), "Pricing"),
])
def test_settings_reject_bad_values_by_name(make, field):
    with pytest.raises(ValueError, match=field):
        make()


# --- pricing and the usage ledger --------------------------------------------------------------

def completion(model="m1", input_tokens=100, output_tokens=20, attempts=1, latency_s=0.5,
               pricing=Pricing(3.0, 15.0)):
    return Completion(text="x", model=model, input_tokens=input_tokens, output_tokens=output_tokens,
                      latency_s=latency_s, cost_usd=pricing.cost(input_tokens, output_tokens),
                      attempts=attempts, finish_reason="stop")


def test_pricing_is_per_million_tokens():
    assert Pricing(3.0, 15.0).cost(1_000, 2_000) == pytest.approx((3_000 + 30_000) / 1e6)
    assert Pricing().cost(10**9, 10**9) == 0.0


def test_ledger_totals_by_role_and_by_model_with_failures():
    ledger = UsageLedger()
    ledger.record("teacher", completion("m1", 100, 20, attempts=1, latency_s=0.5))
    ledger.record("teacher", completion("m2", 300, 40, attempts=3, latency_s=1.5))
    ledger.record("judge", completion("m1", 50, 10, attempts=2, latency_s=0.25))
    ledger.record_failure("judge", "m2", ModelClientError("m2: gave up", attempts=4))

    summary = json.loads(json.dumps(ledger.summary()))  # JSON-serialisable as it stands

    total = summary["total"]
    assert total["calls"] == 4 and total["failed_calls"] == 1
    assert total["retries"] == 0 + 2 + 1 + 3
    assert (total["input_tokens"], total["output_tokens"]) == (450, 70)
    assert total["cost_usd"] == pytest.approx((450 * 3.0 + 70 * 15.0) / 1e6)
    assert total["latency_s"] == pytest.approx(2.25)
    assert total["mean_latency_s"] == pytest.approx(0.75)  # over the 3 successful calls
    assert summary["by_role"]["teacher"]["calls"] == 2 and summary["by_role"]["teacher"]["input_tokens"] == 400
    assert summary["by_role"]["judge"]["failed_calls"] == 1 and summary["by_role"]["judge"]["retries"] == 4
    assert summary["by_model"]["m1"]["input_tokens"] == 150 and summary["by_model"]["m1"]["retries"] == 1
    assert summary["by_model"]["m2"]["calls"] == 2 and summary["by_model"]["m2"]["failed_calls"] == 1


def test_ledger_is_exact_under_concurrent_recording():
    ledger = UsageLedger()

    def record_many(worker):
        for _ in range(500):
            ledger.record(f"role{worker % 2}", completion("m1", 3, 2, attempts=2))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(record_many, range(8)))

    total = ledger.summary()["total"]
    assert (total["calls"], total["retries"], total["input_tokens"], total["output_tokens"]) == (
        4000, 4000, 12000, 8000)
    assert ledger.summary()["by_role"]["role0"]["calls"] == 2000


# --- OpenAIClient against `transformers serve` -------------------------------------------------

@pytest.fixture(scope="module")
def transformers_serve(base_model_dir, tmp_path_factory):
    """`transformers serve DIR` as a real process on a free loopback port: (base_url, model name)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(base_model_dir),
               "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    # One torch thread: on a busy 2-core machine torch's default pool oversubscribes the cores and
    # 8-token answers took 3-4x longer (measured 5-7 s vs 1.5 s for three requests).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready in 90 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        # The server is pinned to the directory it was started with and accepts only that name.
        yield f"http://127.0.0.1:{port}/v1", str(base_model_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_openai_client_completes_against_transformers_serve(transformers_serve):
    base_url, model = transformers_serve
    client = OpenAIClient(base_url, model, api_key_env=None, pricing=Pricing(1.0, 2.0))

    result = client.complete([{"role": "system", "content": "Answer briefly."},
                              {"role": "user", "content": "What is the capital of France?"}], GREEDY)

    assert result.text.strip()
    assert result.model == client.model_id == f"openai:{base_url}#{model}"
    assert result.input_tokens > 0 and 0 < result.output_tokens <= GREEDY.max_tokens
    assert result.cost_usd == pytest.approx((result.input_tokens * 1.0 + result.output_tokens * 2.0) / 1e6)
    assert result.latency_s > 0 and result.attempts == 1
    assert result.finish_reason in ("stop", "length")


def test_openai_batch_keeps_order_against_transformers_serve(transformers_serve):
    base_url, model = transformers_serve
    client = OpenAIClient(base_url, model, api_key_env=None, max_concurrency=3)
    conversations = [[{"role": "user", "content": question}] for question in (
        "Name a colour.", "Say the word apple, then the word pear, and stop.", "What is 2 + 2?")]

    short = GenerationParams(max_tokens=8, temperature=0)
    batch = client.complete_batch(conversations, short)
    one_by_one = [client.complete(messages, short) for messages in conversations]

    assert [r.text for r in batch] == [r.text for r in one_by_one]  # greedy: same answer, same slot
    assert [r.input_tokens for r in batch] == [r.input_tokens for r in one_by_one]
    assert len({r.input_tokens for r in batch}) == 3  # the prompts differ, so order is observable


def test_openai_wrong_model_name_is_a_client_error_not_retried(transformers_serve):
    base_url, _ = transformers_serve
    client = OpenAIClient(base_url, "not-the-served-model", api_key_env=None, policy=FAST_RETRY)

    with pytest.raises(ModelClientError, match="HTTP 400.*not-the-served-model") as failure:
        client.complete([{"role": "user", "content": "hi"}], GREEDY)

    assert failure.value.attempts == 1


# --- OpenAIClient retries and timeouts against a scripted loopback server ----------------------

def test_openai_retries_throttling_and_server_errors_then_succeeds(monkeypatch):
    monkeypatch.setenv("SRL_TEST_KEY", "sk-test")
    respond = scripted(Reply(429, {"error": "slow down"}, {"Retry-After": "1"}),
                       Reply(503, {"error": "overloaded"}),
                       Reply(200, openai_answer("four", prompt_tokens=12, completion_tokens=3)))
    with LoopbackServer(respond) as server:
        client = OpenAIClient(server.url + "/v1", "served", api_key_env="SRL_TEST_KEY",
                              pricing=Pricing(2.0, 8.0), policy=FAST_RETRY)
        result = client.complete([{"role": "user", "content": "2+2?"}],
                                 GenerationParams(max_tokens=7, temperature=0.5, top_p=0.9, seed=11))

    assert (result.text, result.attempts, result.finish_reason) == ("four", 3, "stop")
    assert (result.input_tokens, result.output_tokens) == (12, 3)
    assert result.cost_usd == pytest.approx((12 * 2.0 + 3 * 8.0) / 1e6)
    first, second, third = server.requests
    assert first.path == "/v1/chat/completions" and first.headers["Authorization"] == "Bearer sk-test"
    assert first.body == {"model": "served", "messages": [{"role": "user", "content": "2+2?"}],
                          "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 11}
    # Retry-After: 1 is honoured up to backoff_max_s (0.3 s); the 503 retry only jitters (<= 2 ms).
    assert second.received_at - first.received_at >= 0.29
    assert third.received_at - second.received_at < 0.2


def test_openai_timeout_is_retried_then_fails():
    with LoopbackServer(scripted(Reply(200, openai_answer("late"), delay_s=1.5))) as server:
        client = OpenAIClient(server.url + "/v1", "served", api_key_env=None,
                              policy=CallPolicy(timeout_s=0.2, max_retries=1, backoff_s=0.001))
        with pytest.raises(ModelClientError, match="2 attempt.*retries exhausted.*timed out") as failure:
            client.complete([{"role": "user", "content": "hi"}], GREEDY)

    assert failure.value.attempts == 2 and len(server.requests) == 2


def test_openai_bad_request_fails_at_once_with_the_body():
    body = {"error": {"message": "'messages' must not be empty", "type": "invalid_request_error"}}
    with LoopbackServer(scripted(Reply(400, body))) as server:
        client = OpenAIClient(server.url + "/v1", "served", api_key_env=None, policy=FAST_RETRY)
        with pytest.raises(ModelClientError, match="HTTP 400.*'messages' must not be empty") as failure:
            client.complete([{"role": "user", "content": "hi"}], GREEDY)

    assert failure.value.attempts == 1 and len(server.requests) == 1


def test_openai_connection_refused_is_retried():
    client = OpenAIClient(f"http://127.0.0.1:{free_port()}/v1", "served", api_key_env=None,
                          policy=CallPolicy(timeout_s=1, max_retries=2, backoff_s=0.001))
    with pytest.raises(ModelClientError, match="3 attempt.*retries exhausted.*refused") as failure:
        client.complete([{"role": "user", "content": "hi"}], GREEDY)
    assert failure.value.attempts == 3


def test_openai_batch_returns_failures_in_place_and_counts_missing_usage_as_zero():
    def respond(request):
        text = request.body["messages"][-1]["content"]
        if text == "bad":
            return Reply(400, {"error": "bad prompt"})
        return Reply(200, openai_answer(text.upper(), prompt_tokens=None), delay_s=0.05)

    with LoopbackServer(respond) as server:
        client = OpenAIClient(server.url + "/v1", "served", api_key_env=None, max_concurrency=4,
                              policy=FAST_RETRY)
        results = client.complete_batch(
            [[{"role": "user", "content": text}] for text in ("a", "b", "bad", "c", "d")], GREEDY)

    assert [r.text if isinstance(r, Completion) else "ERROR" for r in results] == ["A", "B", "ERROR", "C", "D"]
    assert "bad prompt" in str(results[2])
    assert all(r.input_tokens == r.output_tokens == 0 for r in results if isinstance(r, Completion))


# --- BedrockClient: a real boto3 client against a loopback Converse endpoint -------------------

BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")  # the client's own region must win
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


def bedrock_client(server, **kwargs) -> BedrockClient:
    return BedrockClient(BEDROCK_MODEL, region="us-east-1", endpoint_url=server.url, **kwargs)


def test_bedrock_converse_request_and_usage(aws_env):
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hello there"},
                {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": "Repeat after me: seven blue whales"}]
    with LoopbackServer(bedrock_converse) as server:
        client = bedrock_client(server, pricing=Pricing(0.8, 4.0))
        result = client.complete(messages, GenerationParams(max_tokens=64, temperature=0.2, top_p=0.9))
        short = client.complete(messages, GenerationParams(max_tokens=3, temperature=0))
        client.close()

    sent = server.requests[0]
    assert sent.path == f"/model/{BEDROCK_MODEL}/converse"
    assert sent.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/bedrock/aws4_request" in sent.headers["Authorization"]
    assert sent.body == {
        "system": [{"text": "You are terse."}],
        "messages": [{"role": "user", "content": [{"text": "Hello there"}]},
                     {"role": "assistant", "content": [{"text": "Hi."}]},
                     {"role": "user", "content": [{"text": "Repeat after me: seven blue whales"}]}],
        "inferenceConfig": {"maxTokens": 64, "temperature": 0.2, "topP": 0.9},
    }
    assert result.text == "echo: Repeat after me: seven blue whales"
    assert result.model == client.model_id == f"bedrock:{BEDROCK_MODEL}"
    assert (result.input_tokens, result.output_tokens) == (3 + 2 + 1 + 6, 7)
    assert result.cost_usd == pytest.approx((12 * 0.8 + 7 * 4.0) / 1e6)
    assert (result.finish_reason, result.attempts) == ("stop", 1)
    assert (short.text, short.output_tokens, short.finish_reason) == ("echo: Repeat after", 3, "length")


def test_bedrock_throttling_is_retried_by_us_not_by_botocore(aws_env):
    throttle = bedrock_error(429, "ThrottlingException", "Too many requests, please wait")
    with LoopbackServer(after_failures(throttle, throttle, then=bedrock_converse)) as server:
        result = bedrock_client(server, policy=FAST_RETRY).complete([{"role": "user", "content": "ping"}])

    assert result.text == "echo: ping" and result.attempts == 3
    assert len(server.requests) == 3  # botocore made no retries of its own


def test_bedrock_validation_error_is_not_retried(aws_env):
    invalid = bedrock_error(400, "ValidationException", "A conversation must start with a user message.")
    with LoopbackServer(scripted(invalid)) as server:
        with pytest.raises(ModelClientError, match="ValidationException.*must start with a user") as failure:
            bedrock_client(server, policy=FAST_RETRY).complete([{"role": "assistant", "content": "hi"}])

    assert failure.value.attempts == 1 and len(server.requests) == 1


def test_bedrock_throttling_exhausts_retries_and_batch_returns_errors(aws_env):
    throttle = bedrock_error(429, "ThrottlingException", "Too many requests")
    with LoopbackServer(scripted(throttle)) as server:
        client = bedrock_client(server, policy=CallPolicy(max_retries=2, backoff_s=0.001))
        results = client.complete_batch([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]])

    assert all(isinstance(r, ModelClientError) and r.attempts == 3 for r in results)
    assert "retries exhausted" in str(results[0]) and "ThrottlingException" in str(results[0])
    assert len(server.requests) == 6


# --- TransformersClient ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_client(tiny_model_dir):
    client = TransformersClient(str(tiny_model_dir), dtype="float32", batch_size=2)
    yield client
    client.close()


def conversation(n: int) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "word " * n}]


def test_transformers_batch_keeps_order_and_counts_tokens_exactly(tiny_client, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from srl_platform.prompts import render

    conversations = [conversation(n) for n in (5, 1, 9, 3, 7)]  # 3 batches of 2, 2, 1
    results = tiny_client.complete_batch(conversations, GREEDY)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for messages, result in zip(conversations, results):
        prompt = tokenizer(render(tokenizer, messages), return_tensors="pt", add_special_tokens=False)
        assert result.input_tokens == prompt["input_ids"].shape[1]
        generated = model.generate(**prompt, max_new_tokens=GREEDY.max_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)[0, prompt["input_ids"].shape[1]:]
        assert result.output_tokens == len(generated)  # no end-of-sequence within 16 tokens here
        assert result.text == tokenizer.decode(generated, skip_special_tokens=True)
        assert result.finish_reason == "length" and result.cost_usd == 0.0
        assert result.model == tiny_client.model_id


def test_transformers_seed_reproduces_sampling_and_spares_the_global_rng(tiny_client):
    import torch

    conversations = [conversation(n) for n in (2, 4, 6)]
    sampled = GenerationParams(max_tokens=12, temperature=1.0, seed=7)
    rng_before = torch.random.get_rng_state()

    first = tiny_client.complete_batch(conversations, sampled)
    again = tiny_client.complete_batch(conversations, sampled)
    other = tiny_client.complete_batch(conversations, GenerationParams(max_tokens=12, temperature=1.0, seed=8))

    assert [r.text for r in first] == [r.text for r in again]
    assert [r.text for r in first] != [r.text for r in other]
    assert torch.equal(torch.random.get_rng_state(), rng_before)


def test_transformers_max_time_stops_with_finish_reason_time(tiny_model_dir):
    client = TransformersClient(str(tiny_model_dir), dtype="float32", policy=CallPolicy(timeout_s=0.05))

    result = client.complete(conversation(3), GenerationParams(max_tokens=1500, temperature=0))

    assert result.finish_reason == "time"
    assert 0 < result.output_tokens < 1500 and result.latency_s < 2.0


def test_transformers_bad_conversation_fails_alone(tiny_client):
    results = tiny_client.complete_batch(
        [conversation(1), [{"role": "tool", "content": "x"}], conversation(2)], GREEDY)

    assert isinstance(results[0], Completion) and isinstance(results[2], Completion)
    assert isinstance(results[1], ModelClientError) and "message 0" in str(results[1])


def test_transformers_adapter_changes_identity_and_output(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(tmp_path / "adapter")
    base = TransformersClient(str(tiny_model_dir), dtype="float32")
    tuned = TransformersClient(str(tiny_model_dir), str(tmp_path / "adapter"), dtype="float32")

    assert tuned.model_id.startswith(base.model_id + "+adapter@")
    sampled = GenerationParams(max_tokens=12, temperature=1.0, seed=3)
    assert tuned.complete(conversation(4), sampled).text != base.complete(conversation(4), sampled).text


def test_transformers_real_smollm2_completes(base_model_dir):
    from srl_platform.models import DEFAULT_BASE_MODEL, fingerprint

    client = TransformersClient(DEFAULT_BASE_MODEL)
    try:
        result = client.complete([{"role": "user", "content": "What is the capital of France?"}],
                                 GenerationParams(max_tokens=8, temperature=0))
    finally:
        client.close()

    assert client.model_id == f"transformers:{DEFAULT_BASE_MODEL}@{fingerprint(DEFAULT_BASE_MODEL)[:12]}"
    assert result.text.strip() and result.input_tokens > 0 and 0 < result.output_tokens <= 8
    assert result.finish_reason in ("stop", "length")


# --- ClientSpec --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("transformers:smollm2-135m-instruct", {"kind": "transformers", "target": "smollm2-135m-instruct"}),
    ("transformers:/models/base?adapter=/runs/adapter&dtype=float32&batch_size=4",
     {"target": "/models/base", "adapter": "/runs/adapter", "dtype": "float32", "batch_size": 4}),
    ("openai:http://127.0.0.1:8000/v1?model=NAME&api_key_env=VAR",
     {"kind": "openai", "target": "http://127.0.0.1:8000/v1", "model": "NAME", "api_key_env": "VAR"}),
    ("bedrock:anthropic.claude-3-5-haiku-20241022-v1:0?region=us-east-1",
     {"kind": "bedrock", "target": BEDROCK_MODEL, "region": "us-east-1"}),
    ("bedrock:amazon.nova-lite-v1:0?max_concurrency=8&input_per_mtok=0.06&output_per_mtok=0.24"
     "&timeout_s=30.0&max_retries=5",
     {"max_concurrency": 8, "pricing": Pricing(0.06, 0.24), "policy": CallPolicy(timeout_s=30.0, max_retries=5)}),
])
def test_client_spec_parses_and_round_trips(text, expected):
    spec = ClientSpec.parse(text)

    assert {name: getattr(spec, name) for name in expected} == expected
    assert str(spec) == text
    assert ClientSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("text, message", [
    ("gpt-4o", "must start with one of transformers:, openai:, bedrock:"),
    ("vllm:http://127.0.0.1:8000/v1", "must start with one of"),
    ("transformers:", "empty target"),
    ("openai:http://127.0.0.1:8000/v1", r"needs \?model=NAME"),
    ("openai:127.0.0.1:8000?model=m", "must be a base URL"),
    ("transformers:base?model=x", "unknown option 'model' for transformers"),
    ("bedrock:m?region=a&region=b", "'region' given twice"),
    ("bedrock:m?region=", "'region' has no value"),
    ("bedrock:m?timeout_s=soon", "timeout_s='soon' must be a number"),
    ("openai:http://h/v1?model=m&max_concurrency=2.5", "max_concurrency='2.5' must be an integer"),
    ("bedrock:m?max_retries=-1", "CallPolicy.max_retries must be >= 0"),
])
def test_client_spec_errors_name_the_bad_part(text, message):
    with pytest.raises(ValueError, match=message):
        ClientSpec.parse(text)


def test_client_spec_rejects_options_of_another_kind():
    with pytest.raises(ValueError, match="option region='us-east-1' does not apply to a openai client"):
        ClientSpec("openai", "http://h/v1", model="m", region="us-east-1")


def test_client_spec_builds_each_client(tiny_model_dir, aws_env):
    openai = ClientSpec.parse("openai:http://127.0.0.1:9/v1?model=m&timeout_s=5.0").build()
    bedrock = ClientSpec.parse(f"bedrock:{BEDROCK_MODEL}?region=us-east-1&endpoint_url=http://127.0.0.1:9"
                               "&output_per_mtok=4.0").build()
    local = ClientSpec.parse(f"transformers:{tiny_model_dir}?dtype=float32&batch_size=3").build()

    assert isinstance(openai, OpenAIClient) and openai.model_id == "openai:http://127.0.0.1:9/v1#m"
    assert openai.policy == CallPolicy(timeout_s=5.0)
    assert isinstance(bedrock, BedrockClient) and bedrock.pricing == Pricing(output_per_mtok=4.0)
    assert isinstance(local, TransformersClient) and (local.dtype, local.batch_size) == ("float32", 3)
    assert local.model_id.startswith(f"transformers:{tiny_model_dir}@")
