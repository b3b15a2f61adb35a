"""Collected serving outputs that qualify as expert traces.

Most collected rows are prompts and completions with nothing to check them against: they feed the
distillation prompts and drift statistics. A row becomes an expert trace only when its log names a
task family and a reference answer (`task_family`, `reference_answer`), its completion reads as
numbered steps, and the family's verifier accepts it; every other row is counted by why not.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable

import pyarrow.compute as pc
import pyarrow.parquet as pq

from srl_platform.steps import StepParseError
from srl_platform.tasks import VERIFIERS
from srl_platform.tasks.solutions import canonical_solution
from srl_platform.traces import assign_split


def rows_with_reference(part: bytes) -> list[dict]:
    """The rows of one collected Parquet part that carry a reference answer (the rest never qualify,
    so they are not read into memory)."""
    table = pq.read_table(io.BytesIO(part), filters=pc.field("reference_answer").is_valid())
    return table.to_pylist()


def collected_expert_traces(rows: Iterable[dict]) -> tuple[list[dict], Counter]:
    """(traces, skipped by reason) from collected rows that carry a reference answer (see
    `rows_with_reference`); a row without one is `no_reference`, without a family `no_task_family`."""
    traces, skipped = [], Counter()
    for row in rows:
        family, reference = row.get("task_family"), row.get("reference_answer")
        if not reference or not family:
            skipped["no_task_family" if reference else "no_reference"] += 1
            continue
        if family not in VERIFIERS:
            skipped["unknown_family"] += 1
            continue
        try:
            solution = canonical_solution(row["completion"])
        except StepParseError:
            skipped["step_format"] += 1
            continue
        verdict = VERIFIERS[family](solution, reference)
        if not verdict.ok:
            skipped[verdict.reason or "not_verified"] += 1
            continue
        traces.append({
            "id": f"collected-{row['row_digest'][:16]}",
            "question": row["prompt"],
            "solution": solution,
            "answer": reference,
            "source": f"collected:{row['model']}@{row['adapter_version']}",
            "split": assign_split(row["prompt"]),
            "meta": {"family": family, "lineage": {
                key: row.get(key) for key in ("model", "adapter_version", "request_id", "source_file",
                                              "line", "file_sha256")}},
        })
    return traces, skipped
