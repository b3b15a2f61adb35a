"""Serving backends: the adapters a tier serves, behind one interface, whatever runs them.

`ServingBackend` has three operations: what is loaded (served name → adapter directory), `swap` a
name to a new adapter, and `complete` a chat on a served name. Two implementations, both clients of
vLLM's OpenAI-compatible API:

- `VLLMServing`: a vLLM server started with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`
  (production). A swap is `/v1/unload_lora_adapter` then `/v1/load_lora_adapter` under the same name.
  Between the two the name does not exist and vLLM answers 404 to a new request for it, so
  `complete()` retries a 404 for up to `swap_grace_s` seconds: a request that lands in the gap waits
  for the load instead of failing (requests already running in vLLM keep their adapter and finish).
- `EmbeddedServing`: `srl_platform.serving_server` (the embedded default; `srl serve`, or
  `serving_process.embedded_server` for a scoped one). A swap is one `load_lora_adapter` with
  `load_inplace`: the server builds the new merged model, then points the name at it atomically, so
  there is no gap at all.

Both validate the adapter's rank (`adapter_config.json`: `r` and `rank_pattern`) against
`max_lora_rank` before anything on the server changes, and check readiness after a load: the name is
listed in `/v1/models` with the new directory as its root, and a 1-token completion answers. When the
load or the readiness check fails, the previous adapter is put back (vLLM) or was never replaced
(embedded) and `SwapFailed` says what is serving now.

The adapter directory is read twice: here for the rank, and by the server for the weights, so it must
be a path both can read (the same host, or a shared volume).

`sync_manifest` deploys each tier's approved version of the serving manifest (`serving.build_manifest`)
that is not loaded yet, and reports per tier: deployed, unchanged, skipped (nothing approved), or failed
(with the reason; the previous adapter keeps serving).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from srl_platform.clients.base import (
    CallPolicy,
    GenerationParams,
    ModelClientError,
    check_messages,
    with_retries,
)
from srl_platform.clients.openai_client import (
    BODY_EXCERPT,
    HTTPStatusError,
    _retry_after_seconds,
    is_retryable,
)
from srl_platform.serving import version_label
from srl_platform.serving_server import adapter_rank

PROBE_MESSAGES = [{"role": "user", "content": "ping"}]
PROBE_PARAMS = GenerationParams(max_tokens=1, temperature=0.0)


class ServingError(RuntimeError):
    """A serving operation that did not happen."""


class ServingUnavailable(ServingError):
    """The server could not be reached (refused, timed out, or not started)."""


class AdapterRejected(ServingError):
    """The adapter was refused before anything on the server changed (rank, missing config)."""


class SwapFailed(ServingError):
    """A load or its readiness check failed. `serving` is the adapter directory the name serves now
    (the previous one, put back), or None when nothing serves it."""

    def __init__(self, message: str, serving: str | None):
        super().__init__(message)
        self.serving = serving


@dataclass(frozen=True)
class ServedCompletion:
    """One answered chat request."""

    text: str
    model: str
    """The served name the request was sent to."""
    system_fingerprint: str | None
    """Which model answered: the embedded server sends `{name}-{weights hash}`; vLLM may send none."""
    input_tokens: int
    output_tokens: int
    finish_reason: str | None
    latency_s: float
    """Wall time of the successful attempt."""
    attempts: int
    """1 + retries (throttling, 5xx, connection errors)."""
    swap_wait_s: float
    """Seconds spent retrying 404s while the name was between an unload and a load."""


@dataclass(frozen=True)
class Swap:
    """A completed swap."""

    name: str
    version: str
    adapter_dir: str
    previous_dir: str | None
    seconds: float


class ServingBackend(Protocol):
    base_url: str

    def loaded(self) -> dict[str, str]:
        """Served adapter name → adapter directory (the `root` of its `/v1/models` card)."""

    def swap(self, name: str, adapter_dir: str | Path, version: str) -> Swap:
        """Serve `adapter_dir` under `name` (loaded or not); raise `AdapterRejected`/`SwapFailed`
        with the previous adapter still serving."""

    def complete(self, name: str, messages: list[dict],
                 params: GenerationParams = GenerationParams()) -> ServedCompletion: ...


class _OpenAICompatibleServing:
    """What both backends share: the HTTP calls, `/v1/models`, completions and the readiness check."""

    kind = "openai-compatible"

    def __init__(self, base_url: str, *, max_lora_rank: int = 16, policy: CallPolicy = CallPolicy(max_retries=2),
                 swap_grace_s: float = 10.0, readiness_timeout_s: float = 60.0, admin_timeout_s: float = 600.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"{type(self).__name__}.base_url must start with http:// or https://, got {base_url!r}")
        if max_lora_rank < 1:
            raise ValueError(f"{type(self).__name__}.max_lora_rank must be >= 1, got {max_lora_rank}")
        root = base_url.rstrip("/")
        self.base_url = root.removesuffix("/v1")
        """The server root; the API is under `{base_url}/v1`."""
        self.max_lora_rank = max_lora_rank
        self.policy = policy
        self.swap_grace_s = swap_grace_s
        self.readiness_timeout_s = readiness_timeout_s
        self.admin_timeout_s = admin_timeout_s
        """Loads merge or copy weights: they may take much longer than a completion."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    # --- HTTP ---------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict | None, timeout_s: float) -> str:
        url = f"{self.base_url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as error:
            raise HTTPStatusError(url, error.code, error.read().decode("utf-8", errors="replace"),
                                  _retry_after_seconds(error.headers.get("Retry-After"))) from None

    def _admin(self, method: str, path: str, body: dict | None = None, timeout_s: float | None = None) -> str:
        """A management call: not retried (a load is not idempotent); unreachable → ServingUnavailable."""
        try:
            return self._call(method, path, body, timeout_s or self.admin_timeout_s)
        except HTTPStatusError:
            raise
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
            raise ServingUnavailable(f"{self.kind} server at {self.base_url} is unreachable ({method} {path}): "
                                     f"{type(error).__name__}: {error}") from None

    def health(self) -> bool:
        try:
            self._admin("GET", "/health", timeout_s=5)
            return True
        except (ServingUnavailable, HTTPStatusError):
            return False

    def models(self) -> list[dict]:
        """The `/v1/models` cards."""
        answer = json.loads(self._admin("GET", "/v1/models", timeout_s=30))
        return answer.get("data") or []

    def loaded(self) -> dict[str, str]:
        return {card["id"]: card.get("root") for card in self.models() if card.get("parent")}

    # --- completions --------------------------------------------------------------------------
    def complete(self, name: str, messages: list[dict],
                 params: GenerationParams = GenerationParams()) -> ServedCompletion:
        return self._complete(name, messages, params, self.swap_grace_s, self.policy)

    def _complete(self, name: str, messages: list[dict], params: GenerationParams, grace_s: float,
                  policy: CallPolicy) -> ServedCompletion:
        describe = f"{self.kind}:{self.base_url}#{name}"
        check_messages(messages, describe)
        body = {"model": name, "messages": messages, "max_tokens": params.max_tokens,
                "temperature": params.temperature, "top_p": params.top_p}
        if params.seed is not None:
            body["seed"] = params.seed
        waited = 0.0

        def post() -> tuple[dict, float]:
            nonlocal waited
            while True:
                started = time.perf_counter()
                try:
                    raw = self._call("POST", "/v1/chat/completions", body, policy.timeout_s)
                    return json.loads(raw), time.perf_counter() - started
                except HTTPStatusError as error:
                    # 404: the name is between an unload and a load (vLLM's hot swap); wait for it.
                    if error.status != 404 or waited >= grace_s:
                        raise
                time.sleep(0.05)
                waited += time.perf_counter() - started

        (answer, latency), attempts = with_retries(post, policy, is_retryable, describe=describe)
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as error:
            raise ModelClientError(f"{describe}: answer has no choices[0].message.content: "
                                   f"{json.dumps(answer)[:BODY_EXCERPT]}", attempts=attempts, cause=error) from error
        usage = answer.get("usage") or {}
        return ServedCompletion(text=text, model=name, system_fingerprint=answer.get("system_fingerprint"),
                                input_tokens=int(usage.get("prompt_tokens") or 0),
                                output_tokens=int(usage.get("completion_tokens") or 0),
                                finish_reason=choice.get("finish_reason"), latency_s=latency,
                                attempts=attempts, swap_wait_s=round(waited, 3))

    # --- swaps --------------------------------------------------------------------------------
    def _check_rank(self, name: str, adapter_dir: str) -> None:
        try:
            rank = adapter_rank(Path(adapter_dir))
        except (FileNotFoundError, ValueError) as error:
            raise AdapterRejected(f"{name}: adapter {adapter_dir} rejected before loading: {error}") from None
        if rank > self.max_lora_rank:
            raise AdapterRejected(f"{name}: adapter {adapter_dir} has LoRA rank {rank}, above the server's "
                                  f"max_lora_rank {self.max_lora_rank}: retrain with r <= {self.max_lora_rank} "
                                  f"or restart the server with --max-lora-rank >= {rank}; nothing was changed")

    def _load(self, name: str, adapter_dir: str, load_inplace: bool = False) -> None:
        body = {"lora_name": name, "lora_path": adapter_dir, **({"load_inplace": True} if load_inplace else {})}
        self._admin("POST", "/v1/load_lora_adapter", body)

    def _unload(self, name: str) -> None:
        try:
            self._admin("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        except HTTPStatusError as error:
            if error.status != 404:  # 404: not loaded, which is what an unload wants
                raise

    def _wait_ready(self, name: str, adapter_dir: str) -> None:
        """Listed in `/v1/models` with `adapter_dir` as its root, and a 1-token completion answers."""
        deadline = time.monotonic() + self.readiness_timeout_s
        single = CallPolicy(timeout_s=self.policy.timeout_s, max_retries=0)
        while True:
            try:
                root = self.loaded().get(name)
                if root == adapter_dir:
                    self._complete(name, PROBE_MESSAGES, PROBE_PARAMS, 0.0, single)
                    return
                problem = f"/v1/models lists {name!r} with root {root!r}, expected {adapter_dir!r}"
            except (ServingError, ModelClientError, HTTPStatusError) as error:
                problem = str(error)
            if time.monotonic() >= deadline:
                raise ServingError(f"{name} not ready after {self.readiness_timeout_s:g} s: {problem}")
            time.sleep(0.2)


def _reason(error: BaseException) -> str:
    """The server's own message (vLLM's error body), else the exception's."""
    if isinstance(error, HTTPStatusError):
        try:
            body = json.loads(error.body)
            message = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) \
                else body.get("message")
            return f"HTTP {error.status}: {message or error.body[:BODY_EXCERPT]}"
        except (json.JSONDecodeError, AttributeError):
            return f"HTTP {error.status}: {error.body[:BODY_EXCERPT]}"
    return str(error)


