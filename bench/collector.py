"""Benchmark: trace collector throughput and peak memory as the log grows.

For each size, writes one synthetic serving log (prompts ~300 characters, completions ~600, about
1% duplicate rows and 1% malformed lines of six kinds), then runs `collect` on it in a fresh Python
process with a fresh state and output, so each size's peak RSS (`ru_maxrss` of that process) is its
own. Memory is flat when the peak does not grow with the row count. The synthetic files are
written to a temp dir and deleted.

    python bench/collector.py --scale quick
    python bench/collector.py --rows 100000 300000 1000000 --json-out runs/bench.jsonl
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow
from common import append_json, machine

SCALES = {"quick": (2_000, 6_000, 20_000), "full": (100_000, 300_000, 1_000_000)}
WORDS = ("the model answers each step of the problem with a short plan and then the result so that "
         "a reviewer can check every number against the expert solution before grading it carefully "
         "seven twelve forty total price ratio apples train speed hours minutes").split()
MALFORMED = ("bad_json", "missing_field", "wrong_type", "negative_value", "invalid_utf8",
             "oversized_completion")


def _text(rng: random.Random, chars: int) -> str:
    words = []
    while sum(map(len, words)) + len(words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:chars]


def write_log(path: Path, rows: int, seed: int = 0) -> dict:
    """A serving log of `rows` lines; what a correct collector must find in it."""
    rng = random.Random(seed)
    # Texts come from pools so writing a million lines takes seconds; a request number in the
    # prompt makes each row unique unless it is meant to be a duplicate.
    prompts = [_text(rng, rng.randint(250, 350)) for _ in range(500)]
    completions = [_text(rng, rng.randint(500, 700)) for _ in range(500)]
    expected = {"rows": 0, "duplicates": 0, "quarantined": 0}
    recent: list[dict] = []
    with path.open("wb") as out:
        for number in range(rows):
            draw = rng.random()
            if draw < 0.01 and recent:
                row = dict(rng.choice(recent), request_id=f"req-{number}", latency_ms=rng.uniform(50, 900))
                expected["duplicates"] += 1
            else:
                row = {"request_id": f"req-{number}", "timestamp": f"2025-06-01T00:00:{number % 60:02d}Z",
                       "prompt": f"[{number}] {rng.choice(prompts)}", "completion": rng.choice(completions),
                       "model": "smollm2-135m", "adapter_version": f"gold-{number // 100_000}",
                       "latency_ms": round(rng.uniform(50, 900), 1), "prompt_tokens": rng.randint(60, 90),
                       "completion_tokens": rng.randint(120, 180), "task_family": "gsm8k",
                       "region": "eu-west-1"}
            if 0.01 <= draw < 0.02:
                line = _malformed(row, MALFORMED[number % len(MALFORMED)])
                expected["quarantined"] += 1
            else:
                line = json.dumps(row).encode()
                if draw >= 0.01:
                    expected["rows"] += 1
                    if len(recent) < 1000:
                        recent.append(row)
                    else:
                        recent[rng.randrange(1000)] = row
            out.write(line + b"\n")
    return expected


def _malformed(row: dict, kind: str) -> bytes:
    if kind == "bad_json":
        return json.dumps(row).encode()[:-10]
    if kind == "invalid_utf8":
        return json.dumps(row).encode().replace(b"\"prompt\": \"", b"\"prompt\": \"\xff", 1)
    broken = dict(row)
    if kind == "missing_field":
        del broken["model"]
    elif kind == "wrong_type":
        broken["prompt_tokens"] = str(row["prompt_tokens"])
    elif kind == "negative_value":
        broken["latency_ms"] = -1.0
    else:
        broken["completion"] = row["completion"] * 70  # 35,000+ characters, over the 32,000 limit
    return json.dumps(broken).encode()


def child(log: Path, work: Path) -> None:
    """Collect `log` into `work` in this process; print one JSON line of figures."""
    from srl_platform.collector import collect, list_log_files

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    stats = collect(list_log_files(log.parent), work / "state.sqlite", work / "out")
    elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "lines": stats.lines, "rows": stats.rows,
                      "duplicates": stats.duplicates, "quarantined": stats.quarantined,
                      "reasons": stats.reasons, "baseline_rss_mib": baseline / 1024,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run(sizes: list[int], seed: int) -> list[dict]:
    results = []
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-collector-") as temp:
            logs, work = Path(temp) / "logs", Path(temp) / "work"
            logs.mkdir()
            log = logs / "serving.jsonl"
            expected = write_log(log, rows, seed)
            figures = json.loads(subprocess.run(
                [sys.executable, __file__, "--child", str(log), str(work)],
                check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            correct = all(figures[key] == expected[key] for key in expected)
            results.append({"lines": rows, "log_mib": log.stat().st_size / 2**20, **figures,
                            "lines_per_s": rows / figures["seconds"], "expected": expected,
                            "correct": correct})
            print(f"{rows:,} lines: {figures['seconds']:.1f} s, peak RSS {figures['peak_rss_mib']:.0f} MiB"
                  f"{'' if correct else f' WRONG COUNTS: expected {expected}'}", flush=True)
    return results


def markdown(results: list[dict]) -> str:
    header = ("| lines | log MiB | new rows | duplicates | quarantined | seconds | lines/s "
              "| RSS after imports MiB | peak RSS MiB | counts right |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        lines.append(f"| {r['lines']:,} | {r['log_mib']:,.0f} | {r['rows']:,} | {r['duplicates']:,} "
                     f"| {r['quarantined']:,} | {r['seconds']:.1f} | {r['lines_per_s']:,.0f} "
                     f"| {r['baseline_rss_mib']:.0f} | {r['peak_rss_mib']:.0f} | {'yes' if r['correct'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--rows", type=int, nargs="+", help="log sizes in lines (overrides --scale)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, default=None, help="append one JSON line with the results")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("LOG", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    started = time.perf_counter()
    sizes = sorted(args.rows or SCALES[args.scale])
    results = run(sizes, args.seed)
    print(markdown(results))
    ratio = results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"]
    print(f"\npeak RSS {results[-1]['lines']:,} lines / {results[0]['lines']:,} lines: {ratio:.2f}x")
    record = {
        "bench": "collector",
        "sizes": sizes,
        "seed": args.seed,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - started, 2),
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        **machine(),
        "peak_rss_ratio_largest_smallest": round(ratio, 3),
        "results": results,
    }
    append_json(args.json_out, record)
    return 0 if all(r["correct"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
