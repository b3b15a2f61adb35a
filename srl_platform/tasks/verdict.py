"""What a task family's verifier says about one solution: right or not, and why not."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """`ok` when the solution checks out. Otherwise `reason` is a short machine-readable kind, one
    of the reasons the family's `verify` documents (counted in reports), and `detail` a line for
    people: the test that failed, the equation that is false."""

    ok: bool
    reason: str | None
    detail: str = ""