class VLLMServing(_OpenAICompatibleServing):
    """A vLLM server with runtime LoRA updating; hot swap = unload then load under the same name."""

    kind = "vllm"

    def swap(self, name: str, adapter_dir: str | Path, version: str) -> Swap:
        adapter_dir = str(adapter_dir)
        self._check_rank(name, adapter_dir)
        previous = self.loaded().get(name)
        started = time.monotonic()
        try:
            if previous is not None:
                self._unload(name)
            self._load(name, adapter_dir)
            self._wait_ready(name, adapter_dir)
        except ServingUnavailable:
            raise
        except (ServingError, HTTPStatusError) as error:
            serving, restored = self._restore(name, previous)
            raise SwapFailed(f"{name}: loading {version} from {adapter_dir} failed: {_reason(error)}; {restored}",
                             serving) from None
        return Swap(name, version, adapter_dir, previous, round(time.monotonic() - started, 3))

    def _restore(self, name: str, previous: str | None) -> tuple[str | None, str]:
        try:
            self._unload(name)
            if previous is None:
                return None, f"no adapter served {name} before, so it serves nothing"
            self._load(name, previous)
            self._wait_ready(name, previous)
            return previous, f"the previous adapter {previous} is serving {name} again"
        except (ServingError, HTTPStatusError) as error:
            return None, (f"putting back the previous adapter {previous} also failed ({_reason(error)}): "
                          f"{name} serves nothing")


