"""Model clients: one interface (`ModelClient`) for the models the platform calls as teachers, judges
and policies — in-process transformers (the embedded default), any OpenAI-compatible server, and
Amazon Bedrock — with retries, timeouts and per-call token/cost accounting.

Backends import their heavy dependencies (torch, boto3) only when used.
"""

from srl_platform.clients.base import (
    CallPolicy,
    Completion,
    GenerationParams,
    ModelClient,
    ModelClientError,
    Pricing,
    with_retries,
)
from srl_platform.clients.bedrock_client import BedrockClient
from srl_platform.clients.openai_client import OpenAIClient
from srl_platform.clients.spec import ClientSpec
from srl_platform.clients.transformers_client import TransformersClient
from srl_platform.clients.usage import UsageLedger

__all__ = [
    "BedrockClient", "CallPolicy", "ClientSpec", "Completion", "GenerationParams", "ModelClient",
    "ModelClientError", "OpenAIClient", "Pricing", "TransformersClient", "UsageLedger", "with_retries",
]
