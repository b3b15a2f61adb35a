"""A client for any OpenAI-compatible `/v1/chat/completions` endpoint, on the standard library only."""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request

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

RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every 5xx
BODY_EXCERPT = 2000  # characters of an error body kept in a message


class HTTPStatusError(RuntimeError):
    """A non-2xx answer: the status, the body text, and the server's Retry-After in seconds (if any)."""

    def __init__(self, url: str, status: int, body: str, retry_after_s: float | None):
        super().__init__(f"HTTP {status} from {url}: {body[:BODY_EXCERPT]}")
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds; the HTTP-date form is rare from model servers and falls back to backoff."""
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def is_retryable(error: BaseException) -> bool:
    """Throttling, server errors, timeouts and dropped connections; other 4xx are the caller's fault."""
    if isinstance(error, HTTPStatusError):
        return error.status in RETRYABLE_STATUS or error.status >= 500
    # URLError (refused, DNS), TimeoutError (socket read), ConnectionError (reset), IncompleteRead...
    return isinstance(error, (urllib.error.URLError, TimeoutError, ConnectionError,
                              http.client.HTTPException))


class OpenAIClient(ModelClient):
    """vLLM, `transformers serve`, or a paid provider, through POST `{base_url}/chat/completions`.

    - `base_url` ends in the API root, e.g. "http://127.0.0.1:8000/v1"; `model` is sent as the
      request's "model" (`transformers serve DIR` pinned to a model accepts only DIR, as given).
    - The API key is read from the environment variable `api_key_env` at each call (optional: no
      variable, no Authorization header), so a key never sits in a config or a model id.
    - `policy.timeout_s` is the socket timeout of each attempt (connect, and each read of the
      non-streamed answer). Timeouts, connection errors, 408/409/429 and 5xx are retried, honouring
      a Retry-After in seconds; any other 4xx fails at once with the response body in the error.
    - Token counts come from the answer's `usage` (prompt_tokens / completion_tokens). A server that
      sends no `usage` is counted as 0 tokens (and 0 cost): the client does not guess.
    - `complete_batch` keeps up to `max_concurrency` calls in flight (thread pool), order preserved.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
                 max_concurrency: int = 4, pricing: Pricing = Pricing(), policy: CallPolicy = CallPolicy()):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"OpenAIClient.base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError(f"OpenAIClient.model is required (the served model's name) for {base_url}")
        if max_concurrency < 1:
            raise ValueError(f"OpenAIClient.max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.pricing = pricing
        self.policy = policy
        self.model_id = f"openai:{self.base_url}#{model}"

    def complete(self, messages: list[dict], params: GenerationParams = GenerationParams()) -> Completion:
        check_messages(messages, self.model_id)
        body = {"model": self.model, "messages": messages, "max_tokens": params.max_tokens,
                "temperature": params.temperature, "top_p": params.top_p}
        if params.seed is not None:
            body["seed"] = params.seed
        (answer, latency), attempts = with_retries(lambda: self._post(body), self.policy, is_retryable,
                                                   describe=self.model_id)
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as error:
            raise ModelClientError(
                f"{self.model_id}: answer has no choices[0].message.content: "
                f"{json.dumps(answer)[:BODY_EXCERPT]}", attempts=attempts, cause=error) from error
        usage = answer.get("usage") or {}
        input_tokens = int(usage.get("prompt_tokens") or 0)
        output_tokens = int(usage.get("completion_tokens") or 0)
        return Completion(text=text, model=self.model_id, input_tokens=input_tokens,
                          output_tokens=output_tokens, latency_s=latency,
                          cost_usd=self.pricing.cost(input_tokens, output_tokens), attempts=attempts,
                          finish_reason=choice.get("finish_reason"))

    def _post(self, body: dict) -> tuple[dict, float]:
        url = f"{self.base_url}/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        api_key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=headers,
                                         method="POST")
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=self.policy.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            text = error.read().decode("utf-8", errors="replace")
            raise HTTPStatusError(url, error.code, text,
                                  _retry_after_seconds(error.headers.get("Retry-After"))) from None
        latency = time.perf_counter() - started
        try:
            return json.loads(raw), latency
        except json.JSONDecodeError as error:
            raise ValueError(f"{url} answered 2xx with a body that is not JSON: "
                             f"{raw[:BODY_EXCERPT]!r}") from error

    def complete_batch(self, conversations: list[list[dict]], params: GenerationParams = GenerationParams()
                       ) -> list[Completion | ModelClientError]:
        return concurrent_batch(self, conversations, params, self.max_concurrency)