class EmbeddedServing(_OpenAICompatibleServing):
    """`srl_platform.serving_server`: a swap is one in-place load, atomic on the server."""

    kind = "embedded"

    def swap(self, name: str, adapter_dir: str | Path, version: str) -> Swap:
        adapter_dir = str(adapter_dir)
        self._check_rank(name, adapter_dir)
        previous = self.loaded().get(name)
        started = time.monotonic()
        try:
            self._load(name, adapter_dir, load_inplace=previous is not None)
        except HTTPStatusError as error:
            kept = f"the previous adapter {previous} is still serving {name}" if previous else \
                f"{name} serves nothing (it served nothing before)"
            raise SwapFailed(f"{name}: loading {version} from {adapter_dir} failed: {_reason(error)}; {kept}",
                             previous) from None
        try:
            self._wait_ready(name, adapter_dir)
        except ServingError as error:
            serving, restored = self._restore(name, previous)
            raise SwapFailed(f"{name}: {version} from {adapter_dir} loaded but is not ready: {error}; {restored}",
                             serving) from None
        return Swap(name, version, adapter_dir, previous, round(time.monotonic() - started, 3))

    def _restore(self, name: str, previous: str | None) -> tuple[str | None, str]:
        try:
            if previous is None:
                self._unload(name)
                return None, f"no adapter served {name} before, so it serves nothing"
            self._load(name, previous, load_inplace=True)
            return previous, f"the previous adapter {previous} is serving {name} again"
        except (ServingError, HTTPStatusError) as error:
            return None, f"putting back {previous} also failed ({_reason(error)})"


