"""Task families that generate expert traces with verifiable answers (no external data needed)."""

from __future__ import annotations

from collections.abc import Callable

from srl_platform.tasks import arithmetic

TraceGenerator = Callable[[int, int], list[dict]]
"""(n, seed) -> n canonical traces, deterministic in (n, seed)."""

FAMILIES: dict[str, TraceGenerator] = {arithmetic.FAMILY: arithmetic.generate_traces}


def generate(family: str, n: int, seed: int) -> list[dict]:
    """`n` traces of the named task family."""
    if family not in FAMILIES:
        raise ValueError(f"task family {family!r} is unknown; use one of {sorted(FAMILIES)}")
    return FAMILIES[family](n, seed)
