"""Data assets: expert traces, their validation gate, and the two training datasets built from them.

`expert_traces` → `validated_traces` (blocking check `valid_fraction_above_floor`) → `srl_steps`
and `rlvr_problems`. Every artefact goes through the `ArtifactStore` resource, so the same assets
run on a local directory and on S3; rows nobody can use land in a rejects/quarantine artefact next
to the dataset, always written (empty when nothing was rejected) so its URI is stable.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations
# of asset functions at definition time and cannot resolve them as strings.
import tempfile
from collections import Counter
from pathlib import Path, PurePosixPath

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from assets.metadata import counts_table, preview, rows_version
from assets.retries import storage_retry_policy
from resources.storage import ArtifactStore
from srl_platform.collected import collected_expert_traces, rows_with_reference
from srl_platform.steps import decompose
from srl_platform.storage import ArtifactStoreClient
from srl_platform.tasks.arithmetic import FAMILY, generate_traces
from srl_platform.traces import (
    SPLITS,
    TRACE_FORMATS,
    jsonl_bytes,
    parquet_bytes,
    read_trace_rows,
    records_from_jsonl_bytes,
    records_from_parquet_bytes,
)
from srl_platform.validation import (
    raw_rows_from_parquet,
    raw_rows_parquet,
    unencodable_rows,
    valid_fraction_verdict,
    validate_traces,
)

EXPERT_TRACES_KEY = "datasets/expert_traces.parquet"
EXPERT_TRACES_REJECTS_KEY = "datasets/expert_traces.rejects.jsonl"
VALIDATED_TRACES_KEY = "datasets/validated_traces.parquet"
VALIDATED_TRACES_QUARANTINE_KEY = "datasets/validated_traces.quarantine.jsonl"
SRL_STEPS_KEY = "datasets/srl_steps.parquet"
SRL_STEPS_QUARANTINE_KEY = "datasets/srl_steps.quarantine.jsonl"
RLVR_PROBLEMS_KEY = "datasets/rlvr_problems.parquet"
RLVR_FIELDS = ("id", "question", "answer", "split", "meta")
GENERATED_PREFIX = "generated"
COLLECTED_PREFIX = "collected"

OWNERS = ["team:ml-platform"]
"""Who answers for every asset of the graph (shown in the UI)."""

VALID_FRACTION_FLOOR = 0.9
"""Default floor of the `valid_fraction_above_floor` gate (override per run in its config)."""

# Every asset here reads or writes the artefact store, which may be S3: retry transient failures
# (configuration errors raise `Failure(allow_retries=False)` instead of retrying).
_DATA_ASSET = {
    "group_name": "data",
    "kinds": {"python", "parquet"},
    "owners": OWNERS,
    "retry_policy": storage_retry_policy,
    "code_version": "1",
}


class ExpertTracesConfig(Config):
    source: str | None = Field(
        default=None,
        description="Where the traces come from: None for the built-in arithmetic generator, else "
                    "a local .jsonl/.parquet path or an s3://bucket/key URI (read with the "
                    "store's S3 client).",
    )
    format: str = Field(
        default="auto",
        description=f"Format of `source`, one of {TRACE_FORMATS}; auto tells them apart by the "
                    "columns of the first row. Ignored for the generator.",
    )
    n: int = Field(default=300, description="Problems to generate (generator only).")
    seed: int = Field(default=0, description="Generator seed: the same (n, seed) gives the same traces.")
    include_generated: bool = Field(
        default=True, description="Add every verified trace of `generated_traces` (all days, all families).")
    include_collected: bool = Field(
        default=True, description="Add collected serving outputs that carry a reference answer and verify.")


class ValidFractionFloorConfig(Config):
    floor: float = Field(
        default=VALID_FRACTION_FLOOR,
        ge=0.0,
        le=1.0,
        description="Fewest valid rows, as a fraction of every source row, for the data to pass "
                    "on to training (0.9 = 90%).",
    )


def fetch_source(source: str, store: ArtifactStore, directory: Path) -> Path:
    """A local path to read a data file from: `source` itself, or an `s3://` object downloaded into
    `directory`; Failure (not retried) when there is no such file."""
    if source.startswith("s3://"):
        bucket, _, key = source[len("s3://"):].partition("/")
        if not bucket or not key or key.endswith("/"):
            raise Failure(f"source {source!r} must be s3://bucket/key of one .jsonl or "
                          ".parquet object", allow_retries=False)
        target = directory / Path(key).name
        store.s3.get_client().download_file(bucket, key, str(target))
        return target
    path = Path(source).expanduser()
    if not path.is_file():
        raise Failure(f"source {source!r}: no such file; give a local .jsonl/.parquet "
                      "path or an s3://bucket/key URI", allow_retries=False)
    return path


def _generated_rows(client: ArtifactStoreClient) -> list[dict]:
    """The accepted traces of every `generated_traces` partition, oldest day first."""
    keys = [k for k in client.list(GENERATED_PREFIX) if k.endswith(".parquet")]
    rows = []
    for key in sorted(keys, key=lambda k: (PurePosixPath(k).name, k)):
        rows += records_from_parquet_bytes(client.get_bytes(key))
    return rows


def _collected_rows(client: ArtifactStoreClient) -> tuple[list[dict], Counter]:
    """Collected serving outputs that verify against their logged reference answer, and why the
    others with a reference did not."""
    candidates = []
    for key in client.list(f"{COLLECTED_PREFIX}/parts"):
        if key.endswith(".parquet"):
            candidates += rows_with_reference(client.get_bytes(key))
    return collected_expert_traces(candidates)


@asset(deps=["generated_traces", "collected_traces"], **_DATA_ASSET)
def expert_traces(
    context: AssetExecutionContext, config: ExpertTracesConfig, store: ArtifactStore
) -> MaterializeResult:
    """Expert solutions as they arrived, before any validation: the raw material of every dataset.

    From the arithmetic generator by default, or from a configured JSONL/Parquet file (local or S3)
    in the canonical, GSM8K or s1K format; plus every verified trace of `generated_traces` and the
    collected serving outputs that verify against a logged reference answer. Canonical rows are kept exactly as read, wrong types
    included, so `validated_traces` can say what is wrong with each; GSM8K/s1K rows are converted
    to canonical traces. Rows there is nothing to keep of (not JSON, not an object, not
    convertible, no JSON form) go to `datasets/expert_traces.rejects.jsonl` with reasons.

    Stored losslessly at `datasets/expert_traces.parquet`: a `row` column holds each row as JSON
    text (what is read back), beside one readable column per canonical field.

    Idempotent: the same config and source give the same artefacts and the same data version.
    """
    if config.source is None:
        rows, rejects = generate_traces(config.n, config.seed), []
        source = f"generated:{FAMILY} (n={config.n}, seed={config.seed})"
    else:
        source = config.source
        with tempfile.TemporaryDirectory() as tmp:
            path = fetch_source(source, store, Path(tmp))
            try:
                rows, rejects = read_trace_rows(path, config.format)
            except ValueError as error:  # unknown format, or a file whose format cannot be told
                raise Failure(f"expert_traces source {source!r}: {error}", allow_retries=False) from error
    client = store.client()
    counts = {"from_source": len(rows), "from_generated": 0, "from_collected": 0}
    ids = {row.get("id") for row in rows}
    extra, skipped = {}, Counter()
    if config.include_generated:
        extra["from_generated"] = _generated_rows(client)
    if config.include_collected:
        extra["from_collected"], skipped = _collected_rows(client)
    for name, found in extra.items():
        for row in found:
            if row["id"] not in ids:  # else a problem met again on a later day: the first is kept
                ids.add(row["id"])
                rows.append(row)
                counts[name] += 1
    rows, unencodable = unencodable_rows(rows)
    rejects += unencodable

    uri = client.put_bytes(EXPERT_TRACES_KEY, raw_rows_parquet(rows))
    rejects_uri = client.put_bytes(EXPERT_TRACES_REJECTS_KEY, jsonl_bytes(rejects))
    context.log.info(f"{len(rows)} rows from {source} → {uri}; {len(rejects)} rejected → {rejects_uri}")
    return MaterializeResult(
        metadata={
            "uri": MetadataValue.path(uri),
            "rows": len(rows),
            **counts,
            # Collected rows with a reference answer that did not become expert traces, by why.
            "collected_not_expert": counts_table(dict(sorted(skipped.items())), "reason"),
            "rejected": len(rejects),
            "rejects_uri": MetadataValue.path(rejects_uri),
            "source": source,
            "format": config.format if config.source is not None else "canonical",
            "preview": preview(rows, ("id", "split", "question", "answer")),
        },
        data_version=rows_version(rows, rejects),
    )


@asset(deps=[expert_traces], **_DATA_ASSET)
def validated_traces(context: AssetExecutionContext, store: ArtifactStore) -> MaterializeResult:
    """Expert traces that pass the canonical trace schema (pandera): the only traces training sees.

    Each row of `expert_traces` is checked for missing fields, wrong types, blank text, an unknown
    split, a solution that does not parse into numbered steps and a repeated id; a row that fails
    anything goes to `datasets/validated_traces.quarantine.jsonl` with every reason, the rest to
    `datasets/validated_traces.parquet` unchanged. `valid_fraction` counts the rows the reader of
    `expert_traces` already rejected as source rows too, and the blocking check
    `valid_fraction_above_floor` stops the run when it is below the floor.

    Idempotent: the same expert traces give the same artefacts and the same data version.
    """
    client = store.client()
    rows = raw_rows_from_parquet(client.get_bytes(EXPERT_TRACES_KEY))
    reader_rejected = len(records_from_jsonl_bytes(client.get_bytes(EXPERT_TRACES_REJECTS_KEY)))
    result = validate_traces(rows)
    source_rows = result.total + reader_rejected
    valid_fraction = len(result.valid) / source_rows if source_rows else 0.0

    uri = client.put_bytes(VALIDATED_TRACES_KEY, parquet_bytes(result.valid))
    quarantine_uri = client.put_bytes(VALIDATED_TRACES_QUARANTINE_KEY, jsonl_bytes(result.quarantine))
    context.log.info(f"{len(result.valid)} of {result.total} rows valid → {uri}; "
                     f"{len(result.quarantine)} quarantined → {quarantine_uri}")
    return MaterializeResult(
        metadata={
            "uri": MetadataValue.path(uri),
            "quarantine_uri": MetadataValue.path(quarantine_uri),
            "total": result.total,
            "valid": len(result.valid),
            "quarantined": len(result.quarantine),
            "reader_rejected": reader_rejected,
            "source_rows": source_rows,
            "valid_fraction": MetadataValue.float(valid_fraction),
            "reasons": counts_table(result.reasons, "reason"),
            "quarantine_preview": preview(result.quarantine, ("record", "row_index", "reason")),
        },
        data_version=rows_version(result.valid, result.quarantine),
    )


@asset_check(
    asset=validated_traces,
    blocking=True,
    description="Blocks training when too few source rows survived validation (floor: config "
                f"`floor`, default {VALID_FRACTION_FLOOR:.0%}).",
)
def valid_fraction_above_floor(
    context: AssetCheckExecutionContext, config: ValidFractionFloorConfig
) -> AssetCheckResult:
    """Passes when valid rows / source rows (validated + reader-rejected) >= the floor.

    Reads the counts of the latest `validated_traces` materialization, so it judges exactly what
    that materialization wrote. The floor is this check's config (`floor`, default 0.9); in run
    config: `ops: {validated_traces_valid_fraction_above_floor: {config: {floor: 0.8}}}`.
    """
    event = context.instance.get_latest_materialization_event(validated_traces.key)
    if event is None or event.asset_materialization is None:
        return AssetCheckResult(passed=False, description="validated_traces has not been materialized; "
                                                          "materialize it, then run this check")
    metadata = event.asset_materialization.metadata
    counts = {name: int(metadata[name].value) for name in
              ("valid", "quarantined", "reader_rejected", "source_rows")}
    passed, description = valid_fraction_verdict(counts["valid"], counts["source_rows"], config.floor)
    detail = f" ({counts['quarantined']} quarantined, {counts['reader_rejected']} rejected by the reader)"
    return AssetCheckResult(
        passed=passed,
        description=description + detail,
        metadata={
            **counts,
            "valid_fraction": MetadataValue.float(metadata["valid_fraction"].value),
            "floor": MetadataValue.float(config.floor),
            "quarantine_uri": metadata["quarantine_uri"],
        },
    )


@asset(deps=[validated_traces], **_DATA_ASSET)
def srl_steps(context: AssetExecutionContext, store: ArtifactStore) -> MaterializeResult:
    """SRL training data: every train-split trace decomposed into step instances (problem plus the
    expert's previous steps → the next expert step), at `datasets/srl_steps.parquet`.

    Validation, test and other splits are not decomposed (they are counted in `other_splits`);
    a trace whose solution does not decompose goes to `datasets/srl_steps.quarantine.jsonl`.

    Idempotent: the same validated traces give the same artefacts and the same data version.
    """
    client = store.client()
    traces = records_from_parquet_bytes(client.get_bytes(VALIDATED_TRACES_KEY))
    train = [trace for trace in traces if trace["split"] == "train"]
    instances, quarantined, stats = decompose(train)

    uri = client.put_bytes(SRL_STEPS_KEY, parquet_bytes(instances))
    quarantine_uri = client.put_bytes(SRL_STEPS_QUARANTINE_KEY, jsonl_bytes(quarantined))
    context.log.info(f"{stats.trajectories} trajectories → {stats.instances} step instances → {uri}; "
                     f"{stats.quarantined} quarantined → {quarantine_uri}")
    return MaterializeResult(
        metadata={
            "uri": MetadataValue.path(uri),
            "quarantine_uri": MetadataValue.path(quarantine_uri),
            "trajectories": stats.trajectories,
            "instances": stats.instances,
            "quarantined": stats.quarantined,
            "other_splits": len(traces) - len(train),
            "preview": preview(instances, ("id", "step_index", "num_steps", "target")),
        },
        data_version=rows_version(instances, quarantined),
    )


@asset(deps=[validated_traces], **_DATA_ASSET)
def rlvr_problems(context: AssetExecutionContext, store: ArtifactStore) -> MaterializeResult:
    """RLVR data: every validated trace as a problem with a verifiable final answer
    (`id`, `question`, `answer`, `split`, `meta`), all splits kept with their split column (training
    reads train, evaluation reads test), at `datasets/rlvr_problems.parquet`.

    Idempotent: the same validated traces give the same artefact and the same data version.
    """
    client = store.client()
    traces = records_from_parquet_bytes(client.get_bytes(VALIDATED_TRACES_KEY))
    problems = [{name: trace[name] for name in RLVR_FIELDS} for trace in traces]
    splits = Counter(problem["split"] for problem in problems)

    uri = client.put_bytes(RLVR_PROBLEMS_KEY, parquet_bytes(problems))
    context.log.info(f"{len(problems)} problems → {uri}; per split {dict(splits)}")
    return MaterializeResult(
        metadata={
            "uri": MetadataValue.path(uri),
            "problems": len(problems),
            **{f"problems_{split}": splits.get(split, 0) for split in SPLITS},
            "preview": preview(problems, ("id", "split", "question", "answer")),
        },
        data_version=rows_version(problems),
    )