# --- the serving manifest ---------------------------------------------------------------------------
OutcomeStatus = Literal["deployed", "unchanged", "skipped", "failed"]


@dataclass(frozen=True)
class TierOutcome:
    """What `sync_manifest` did for one tier."""

    tier: str
    status: OutcomeStatus
    """deployed (swapped to the approved version), unchanged (already serving it), skipped (no approved
    version: whatever served the tier is left as it is), failed (the previous adapter keeps serving)."""
    version: str | None
    """The manifest's approved version, e.g. "v3"."""
    adapter_dir: str | None
    """Where that version was fetched to (None when it could not be)."""
    serving: str | None
    """The adapter directory the tier serves after the sync."""
    reason: str
    seconds: float = 0.0


def sync_manifest(backend: ServingBackend, manifest: Mapping,
                  resolve_adapter_dir: Callable[[str, dict], str | Path]) -> list[TierOutcome]:
    """Deploy every tier's approved `serving_version` that the backend does not serve yet.

    `resolve_adapter_dir(tier, entry)` turns a manifest entry into a directory the server can read
    (e.g. downloads `entry["adapter_uri"]`); it should return the same path for the same version, which
    is how an already-served version is recognised (`/v1/models` roots). A failure to fetch or load one
    tier is reported and does not stop the others; an unreachable server raises `ServingUnavailable`.
    """
    tiers = manifest.get("tiers") if isinstance(manifest, Mapping) else None
    if not isinstance(tiers, Mapping):
        raise ValueError(f"serving manifest: field 'tiers' must map tier → entry, got {tiers!r}")
    loaded = backend.loaded()
    outcomes = []
    for tier, entry in tiers.items():
        version = entry.get("serving_version")
        current = loaded.get(tier)
        if version is None:
            outcomes.append(TierOutcome(tier, "skipped", None, None, current,
                                        entry.get("reason") or "no approved version"))
            continue
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"serving manifest: tiers[{tier!r}].serving_version must be an integer, got {version!r}")
        label = version_label(version)
        kept = f"{current} keeps serving" if current else "the tier serves nothing"
        try:
            adapter_dir = str(resolve_adapter_dir(tier, entry))
        except Exception as error:  # a download problem of one tier must not stop the others
            outcomes.append(TierOutcome(tier, "failed", label, None, current,
                                        f"could not fetch {entry.get('adapter_uri')!r}: {type(error).__name__}: "
                                        f"{error}; {kept}"))
            continue
        if current == adapter_dir:
            outcomes.append(TierOutcome(tier, "unchanged", label, adapter_dir, current, f"already serving {label}"))
            continue
        try:
            swap = backend.swap(tier, adapter_dir, label)
        except ServingUnavailable:
            raise
        except AdapterRejected as error:
            outcomes.append(TierOutcome(tier, "failed", label, adapter_dir, current, f"{error}; {kept}"))
            continue
        except SwapFailed as error:
            outcomes.append(TierOutcome(tier, "failed", label, adapter_dir, error.serving, str(error)))
            continue
        outcomes.append(TierOutcome(tier, "deployed", label, adapter_dir, adapter_dir,
                                    f"swapped from {swap.previous_dir or 'nothing'} in {swap.seconds:.2f} s",
                                    swap.seconds))
    return outcomes
