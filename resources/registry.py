"""`ModelRegistryResource`: where tier adapters are registered, approved and picked for serving."""

from __future__ import annotations

from typing import Literal

import boto3
from botocore.config import Config
from dagster import ConfigurableResource
from pydantic import Field

from srl_platform.registry import LocalModelRegistry, ModelRegistry, SageMakerModelRegistry
from srl_platform.storage import ArtifactStoreClient


class ModelRegistryResource(ConfigurableResource):
    """The model registry: a SQLite file in the artefact store (embedded default; needs a local store
    root) or SageMaker Model Registry (one model package group per tier; use it with an s3:// store).
    Same interface either way (`srl_platform.registry.ModelRegistry`)."""

    backend: Literal["local", "sagemaker"] = Field(
        default="local",
        description="local: <store root>/registry/models.sqlite; sagemaker: model package groups "
                    "<group_prefix>-<tier>.")
    group_prefix: str = Field(default="srl", description="SageMaker model package group prefix (sagemaker only).")
    region_name: str | None = Field(default=None, description="AWS region (sagemaker only; default: AWS config).")
    endpoint_url: str | None = Field(
        default=None, description="SageMaker endpoint override, e.g. a moto server or LocalStack (sagemaker only).")

    max_attempts: int = Field(
        default=10, description="Attempts per SageMaker call (botocore's standard retry mode: "
                                "exponential backoff with jitter on throttling and transient errors).")

    def client(self, store: ArtifactStoreClient) -> ModelRegistry:
        if self.backend == "sagemaker":
            sagemaker = boto3.client("sagemaker", region_name=self.region_name, endpoint_url=self.endpoint_url,
                                     config=Config(retries={"mode": "standard", "max_attempts": self.max_attempts}))
            return SageMakerModelRegistry(sagemaker, self.group_prefix)
        return LocalModelRegistry.in_store(store)
