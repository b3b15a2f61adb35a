"""A model client named by one string, so configs, CLIs and Dagster resources can say which model
answers: `KIND:TARGET?option=value&...`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal
from urllib.parse import parse_qsl, urlencode

from srl_platform.clients.base import CallPolicy, ModelClient, Pricing
from srl_platform.clients.bedrock_client import BedrockClient
from srl_platform.clients.openai_client import OpenAIClient
from srl_platform.clients.transformers_client import TransformersClient

ClientKind = Literal["transformers", "openai", "bedrock"]

# Options each kind accepts besides the shared pricing / policy ones.
KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "transformers": ("adapter", "dtype", "batch_size"),
    "openai": ("model", "api_key_env", "max_concurrency"),
    "bedrock": ("region", "endpoint_url", "max_concurrency"),
}
PRICING_OPTIONS = tuple(f.name for f in fields(Pricing))
POLICY_OPTIONS = tuple(f.name for f in fields(CallPolicy))


@dataclass(frozen=True)
class ClientSpec:
    """Which client to build, written as a string:

      "transformers:smollm2-135m-instruct"
      "transformers:/path/model?adapter=/path/adapter&dtype=float32"
      "openai:http://127.0.0.1:8000/v1?model=NAME&api_key_env=VAR"
      "bedrock:anthropic.claude-3-5-haiku-20241022-v1:0?region=us-east-1"

    Any kind also takes the `Pricing` fields (`input_per_mtok`, `output_per_mtok`) and the
    `CallPolicy` fields (`timeout_s`, `max_retries`, `backoff_s`, `backoff_max_s`) as options.
    `str(spec)` writes the canonical string back (default options left out), and parses to an
    equal spec. The target is everything between the first ":" and the first "?", so a Bedrock model
    id keeps its ":0" and an OpenAI base URL cannot carry a query string of its own. Option values
    are URL-encoded ("+" reads as a space: write %2B).
    """

    kind: ClientKind
    target: str
    """Model name or directory (transformers), base URL (openai), or modelId (bedrock)."""
    adapter: str | None = None
    """transformers: LoRA adapter directory merged into the base model."""
    dtype: str = "bfloat16"
    """transformers: weights' dtype for generation."""
    batch_size: int = 8
    """transformers: prompts generated together."""
    model: str | None = None
    """openai: the served model's name (required)."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai: environment variable holding the API key (unset variable: no key sent)."""
    region: str | None = None
    """bedrock: AWS region (default: the environment's)."""
    endpoint_url: str | None = None
    """bedrock: endpoint override (VPC endpoint, loopback test server)."""
    max_concurrency: int = 4
    """openai, bedrock: calls in flight in `complete_batch`."""
    pricing: Pricing = Pricing()
    policy: CallPolicy = CallPolicy()

    def __post_init__(self):
        if self.kind not in KIND_OPTIONS:
            raise ValueError(f"client kind {self.kind!r} is not one of {', '.join(KIND_OPTIONS)}")
        if not self.target:
            raise ValueError(f"{self.kind} client spec has an empty target (model, URL or model id)")
        for name in {o for options in KIND_OPTIONS.values() for o in options} - set(KIND_OPTIONS[self.kind]):
            if getattr(self, name) != _default(name):
                raise ValueError(f"option {name}={getattr(self, name)!r} does not apply to a {self.kind} "
                                 f"client (its options: {', '.join(KIND_OPTIONS[self.kind])})")
        if self.kind == "openai":
            if not self.target.startswith(("http://", "https://")):
                raise ValueError(f"openai client target must be a base URL like "
                                 f"http://127.0.0.1:8000/v1, got {self.target!r}")
            if not self.model:
                raise ValueError(f"openai client spec for {self.target} needs ?model=NAME")

    @classmethod
    def parse(cls, text: str) -> ClientSpec:
        kind, sep, rest = text.partition(":")
        if not sep or kind not in KIND_OPTIONS:
            raise ValueError(f"client spec {text!r} must start with one of "
                             f"{', '.join(k + ':' for k in KIND_OPTIONS)}")
        target, _, query = rest.partition("?")
        allowed = KIND_OPTIONS[kind] + PRICING_OPTIONS + POLICY_OPTIONS
        options: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key not in allowed:
                raise ValueError(f"client spec {text!r}: unknown option {key!r} for {kind} "
                                 f"(allowed: {', '.join(allowed)})")
            if key in options:
                raise ValueError(f"client spec {text!r}: option {key!r} given twice")
            if not value:
                raise ValueError(f"client spec {text!r}: option {key!r} has no value")
            options[key] = value
        typed = {key: _typed(text, key, value) for key, value in options.items()}
        return cls(kind=kind, target=target,
                   pricing=Pricing(**{k: typed.pop(k) for k in PRICING_OPTIONS if k in typed}),
                   policy=CallPolicy(**{k: typed.pop(k) for k in POLICY_OPTIONS if k in typed}),
                   **typed)

    def __str__(self) -> str:
        options = {name: getattr(self, name) for name in KIND_OPTIONS[self.kind]
                   if getattr(self, name) != _default(name)}
        for group, names in ((self.pricing, PRICING_OPTIONS), (self.policy, POLICY_OPTIONS)):
            baseline = type(group)()
            options.update({n: getattr(group, n) for n in names if getattr(group, n) != getattr(baseline, n)})
        query = urlencode(options, safe="/:")
        return f"{self.kind}:{self.target}" + (f"?{query}" if query else "")

    def build(self) -> ModelClient:
        """The client this spec names (a transformers model loads on its first call, not here)."""
        if self.kind == "transformers":
            return TransformersClient(self.target, self.adapter, dtype=self.dtype, batch_size=self.batch_size,
                                      pricing=self.pricing, policy=self.policy)
        if self.kind == "openai":
            return OpenAIClient(self.target, self.model, api_key_env=self.api_key_env,
                                max_concurrency=self.max_concurrency, pricing=self.pricing, policy=self.policy)
        return BedrockClient(self.target, region=self.region, endpoint_url=self.endpoint_url,
                             max_concurrency=self.max_concurrency, pricing=self.pricing, policy=self.policy)


def _default(name: str):
    return ClientSpec.__dataclass_fields__[name].default


_INT_OPTIONS = {"batch_size", "max_concurrency", "max_retries"}
_FLOAT_OPTIONS = set(PRICING_OPTIONS) | (set(POLICY_OPTIONS) - _INT_OPTIONS)


def _typed(text: str, key: str, value: str):
    try:
        if key in _INT_OPTIONS:
            return int(value)
        if key in _FLOAT_OPTIONS:
            return float(value)
    except ValueError:
        kind = "an integer" if key in _INT_OPTIONS else "a number"
        raise ValueError(f"client spec {text!r}: option {key}={value!r} must be {kind}") from None
    return value
