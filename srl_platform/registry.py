"""Model registry: every distilled adapter of a tier as a numbered version with an approval decision.

Two backends behind `ModelRegistry`: a SQLite file (`LocalModelRegistry`, the embedded default, kept in
the artefact store at `registry/models.sqlite`) and SageMaker Model Registry
(`SageMakerModelRegistry`: one model package group per tier, one model package per version).

- Identity: a registration is `(tier, data_version)`, where `data_version` is the adapter's content
  hash. Registering it again returns the existing version (its first URI and metadata stand), so a
  retried run never adds a second one. Versions count 1, 2, ... per tier.
- Decisions: a version starts `PendingManualApproval`; approving or rejecting records who, why and
  when, and is final. Repeating the same decision returns the recorded one unchanged (a retried quality
  gate must not fail); the opposite decision is an error: register a new adapter instead.
- Serving takes `latest_approved(tier)`: the highest approved version, so a rejected or failed
  retrain leaves the last approved one in place.
- Metadata values are strings under SageMaker's `CustomerMetadataProperties` rules on both backends,
  so what passes locally also registers on SageMaker.
"""

from __future__ import annotations

import json
import sqlite3
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Protocol

from srl_platform.storage import ArtifactStoreClient, LocalArtifactStore
from srl_platform.tiers import TIER_NAMES, get_tier

ApprovalStatus = Literal["PendingManualApproval", "Approved", "Rejected"]
PENDING: ApprovalStatus = "PendingManualApproval"
APPROVED: ApprovalStatus = "Approved"
REJECTED: ApprovalStatus = "Rejected"

REGISTRY_KEY = "registry/models.sqlite"
"""Artefact-store key of the local registry file."""
RESERVED_KEYS = ("adapter_uri", "data_version", "decided_by", "decided_at")
"""Metadata keys the registry writes itself (SageMaker keeps them in CustomerMetadataProperties)."""
MAX_METADATA_ENTRIES = 50 - len(RESERVED_KEYS)
"""SageMaker allows 50 CustomerMetadataProperties; the registry uses the reserved ones."""
MAX_REASON_CHARS = 1024
"""SageMaker's ApprovalDescription limit."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered adapter of a tier and its approval decision."""

    tier: str
    version: int
    """1, 2, ... per tier, in registration order."""
    adapter_uri: str
    data_version: str
    """Content hash of the adapter: the identity of a registration within its tier."""
    status: ApprovalStatus
    metadata: dict[str, str]
    """Quality and cost figures etc., as strings (SageMaker's CustomerMetadataProperties)."""
    created_at: str
    """ISO 8601, UTC."""
    decided_by: str | None = None
    decision_reason: str | None = None
    decided_at: str | None = None
    """ISO 8601, UTC; None while pending."""
    arn: str | None = None
    """SageMaker ModelPackageArn (None locally)."""


class ModelRegistry(Protocol):
    def register(self, tier: str, adapter_uri: str, data_version: str,
                 metadata: Mapping[str, str] | None = None) -> ModelVersion: ...
    def approve(self, tier: str, version: int, by: str, reason: str) -> ModelVersion: ...
    def reject(self, tier: str, version: int, by: str, reason: str) -> ModelVersion: ...
    def get(self, tier: str, version: int) -> ModelVersion: ...
    def versions(self, tier: str) -> list[ModelVersion]: ...
    def latest_approved(self, tier: str) -> ModelVersion | None: ...


class UnknownVersionError(LookupError):
    """A (tier, version) that was never registered."""


class DecisionFinalError(ValueError):
    """An approve/reject of a version that already carries the opposite decision."""


def _utc_now() -> str:
    return _iso(datetime.now(timezone.utc))


def _iso(moment: datetime) -> str:
    # botocore returns aware datetimes; a naive one from a stub is UTC by SageMaker's convention.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _sagemaker_safe(text: str, limit: int) -> bool:
    """SageMaker's CustomerMetadataProperties rule: letters, digits, spaces and `_.:/=+-@`."""
    return 0 < len(text) <= limit and all(
        ch in "_.:/=+-@" or unicodedata.category(ch)[0] in "LNZ" for ch in text)


