"""`ArtifactStore`: where every artefact of the asset graph lives (local directory or S3)."""

from __future__ import annotations

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource
from pydantic import Field

from srl_platform.storage import ArtifactStoreClient, LocalArtifactStore, S3ArtifactStore


class ArtifactStore(ConfigurableResource):
    """One storage root for datasets, adapters and reports: a local directory (embedded default) or
    `s3://bucket/prefix` (production, through dagster-aws's `S3Resource`). Same interface either way."""

    root: str = Field(description="Local directory or s3://bucket/prefix holding every artefact.")
    s3: S3Resource = Field(
        default_factory=S3Resource,
        description="S3 client settings (region, endpoint_url for moto/LocalStack, profile), "
                    "used only when root is an s3:// URI.",
    )

    def client(self) -> ArtifactStoreClient:
        if self.root.startswith("s3://"):
            return S3ArtifactStore(self.root, self.s3.get_client())
        return LocalArtifactStore(self.root)
