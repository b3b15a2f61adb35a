"""`CollaborationModels`: the proposer, solver and judge models of trace generation, by client spec."""

from __future__ import annotations

import json
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from srl_platform.clients import ClientSpec, ModelClient, TransformersClient
from srl_platform.models import DEFAULT_BASE_MODEL
from srl_platform.storage import ArtifactStoreClient, get_dir
from srl_platform.tiers import ADAPTER_WEIGHTS, adapter_key

TIER_PREFIX = "tier:"


class CollaborationModels(ConfigurableResource):
    """Which models propose, solve and judge. Each is a client spec (`srl_platform.clients.ClientSpec`):
    `transformers:<model or path>[?adapter=…]` in process, `openai:<base_url>?model=…` for vLLM,
    `transformers serve` or a paid provider, `bedrock:<modelId>?region=…`; or `tier:<name>`, the
    latest SRL→RLVR adapter of that tier from the artefact store (its base model when there is none
    yet). The embedded default is SmolLM2 in every role, with the bronze tier solving."""

    proposer: str = Field(default=f"transformers:{DEFAULT_BASE_MODEL}",
                          description="Writes new problems, steered by the weakness profile.")
    solver: str = Field(default=f"{TIER_PREFIX}bronze",
                        description="Writes step-by-step solutions: the strongest model available.")
    judge: str | None = Field(default=None,
                              description="Optional: scores the step quality of verified solutions.")

    def open(self, store: ArtifactStoreClient, workdir: Path, log=lambda message: None
             ) -> dict[str, ModelClient | None]:
        """The role → client map; identical specs share one client (one model in memory)."""
        clients: dict[str, ModelClient] = {}
        roles: dict[str, ModelClient | None] = {}
        for role, spec in (("proposer", self.proposer), ("solver", self.solver), ("judge", self.judge)):
            if spec is None:
                roles[role] = None
                continue
            if spec not in clients:
                clients[spec] = (_tier_client(spec[len(TIER_PREFIX):], store, workdir, log)
                                 if spec.startswith(TIER_PREFIX) else ClientSpec.parse(spec).build())
            roles[role] = clients[spec]
        return roles


def _tier_client(tier: str, store: ArtifactStoreClient, workdir: Path, log) -> ModelClient:
    key = adapter_key(tier, "rlvr")
    if not store.exists(f"{key}/{ADAPTER_WEIGHTS}"):
        log(f"no {tier} adapter at {store.uri(key)} yet: the base model {DEFAULT_BASE_MODEL} stands in")
        return TransformersClient(DEFAULT_BASE_MODEL)
    adapter = get_dir(store, key, workdir / f"{tier}-adapter")
    base = json.loads((adapter / "training_summary.json").read_text())["base_model"]
    log(f"{tier} adapter {store.uri(key)} on {base}")
    return TransformersClient(base, adapter=str(adapter))
