"""`srl data …`: generate, import and decompose expert traces.

Every command writes what it could not use to a quarantine JSONL next to its output (only when
there is something to quarantine) and prints the counts, so nothing is dropped without a trace.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from srl_platform.steps import decompose
from srl_platform.tasks import GENERATED, generate
from srl_platform.traces import (
    SPLITS,
    TRACE_FORMATS,
    detect_format,
    load_traces,
    write_jsonl,
    write_records,
)


def add_data_commands(subparsers) -> None:
    """Register the `data` command group (generate, import, steps) on the main parser's subparsers."""
    data = subparsers.add_parser("data", help="generate, import and decompose expert traces")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    gen = actions.add_parser("generate", help="generate synthetic traces of a task family")
    gen.add_argument("--n", type=int, default=500, help="number of distinct problems")
    gen.add_argument("--seed", type=int, default=0, help="same (n, seed) gives the same file")
    gen.add_argument("--out", required=True, help="traces file (.jsonl or .parquet)")
    gen.add_argument("--family", choices=GENERATED, default="arithmetic")
    gen.set_defaults(handler=_cmd_generate)

    imp = actions.add_parser("import", help="convert GSM8K / s1K-1.1 rows into canonical traces")
    imp.add_argument("path", help="input .jsonl or .parquet")
    imp.add_argument("--format", choices=TRACE_FORMATS, default="auto", dest="fmt",
                     help="input format (auto: tell by the columns)")
    imp.add_argument("--out", required=True, help="canonical traces file (.jsonl or .parquet)")
    imp.add_argument("--quarantine", default=None,
                     help="rejected rows (JSONL); default <out stem>.quarantine.jsonl")
    imp.set_defaults(handler=_cmd_import)

    steps = actions.add_parser("steps", help="decompose traces into SRL step instances")
    steps.add_argument("traces", help="canonical traces file (.jsonl or .parquet)")
    steps.add_argument("--out", required=True, help="step instances file (.jsonl or .parquet)")
    steps.add_argument("--split", choices=SPLITS, default=None, help="only traces of this split")
    steps.add_argument("--include-next-title", action="store_true",
                       help="show the title of the step to write in each instance")
    steps.add_argument("--quarantine", default=None,
                       help="traces that could not be decomposed (JSONL); "
                            "default <out stem>.quarantine.jsonl")
    steps.set_defaults(handler=_cmd_steps)


def _quarantine_path(out: str, quarantine: str | None) -> Path:
    out_path = Path(out)
    return Path(quarantine) if quarantine else out_path.with_name(f"{out_path.stem}.quarantine.jsonl")


def _write_quarantine(records: list[dict], path: Path) -> str:
    """Write the quarantine when it has records; a line saying where it went (or that it is empty)."""
    if records:
        write_jsonl(records, path)
        return f"quarantine: {len(records)} records → {path}"
    stale = f" ({path} is left from an earlier run)" if path.exists() else ""
    return f"quarantine: none written, nothing was rejected{stale}"


def _split_counts(traces: list[dict]) -> str:
    counts = Counter(t.get("split") for t in traces)
    return " ".join(f"{split}={counts.get(split, 0)}" for split in SPLITS)


def _cmd_generate(args: argparse.Namespace) -> int:
    traces = generate(args.family, args.n, args.seed)
    out = write_records(traces, args.out)
    print(f"generated {len(traces)} {args.family} traces (seed={args.seed}): "
          f"{_split_counts(traces)} → {out}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    """Exit 1 when the input had rows but none became a trace, 2 when it cannot be read."""
    try:
        fmt = detect_format(args.path) if args.fmt == "auto" else args.fmt
        traces, rejects = load_traces(args.path, fmt)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = write_records(traces, args.out)
    print(f"imported={len(traces)} rejected={len(rejects)} from {args.path} (format={fmt}) → {out}")
    print(_write_quarantine(rejects, _quarantine_path(args.out, args.quarantine)))
    return 1 if rejects and not traces else 0


def _cmd_steps(args: argparse.Namespace) -> int:
    """Invalid trace records are quarantined along with traces whose solution does not parse.

    Exit 1 when nothing could be decomposed, 2 when the traces file cannot be read.
    """
    try:
        traces, rejects = load_traces(args.traces, "canonical")
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.split:
        traces = [t for t in traces if t["split"] == args.split]
    instances, quarantined, stats = decompose(traces, include_next_title=args.include_next_title)
    quarantined = rejects + quarantined
    out = write_records(instances, args.out)
    print(f"trajectories={stats.trajectories} instances={stats.instances} "
          f"quarantined={len(quarantined)} → {out}")
    print(_write_quarantine(quarantined, _quarantine_path(args.out, args.quarantine)))
    return 1 if quarantined and not instances else 0