def _check_metadata(tier: str, metadata: Mapping[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise ValueError(f"{tier} registration: {len(metadata)} metadata entries, at most "
                         f"{MAX_METADATA_ENTRIES} fit SageMaker's CustomerMetadataProperties; merge some")
    for key, value in metadata.items():
        if key in RESERVED_KEYS:
            raise ValueError(f"{tier} registration: metadata key {key!r} is written by the registry "
                             f"itself ({', '.join(RESERVED_KEYS)}); rename it")
        if not isinstance(key, str) or not _sagemaker_safe(key, 128):
            raise ValueError(f"{tier} registration: metadata key {key!r} must be 1-128 letters, digits, "
                             "spaces or _.:/=+-@ (SageMaker's rule)")
        if not isinstance(value, str):
            raise ValueError(f"{tier} registration: metadata[{key!r}] = {value!r} is a "
                             f"{type(value).__name__}; pass it as a string, e.g. {str(value)!r}")
        if not _sagemaker_safe(value, 256):
            raise ValueError(f"{tier} registration: metadata[{key!r}] = {value!r} must be 1-256 letters, "
                             "digits, spaces or _.:/=+-@ (SageMaker's rule)")
    return dict(metadata)


def _check_registration(tier: str, adapter_uri: str, data_version: str,
                        metadata: Mapping[str, str] | None) -> dict[str, str]:
    get_tier(tier)
    for name, value in (("adapter_uri", adapter_uri), ("data_version", data_version)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{tier} registration: {name}={value!r} must be a non-empty string")
    return _check_metadata(tier, metadata or {})


def _check_version(tier: str, version: int) -> None:
    get_tier(tier)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{tier}: version={version!r} must be an integer >= 1")


def _check_decision(model: ModelVersion, status: ApprovalStatus, by: str, reason: str) -> bool:
    """True when the decision is to be recorded, False when it is already recorded (same decision)."""
    what = f"{model.tier} version {model.version}"
    if not isinstance(by, str) or not by.strip() or not _sagemaker_safe(by, 256):
        raise ValueError(f"{what}: by={by!r} must name the decider in 1-256 letters, digits, spaces or "
                         "_.:/=+-@ (e.g. 'quality-gate' or an email)")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"{what}: the reason must be non-empty text of at most {MAX_REASON_CHARS} "
                         f"characters (got {len(reason) if isinstance(reason, str) else reason!r})")
    if model.status == PENDING:
        return True
    if model.status == status:
        return False
    raise DecisionFinalError(
        f"{what} (data version {model.data_version}) was already {model.status} by {model.decided_by} "
        f"at {model.decided_at} ({model.decision_reason}); a decision is final: register a new adapter")


def _version_list(found: list[int]) -> str:
    if not found:
        return "none registered yet"
    if found == list(range(found[0], found[-1] + 1)):
        return f"versions {found[0]}..{found[-1]}"
    return "versions " + ", ".join(map(str, found))


def _unknown(tier: str, version: int, found: list[int]) -> UnknownVersionError:
    return UnknownVersionError(f"tier {tier!r} has no model version {version} ({_version_list(found)})")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS model_versions (
    tier TEXT NOT NULL,
    version INTEGER NOT NULL,
    adapter_uri TEXT NOT NULL,
    data_version TEXT NOT NULL,
    status TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at TEXT NOT NULL,
    decided_by TEXT,
    decision_reason TEXT,
    decided_at TEXT,
    PRIMARY KEY (tier, version),
    UNIQUE (tier, data_version)
)
"""


class LocalModelRegistry:
    """The registry as one SQLite file (the embedded default).

    Safe across threads and processes: each call opens its own connection, and every write runs in one
    `BEGIN IMMEDIATE` transaction (a single writer at a time; others wait up to `busy_timeout_s`), so
    looking up `(tier, data_version)`, numbering the next version and inserting it cannot interleave.
    `UNIQUE(tier, data_version)` and the `(tier, version)` key back that up in the schema. Needs a local
    filesystem: SQLite's locking does not hold on S3 (use SageMaker there) nor reliably on NFS.
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._write() as db:
            db.execute(_SCHEMA)

    @classmethod
    def in_store(cls, store: ArtifactStoreClient) -> LocalModelRegistry:
        """The registry file of a local artefact store (`<root>/registry/models.sqlite`)."""
        if not isinstance(store, LocalArtifactStore):
            raise ValueError(
                f"the local model registry is a SQLite file and needs a local store root, not "
                f"{store.root!r}: SQLite cannot live on S3. Use the SageMaker registry with an S3 store "
                "(ModelRegistryResource backend='sagemaker').")
        return cls(store.path(REGISTRY_KEY))

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    @staticmethod
    def _model(row: sqlite3.Row) -> ModelVersion:
        return ModelVersion(
            tier=row["tier"], version=row["version"], adapter_uri=row["adapter_uri"],
            data_version=row["data_version"], status=row["status"], metadata=json.loads(row["metadata"]),
            created_at=row["created_at"], decided_by=row["decided_by"],
            decision_reason=row["decision_reason"], decided_at=row["decided_at"])

    def _row(self, db: sqlite3.Connection, tier: str, version: int) -> ModelVersion:
        row = db.execute("SELECT * FROM model_versions WHERE tier = ? AND version = ?", (tier, version)).fetchone()
        if row is None:
            found = [r[0] for r in db.execute(
                "SELECT version FROM model_versions WHERE tier = ? ORDER BY version", (tier,))]
            raise _unknown(tier, version, found)
        return self._model(row)

    def register(self, tier: str, adapter_uri: str, data_version: str,
                 metadata: Mapping[str, str] | None = None) -> ModelVersion:
        metadata = _check_registration(tier, adapter_uri, data_version, metadata)
        with self._write() as db:
            row = db.execute("SELECT * FROM model_versions WHERE tier = ? AND data_version = ?",
                             (tier, data_version)).fetchone()
            if row is not None:
                return self._model(row)
            (version,) = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE tier = ?",
                                    (tier,)).fetchone()
            db.execute("INSERT INTO model_versions (tier, version, adapter_uri, data_version, status, metadata,"
                       " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (tier, version, adapter_uri, data_version, PENDING, json.dumps(metadata, sort_keys=True),
                        _utc_now()))
            return self._row(db, tier, version)

    def _decide(self, tier: str, version: int, status: ApprovalStatus, by: str, reason: str) -> ModelVersion:
        _check_version(tier, version)
        with self._write() as db:
            model = self._row(db, tier, version)
            if not _check_decision(model, status, by, reason):
                return model
            db.execute("UPDATE model_versions SET status = ?, decided_by = ?, decision_reason = ?, decided_at = ?"
                       " WHERE tier = ? AND version = ?", (status, by, reason, _utc_now(), tier, version))
            return self._row(db, tier, version)

    def approve(self, tier: str, version: int, by: str, reason: str) -> ModelVersion:
        return self._decide(tier, version, APPROVED, by, reason)

    def reject(self, tier: str, version: int, by: str, reason: str) -> ModelVersion:
        return self._decide(tier, version, REJECTED, by, reason)

    def get(self, tier: str, version: int) -> ModelVersion:
        _check_version(tier, version)
        with self._read() as db:
            return self._row(db, tier, version)

    def versions(self, tier: str) -> list[ModelVersion]:
        get_tier(tier)
        with self._read() as db:
            rows = db.execute("SELECT * FROM model_versions WHERE tier = ? ORDER BY version", (tier,))
            return [self._model(row) for row in rows]

    def latest_approved(self, tier: str) -> ModelVersion | None:
        get_tier(tier)
        with self._read() as db:
            row = db.execute("SELECT * FROM model_versions WHERE tier = ? AND status = ? ORDER BY version DESC"
                             " LIMIT 1", (tier, APPROVED)).fetchone()
        return None if row is None else self._model(row)


