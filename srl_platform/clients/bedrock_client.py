"""Amazon Bedrock models through the bedrock-runtime Converse API (one request shape for every model)."""

from __future__ import annotations

import time

from srl_platform.clients.base import (
    CallPolicy,
    Completion,
    GenerationParams,
    ModelClient,
    ModelClientError,
    Pricing,
    check_messages,
    concurrent_batch,
    with_retries,
)

RETRYABLE_CODES = frozenset({
    "ThrottlingException", "ServiceUnavailableException", "InternalServerException",
    "ModelNotReadyException", "ModelTimeoutException",
})
# Converse's stopReason in the vocabulary every client reports; others pass through unchanged.
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def is_retryable(error: BaseException) -> bool:
    """Throttling, service-side failures and transport errors; ValidationException,
    AccessDeniedException, ResourceNotFoundException and the like are the caller's to fix."""
    from botocore import exceptions as aws

    if isinstance(error, aws.ClientError):
        return error.response.get("Error", {}).get("Code") in RETRYABLE_CODES
    # botocore's ConnectionError covers EndpointConnectionError and ConnectTimeoutError.
    return isinstance(error, (aws.ConnectionError, aws.ReadTimeoutError, aws.ConnectionClosedError))


def converse_request(messages: list[dict], params: GenerationParams) -> dict:
    """Converse's arguments for OpenAI-style messages: system messages become `system` blocks, the
    rest `messages` with text content blocks. Bedrock has no sampling seed: `params.seed` is unused."""
    system = [{"text": m["content"]} for m in messages if m["role"] == "system"]
    turns = [{"role": m["role"], "content": [{"text": m["content"]}]}
             for m in messages if m["role"] != "system"]
    request = {"messages": turns, "inferenceConfig": {
        "maxTokens": params.max_tokens, "temperature": params.temperature, "topP": params.top_p}}
    if system:
        request["system"] = system
    return request


class BedrockClient(ModelClient):
    """A Bedrock model (`model` is its modelId, an inference profile id, or an ARN).

    The boto3 client is built with `read_timeout=policy.timeout_s` and botocore's own retries off
    (`total_max_attempts=1`), so `with_retries` is the one place retries happen and every retry is
    counted in `Completion.attempts`. Pass `client` to reuse a configured bedrock-runtime client
    (its timeouts and retries are then its own), or `region` / `endpoint_url` to build one (an
    endpoint URL points it at a VPC endpoint, or at a loopback server in tests). boto3 is imported
    only here: the core package imports without it.
    """

    def __init__(self, model: str, *, region: str | None = None, endpoint_url: str | None = None,
                 client=None, connect_timeout_s: float = 10.0, max_concurrency: int = 4,
                 pricing: Pricing = Pricing(), policy: CallPolicy = CallPolicy()):
        if not model:
            raise ValueError("BedrockClient.model is required (a Bedrock modelId or ARN)")
        if max_concurrency < 1:
            raise ValueError(f"BedrockClient.max_concurrency must be >= 1, got {max_concurrency}")
        self.model = model
        self.max_concurrency = max_concurrency
        self.pricing = pricing
        self.policy = policy
        self.model_id = f"bedrock:{model}"
        self._owns_client = client is None
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=connect_timeout_s, read_timeout=policy.timeout_s,
                            retries={"total_max_attempts": 1, "mode": "standard"})
            client = boto3.client("bedrock-runtime", region_name=region, endpoint_url=endpoint_url,
                                  config=config)
        self._client = client

    def complete(self, messages: list[dict], params: GenerationParams = GenerationParams()) -> Completion:
        check_messages(messages, self.model_id)
        request = converse_request(messages, params)

        def call():
            started = time.perf_counter()
            response = self._client.converse(modelId=self.model, **request)
            return response, time.perf_counter() - started

        (response, latency), attempts = with_retries(call, self.policy, is_retryable, describe=self.model_id)
        try:
            blocks = response["output"]["message"]["content"]
        except (KeyError, TypeError) as error:
            raise ModelClientError(f"{self.model_id}: response has no output.message.content: "
                                   f"{str(response)[:2000]}", attempts=attempts, cause=error) from error
        text = "".join(block.get("text", "") for block in blocks)  # skips non-text (reasoning) blocks
        usage = response.get("usage") or {}
        input_tokens = int(usage.get("inputTokens") or 0)
        output_tokens = int(usage.get("outputTokens") or 0)
        stop = response.get("stopReason")
        return Completion(text=text, model=self.model_id, input_tokens=input_tokens,
                          output_tokens=output_tokens, latency_s=latency,
                          cost_usd=self.pricing.cost(input_tokens, output_tokens), attempts=attempts,
                          finish_reason=FINISH_REASONS.get(stop, stop))

    def complete_batch(self, conversations: list[list[dict]], params: GenerationParams = GenerationParams()
                       ) -> list[Completion | ModelClientError]:
        return concurrent_batch(self, conversations, params, self.max_concurrency)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
