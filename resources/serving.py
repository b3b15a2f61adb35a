"""`ServingResource`: the server that serves the tiers' approved adapters (embedded or vLLM)."""

from __future__ import annotations

from typing import Literal

from dagster import ConfigurableResource
from pydantic import Field

from srl_platform.serving_backends import EmbeddedServing, ServingBackend, VLLMServing


class ServingResource(ConfigurableResource):
    """Where `served_adapters` deploys the serving manifest: the embedded server (`srl serve`, the
    default) or a vLLM server started with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`.
    Either way it is a running server this resource connects to; it starts nothing."""

    kind: Literal["embedded", "vllm"] = Field(
        default="embedded", description="embedded: srl_platform.serving_server (atomic in-place swaps); "
                                        "vllm: unload then load, requests in the gap retried.")
    url: str = Field(default="http://127.0.0.1:8000", description="The server's root URL (the API is under /v1).")
    max_lora_rank: int = Field(default=16, ge=1,
                               description="The server's --max-lora-rank: a wider adapter is refused before "
                                           "anything is unloaded.")
    adapter_dir: str = Field(
        default=".state/serving/adapters",
        description="Where approved adapters are downloaded from the artefact store, one directory per "
                    "tier and version; the server reads them there, so it must see this path (same host "
                    "or a shared volume).")
    swap_grace_s: float = Field(default=10.0, ge=0,
                                description="How long a request that finds its tier between an unload and "
                                            "a load is retried (vLLM swaps).")
    readiness_timeout_s: float = Field(default=60.0, gt=0,
                                       description="How long a loaded adapter may take to be listed and answer.")

    def backend(self) -> ServingBackend:
        cls = VLLMServing if self.kind == "vllm" else EmbeddedServing
        return cls(self.url, max_lora_rank=self.max_lora_rank, swap_grace_s=self.swap_grace_s,
                   readiness_timeout_s=self.readiness_timeout_s)
