"""The embedded default client: a transformers model in this process, batched on CPU or GPU."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from srl_platform.clients.base import (
    CallPolicy,
    Completion,
    GenerationParams,
    ModelClient,
    ModelClientError,
    Pricing,
    check_messages,
    with_retries,
)
from srl_platform.models import DEFAULT_BASE_MODEL, fingerprint, sha256_file


def _adapter_digest(adapter: str) -> str:
    """Identity of a LoRA adapter directory's files, so two adapters never share a model id."""
    directory = Path(adapter)
    if not (directory / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter {adapter!r} is not a PEFT adapter directory "
                                "(no adapter_config.json)")
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()}
    return hashlib.sha256(repr(sorted(files.items())).encode("utf-8")).hexdigest()[:12]


class TransformersClient(ModelClient):
    """A base model (catalogue name or Hugging Face directory), optionally with a LoRA adapter
    merged in, loaded with `srl_platform.evaluate.load_policy_model` on the first call.

    - `complete_batch` renders each conversation with the model's chat template and generates
      `batch_size` prompts at a time, left-padded.
    - temperature 0 is greedy; otherwise sampling. With `params.seed`, a whole `complete_batch` is
      reproducible for the same conversations, `batch_size` and seed; the seed is applied inside
      `torch.random.fork_rng`, so the caller's global RNG (a training loop's) is left untouched.
    - Timeout: `generate(max_time=policy.timeout_s)`. transformers does not raise at the deadline:
      it stops and returns what it has, reported as finish_reason "time". No error is retried:
      in-process failures (out of memory, a bad template) do not go away on their own.
    - Token counts are exact: prompt tokens from the tokenizer, output tokens as generated, the
      end-of-sequence token included (it was computed, as a hosted API would bill it).
    - Pricing defaults to zero: the cost of local compute is not per token.
    """

    def __init__(self, base_model: str = DEFAULT_BASE_MODEL, adapter: str | None = None, *,
                 dtype: str = "bfloat16", batch_size: int = 8, pricing: Pricing = Pricing(),
                 policy: CallPolicy = CallPolicy()):
        if batch_size < 1:
            raise ValueError(f"TransformersClient.batch_size must be >= 1, got {batch_size}")
        self.base_model = base_model
        self.adapter = adapter
        self.dtype = dtype
        self.batch_size = batch_size
        self.pricing = pricing
        self.policy = policy
        # Resolving the identity now fails fast on a missing model, before any call is planned.
        self.model_id = f"transformers:{base_model}@{fingerprint(base_model)[:12]}"
        if adapter:
            self.model_id += f"+adapter@{_adapter_digest(adapter)}"
        self._lock = threading.Lock()  # one generate at a time: the model and RNG are shared
        self._tokenizer = None
        self._model = None

    def _loaded(self):
        if self._model is None:
            from srl_platform.evaluate import load_policy_model

            tokenizer, model = load_policy_model(self.base_model, self.adapter, self.dtype)
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token  # left padding needs some pad token
            self._tokenizer, self._model = tokenizer, model
        return self._tokenizer, self._model

    def complete(self, messages: list[dict], params: GenerationParams = GenerationParams()) -> Completion:
        result = self.complete_batch([messages], params)[0]
        if isinstance(result, ModelClientError):
            raise result
        return result

    def complete_batch(self, conversations: list[list[dict]], params: GenerationParams = GenerationParams()
                       ) -> list[Completion | ModelClientError]:
        if not conversations:  # nothing to generate: do not load the model for it
            return []
        import torch

        results: list[Completion | ModelClientError | None] = [None] * len(conversations)
        with self._lock:
            try:
                tokenizer, model = self._loaded()
            except Exception as error:  # a model that cannot load fails every call, not the caller
                failure = ModelClientError(f"{self.model_id}: cannot load the model: {error}",
                                           attempts=1, cause=error)
                return [failure] * len(conversations)
            prompts = self._render(tokenizer, conversations, results)
            # fork_rng: the seed must not reset the caller's RNG stream (a training loop's).
            with torch.random.fork_rng():
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                for start in range(0, len(prompts), self.batch_size):
                    chunk = prompts[start : start + self.batch_size]
                    try:
                        rows, attempts = with_retries(
                            lambda: self._generate(tokenizer, model, [text for _, text in chunk], params),
                            self.policy, retryable=lambda error: False, describe=self.model_id)
                    except ModelClientError as error:
                        for index, _ in chunk:
                            results[index] = error
                        continue
                    for (index, _), row in zip(chunk, rows):
                        results[index] = Completion(
                            model=self.model_id, attempts=attempts,
                            cost_usd=self.pricing.cost(row["input_tokens"], row["output_tokens"]), **row)
        return results

    def _render(self, tokenizer, conversations: list[list[dict]],
                results: list) -> list[tuple[int, str]]:
        """(index, prompt text) of each renderable conversation; the others get their error in
        `results`, so one bad conversation fails alone, not the batch."""
        from srl_platform.prompts import render

        prompts = []
        for index, messages in enumerate(conversations):
            try:
                check_messages(messages, self.model_id)
                prompts.append((index, render(tokenizer, messages)))
            except ModelClientError as error:
                results[index] = error
            except Exception as error:  # e.g. a chat template that rejects the role order
                results[index] = ModelClientError(
                    f"{self.model_id}: conversation {index} cannot be rendered: {error}",
                    attempts=0, cause=error)
        return prompts

    def _generate(self, tokenizer, model, texts: list[str], params: GenerationParams) -> list[dict]:
        import torch

        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        sampling = {"do_sample": False}
        if params.temperature > 0:
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=params.max_tokens, max_time=self.policy.timeout_s,
                                 pad_token_id=tokenizer.pad_token_id, **sampling)
        latency = time.perf_counter() - started
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        rows = []
        for prompt_mask, generated in zip(enc["attention_mask"], out[:, enc["input_ids"].shape[1]:].tolist()):
            # A finished row is followed by padding; the first end-of-sequence token ends it.
            end = next((i for i, token in enumerate(generated) if token in eos_ids), None)
            if end is not None:
                ids, reason = generated[:end], "stop"
                output_tokens = end + 1
            else:
                ids = generated
                output_tokens = len(ids)
                reason = "length" if output_tokens >= params.max_tokens else "time"
            rows.append({"text": tokenizer.decode(ids, skip_special_tokens=True),
                         "input_tokens": int(prompt_mask.sum()), "output_tokens": output_tokens,
                         "latency_s": latency, "finish_reason": reason})
        return rows

    def close(self) -> None:
        with self._lock:
            self._tokenizer = self._model = None
