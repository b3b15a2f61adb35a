"""What every model client shares: call settings, the result of a call, retries with backoff, and the
`ModelClient` interface that teachers, judges and rollout generators are written against."""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings of one call, the same for every backend."""

    max_tokens: int = 256
    """Most new tokens the model may produce (finish_reason "length" when reached)."""
    temperature: float = 0.7
    """0 means greedy decoding."""
    top_p: float = 1.0
    seed: int | None = None
    """Sampling seed where the backend supports one (transformers, most OpenAI-compatible servers;
    Bedrock's Converse API has none and ignores it)."""

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"GenerationParams.max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"GenerationParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"GenerationParams.top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class CallPolicy:
    """How long one call may take and how it is retried."""

    timeout_s: float = 120.0
    """Per attempt: the HTTP read timeout, or transformers' `max_time`."""
    max_retries: int = 3
    """Retries after the first attempt, on retryable errors only (throttling, 5xx, timeouts)."""
    backoff_s: float = 1.0
    """The first retry waits up to this long (full jitter); the bound doubles with each retry."""
    backoff_max_s: float = 30.0
    """Cap on any single wait, a server's Retry-After included."""

    def __post_init__(self):
        if not self.timeout_s > 0:
            raise ValueError(f"CallPolicy.timeout_s must be > 0, got {self.timeout_s}")
        for name in ("max_retries", "backoff_s", "backoff_max_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"CallPolicy.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Pricing:
    """USD per million tokens; cost of a call = (in * input + out * output) / 1e6."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def __post_init__(self):
        if self.input_per_mtok < 0 or self.output_per_mtok < 0:
            raise ValueError(f"Pricing must not be negative, got {self}")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True)
class Completion:
    """One successful call."""

    text: str
    model: str
    """The client's `model_id`: recorded on every trace row for lineage."""
    input_tokens: int
    output_tokens: int
    latency_s: float
    """Wall time of the successful attempt (of the whole batch, for a batched in-process call)."""
    cost_usd: float
    attempts: int
    """1 + retries used."""
    finish_reason: str | None
    """"stop" (end of turn or stop sequence), "length" (max_tokens), "time" (transformers' timeout),
    or a backend's own reason where it has no equivalent."""


class ModelClientError(RuntimeError):
    """A call that failed for good (non-retryable, or retries exhausted). The message names the model
    id, the attempt count and the last cause; `attempts` and `cause` keep them for accounting."""

    def __init__(self, message: str, attempts: int, cause: BaseException | None = None):
        super().__init__(message)
        self.attempts = attempts
        self.cause = cause


def with_retries(call: Callable[[], T], policy: CallPolicy, retryable: Callable[[BaseException], bool],
                 describe: str, sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random) -> tuple[T, int]:
    """Run `call` with exponential backoff and full jitter; return (result, attempts).

    Retry k (1-based) waits `rng() * min(backoff_max_s, backoff_s * 2**(k-1))`: full jitter keeps
    many throttled callers from retrying in lockstep. An error with a `retry_after_s` attribute (a
    server's Retry-After) waits that long instead, still capped by `backoff_max_s`. Raises
    `ModelClientError` naming `describe` (the model id) when an error is not retryable or the retries
    are spent.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return call(), attempt
        except Exception as error:  # KeyboardInterrupt and SystemExit are never swallowed
            is_retryable = retryable(error)
            if not is_retryable or attempt > policy.max_retries:
                verdict = "retries exhausted" if is_retryable else "not retryable"
                raise ModelClientError(
                    f"{describe}: call failed after {attempt} attempt(s) ({verdict}): "
                    f"{type(error).__name__}: {error}", attempts=attempt, cause=error,
                ) from error
            retry_after = getattr(error, "retry_after_s", None)
            if retry_after is not None:
                wait = min(float(retry_after), policy.backoff_max_s)
            else:
                wait = rng() * min(policy.backoff_max_s, policy.backoff_s * 2 ** (attempt - 1))
            sleep(wait)


class ModelClient(ABC):
    """A chat model behind one interface: in-process transformers, an OpenAI-compatible server, or
    Amazon Bedrock. `messages` are OpenAI-style dicts: {"role": "system"|"user"|"assistant",
    "content": str}."""

    model_id: str
    """Backend and model, e.g. "transformers:smollm2-135m-instruct@<fingerprint>",
    "openai:<base_url>#<model>", "bedrock:<modelId>"."""
    pricing: Pricing
    policy: CallPolicy

    @abstractmethod
    def complete(self, messages: list[dict], params: GenerationParams = GenerationParams()) -> Completion:
        """One completion; raises `ModelClientError` when the call fails for good."""

    def complete_batch(self, conversations: list[list[dict]], params: GenerationParams = GenerationParams()
                       ) -> list[Completion | ModelClientError]:
        """One result per conversation, in order; a failed call is returned as its error, never
        raised, so one bad call does not lose a batch. Default: sequential `complete()`."""
        return [_result_or_error(self.complete, messages, params) for messages in conversations]

    def close(self) -> None:
        """Release the model or connections; the default holds nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r})"


def _result_or_error(complete, messages, params) -> Completion | ModelClientError:
    try:
        return complete(messages, params)
    except ModelClientError as error:
        return error


def concurrent_batch(client: ModelClient, conversations: list[list[dict]], params: GenerationParams,
                     max_concurrency: int) -> list[Completion | ModelClientError]:
    """`complete_batch` for remote backends: up to `max_concurrency` calls in flight, order kept."""
    if not conversations:
        return []
    workers = min(max_concurrency, len(conversations))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model-client") as pool:
        return list(pool.map(lambda messages: _result_or_error(client.complete, messages, params),
                             conversations))


def check_messages(messages: list[dict], model_id: str) -> None:
    """Fail before any network or GPU time is spent on a conversation no backend accepts."""
    if not messages:
        raise ModelClientError(f"{model_id}: empty conversation", attempts=0)
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "user", "assistant") or not isinstance(message.get("content"), str):
            raise ModelClientError(
                f"{model_id}: message {index} must be {{'role': 'system'|'user'|'assistant', "
                f"'content': str}}, got {message!r}", attempts=0,
            )