REGISTRY_ACTOR = "srl-platform-registry"
"""`decided_by` of the duplicates the SageMaker registry rejects itself (see `SageMakerModelRegistry`)."""


def _error_code(error: Exception) -> str:
    return error.response.get("Error", {}).get("Code", "")  # botocore's ClientError


class SageMakerModelRegistry:
    """SageMaker Model Registry: model package group `<prefix>-<tier>`, one model package per version.

    A version's `adapter_uri`, `data_version`, metadata and decider live in the package's
    CustomerMetadataProperties, the decision's reason in its ApprovalDescription, and the version number
    is SageMaker's ModelPackageVersion. Packages carry no InferenceSpecification: it is optional for
    versioned packages, and an adapter has no container of its own (serving pairs it with the tier's
    base model). Groups are created on the first registration; reads of a tier without one see nothing.

    Concurrency, honestly: SageMaker has no conditional create, so `register` looks for the data version
    first and two callers can both miss it and both create a package. Each creator then re-lists the
    group: the lowest version carrying the data version is the registration, every caller returns it,
    and a creator whose package is not that one rejects its own package as a duplicate (by
    `REGISTRY_ACTOR`), so it can never be served. Those duplicates stay visible in `versions()` (SageMaker
    numbers are never reused, and an audit trail should not vanish). ClientToken does not close the gap:
    SageMaker documents no window or scope for it and moto ignores it, so it is left to botocore, which
    fills in a fresh one per call and so keeps its own retries of one call from creating twice.
    Decisions are check-then-update: two deciders racing on one pending version both succeed, the last
    write standing (the local registry serialises them).
    """

    def __init__(self, sm_client, group_prefix: str = "srl") -> None:
        if not _sagemaker_name(group_prefix) or len(group_prefix) + 1 + max(map(len, TIER_NAMES)) > 63:
            raise ValueError(f"group_prefix={group_prefix!r} must be letters, digits and hyphens, start and "
                             f"end with a letter or digit, and leave room for '-<tier>' in 63 characters")
        self.client, self.group_prefix = sm_client, group_prefix
        self._groups_seen: set[str] = set()

    def group_name(self, tier: str) -> str:
        return f"{self.group_prefix}-{get_tier(tier).name}"

    def _group_exists(self, group: str) -> bool:
        if group in self._groups_seen:
            return True
        try:
            self.client.describe_model_package_group(ModelPackageGroupName=group)
        except self.client.exceptions.ClientError as error:
            if _error_code(error) == "ValidationException":  # SageMaker's answer for a missing group
                return False
            raise
        self._groups_seen.add(group)
        return True

    def _ensure_group(self, tier: str) -> str:
        group = self.group_name(tier)
        if not self._group_exists(group):
            try:
                self.client.create_model_package_group(
                    ModelPackageGroupName=group,
                    ModelPackageGroupDescription=f"srl-platform {tier} tier: one version per distilled adapter")
            except self.client.exceptions.ClientError as error:
                # A concurrent creator got there first: the group exists, which is all that is wanted.
                if not (_error_code(error) == "ConflictException" or "already exists" in str(error)):
                    raise
            self._groups_seen.add(group)
        return group

    def _summaries(self, tier: str, **filters) -> list[dict]:
        group = self.group_name(tier)
        if not self._group_exists(group):
            return []
        pages = self.client.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=group, SortBy="CreationTime", SortOrder="Ascending", **filters)
        found = [summary for page in pages for summary in page["ModelPackageSummaryList"]]
        return sorted(found, key=lambda summary: summary["ModelPackageVersion"])

    def _describe(self, tier: str, arn: str) -> ModelVersion:
        package = self.client.describe_model_package(ModelPackageName=arn)
        properties = dict(package.get("CustomerMetadataProperties") or {})
        if "adapter_uri" not in properties or "data_version" not in properties:
            raise ValueError(f"model package {arn} in group {self.group_name(tier)} has no adapter_uri/"
                             "data_version metadata: it was not registered by srl-platform; move it to "
                             "another group")
        reserved = {key: properties.pop(key, None) for key in RESERVED_KEYS}
        return ModelVersion(
            tier=tier, version=package["ModelPackageVersion"], adapter_uri=reserved["adapter_uri"],
            data_version=reserved["data_version"], status=package["ModelApprovalStatus"], metadata=properties,
            created_at=_iso(package["CreationTime"]), decided_by=reserved["decided_by"],
            decision_reason=package.get("ApprovalDescription"),
            decided_at=reserved["decided_at"], arn=arn)

    def _registration(self, tier: str, data_version: str) -> ModelVersion | None:
        """The lowest version carrying `data_version`: the registration, duplicates aside. Only packages
        whose description (set at creation, never updatable, listed in summaries) names the data version
        are described, so a lookup costs the listing, not one call per version."""
        for summary in self._summaries(tier):
            if summary.get("ModelPackageDescription") == _description(tier, data_version):
                model = self._describe(tier, summary["ModelPackageArn"])
                if model.data_version == data_version:
                    return model
        return None

    def register(self, tier: str, adapter_uri: str, data_version: str,
                 metadata: Mapping[str, str] | None = None) -> ModelVersion:
        metadata = _check_registration(tier, adapter_uri, data_version, metadata)
        for name, value in (("adapter_uri", adapter_uri), ("data_version", data_version)):
            if not _sagemaker_safe(value, 256):
                raise ValueError(f"{tier} registration: {name}={value!r} cannot be stored in SageMaker's "
                                 "CustomerMetadataProperties (1-256 letters, digits, spaces or _.:/=+-@)")
        group = self._ensure_group(tier)
        existing = self._registration(tier, data_version)
        if existing is not None:
            return existing
        arn = self.client.create_model_package(
            ModelPackageGroupName=group, ModelApprovalStatus=PENDING,
            ModelPackageDescription=_description(tier, data_version),
            CustomerMetadataProperties={**metadata, "adapter_uri": adapter_uri, "data_version": data_version},
        )["ModelPackageArn"]
        winner = self._registration(tier, data_version)
        if winner is None:  # the listing does not show our package yet: it is all we know of
            return self._describe(tier, arn)
        if winner.arn != arn:
            self._record(self._describe(tier, arn), REJECTED, REGISTRY_ACTOR,
                         f"duplicate of version {winner.version} (data version {data_version}), "
                         "created by a concurrent register")
        return winner

    def _record(self, model: ModelVersion, status: ApprovalStatus, by: str, reason: str) -> ModelVersion:
        if not _check_decision(model, status, by, reason):
            return model
        # The whole property map goes back: AWS merges it into the package's, moto replaces it.
        properties = {**model.metadata, "adapter_uri": model.adapter_uri, "data_version": model.data_version,
                      "decided_by": by, "decided_at": _utc_now()}
        self.client.update_model_package(ModelPackageArn=model.arn, ModelApprovalStatus=status,
                                         ApprovalDescription=reason, CustomerMetadataProperties=properties)
        return self._describe(model.tier, model.arn)

    def approve(self, tier: str, version: int, by: str, reason: str) -> ModelVersion:
        return self._record(self.get(tier, version), APPROVED, by, reason)

    def reject(self, tier: str, version: int, by: str, reason: str) -> ModelVersion:
        return self._record(self.get(tier, version), REJECTED, by, reason)

    def get(self, tier: str, version: int) -> ModelVersion:
        _check_version(tier, version)
        summaries = self._summaries(tier)
        for summary in summaries:
            if summary["ModelPackageVersion"] == version:
                return self._describe(tier, summary["ModelPackageArn"])
        raise _unknown(tier, version, [summary["ModelPackageVersion"] for summary in summaries])

    def versions(self, tier: str) -> list[ModelVersion]:
        return [self._describe(tier, summary["ModelPackageArn"]) for summary in self._summaries(tier)]

    def latest_approved(self, tier: str) -> ModelVersion | None:
        approved = self._summaries(tier, ModelApprovalStatus=APPROVED)
        return self._describe(tier, approved[-1]["ModelPackageArn"]) if approved else None


def _description(tier: str, data_version: str) -> str:
    return f"{tier} adapter, data version {data_version}"


def _sagemaker_name(name: str) -> bool:
    """SageMaker's entity-name rule: `[a-zA-Z0-9](-*[a-zA-Z0-9])*`."""
    return bool(name) and name.isascii() and name[0].isalnum() and name[-1].isalnum() and all(
        ch.isalnum() or ch == "-" for ch in name)
