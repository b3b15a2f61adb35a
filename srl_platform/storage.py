"""Artefact storage: one interface over a local directory and `s3://bucket/prefix`.

Keys are relative POSIX paths (`datasets/srl_steps.parquet`, `adapters/gold/srl/...`). Every
artefact the platform produces lives under one root, so its URI is enough to find it again. Writes
are whole-object: a local write goes to a temp file renamed into place, an S3 put is atomic.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Protocol


class ArtifactStoreClient(Protocol):
    root: str

    def uri(self, key: str) -> str: ...
    def put_bytes(self, key: str, data: bytes) -> str: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def put_file(self, key: str, path: Path) -> str: ...
    def get_file(self, key: str, path: Path) -> Path: ...
    def list(self, prefix: str) -> list[str]: ...


def _clean_key(key: str) -> str:
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or ".." in parts:
        raise ValueError(f"artefact key {key!r} must be a relative path without '..'")
    return "/".join(parts)


class LocalArtifactStore:
    """Artefacts under a local directory (the embedded default)."""

    def __init__(self, root: str | Path) -> None:
        self.root = str(Path(root).expanduser().resolve())

    def path(self, key: str) -> Path:
        return Path(self.root) / _clean_key(key)

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()

    def _replace(self, key: str, write) -> str:
        """Write through a temp file renamed into place: readers never see a partial object."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        write(tmp)
        os.replace(tmp, target)
        return self.uri(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        return self._replace(key, lambda tmp: tmp.write_bytes(data))

    def get_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def put_file(self, key: str, path: Path) -> str:
        return self._replace(key, lambda tmp: shutil.copyfile(path, tmp))

    def get_file(self, key: str, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path(key), path)
        return path

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        root = Path(self.root)
        return sorted(
            p.relative_to(root).as_posix() for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp")
        )


class S3ArtifactStore:
    """Artefacts under `s3://bucket/prefix`, through a boto3 S3 client (e.g. dagster-aws's)."""

    def __init__(self, root: str, client) -> None:
        if not root.startswith("s3://"):
            raise ValueError(f"S3 artefact root {root!r} must look like s3://bucket/prefix")
        bucket, _, prefix = root[len("s3://"):].partition("/")
        self.root, self.bucket, self.prefix, self.client = root.rstrip("/"), bucket, prefix.strip("/"), client

    def _key(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def put_bytes(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        found = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(key), MaxKeys=1)
        return any(obj["Key"] == self._key(key) for obj in found.get("Contents", []))

    def put_file(self, key: str, path: Path) -> str:
        self.client.upload_file(str(path), self.bucket, self._key(key))
        return self.uri(key)

    def get_file(self, key: str, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, self._key(key), str(path))
        return path

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix).rstrip("/") + "/"
        keys, token = [], None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": full, **({"ContinuationToken": token} if token else {})}
            page = self.client.list_objects_v2(**kwargs)
            keys += [obj["Key"] for obj in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                break
            token = page["NextContinuationToken"]
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[cut:] for k in keys)


def open_store(root: str | Path) -> ArtifactStoreClient:
    """The store at a local folder or `s3://bucket/prefix` (boto3's S3 client, configured from the
    environment: credentials, region, AWS_ENDPOINT_URL)."""
    if str(root).startswith("s3://"):
        import boto3

        return S3ArtifactStore(str(root), boto3.client("s3"))
    return LocalArtifactStore(root)


def put_dir(store: ArtifactStoreClient, key: str, directory: Path) -> str:
    """Upload every file under `directory` to `key/…`; returns the URI of `key`."""
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            store.put_file(f"{key}/{path.relative_to(directory).as_posix()}", path)
    return store.uri(key)


def get_dir(store: ArtifactStoreClient, key: str, directory: Path) -> Path:
    """Download every object under `key/` into `directory` (the inverse of `put_dir`)."""
    prefix = _clean_key(key) + "/"
    for found in store.list(key):
        store.get_file(found, directory / found[len(prefix):])
    return directory


def content_hash(*chunks: bytes) -> str:
    """Stable short content hash, used as a Dagster `DataVersion`."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(hashlib.sha256(chunk).digest())
    return digest.hexdigest()[:16]
