"""Benchmark: SRL step-reward throughput and agreement, difflib vs rapidfuzz, by step length.

The SRL reward is difflib's ratio 2M/T where M counts characters in difflib's matching blocks
(greedy longest-match first). rapidfuzz's Indel similarity is also 2M/T but with M the longest
common subsequence, so it is never lower and can differ. This measures, on the same seeded pairs
(an expert step and an edited copy: word swaps, substitutions, deletions, insertions, changed
numbers), pairs scored per second by each method and how far each is from the reward as defined
(difflib, autojunk=False).

    python bench/rewards.py --scale smoke --json-out runs/bench.jsonl
"""

from __future__ import annotations

import argparse
import difflib
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import rapidfuzz
from common import append_json, machine
from rapidfuzz import fuzz
from rapidfuzz.distance import Indel

from srl_platform.rewards import split_action, srl_step_reward
from srl_platform.tasks.arithmetic import generate_traces

LENGTHS = (50, 200, 500, 1000, 2000)
SCALES = {
    # pairs per length, minimum seconds each method is timed for
    "smoke": (40, 0.25),
    "full": (400, 2.0),
}
AGREE_TOL = 1e-9

Score = Callable[[str, str], float]

METHODS: dict[str, Score] = {
    # Each scores a completion against the expert step the way the trainer would (action first).
    "difflib_autojunk_off": lambda completion, step: srl_step_reward(completion, step, policy="none"),
    "difflib_autojunk_on": lambda completion, step: srl_step_reward(
        completion, step, policy="none", autojunk=True
    ),
    "rapidfuzz_indel": lambda completion, step: Indel.normalized_similarity(
        split_action(completion, "none"), step
    ),
    "rapidfuzz_fuzz_ratio": lambda completion, step: fuzz.ratio(
        split_action(completion, "none"), step
    ) / 100,
}
REFERENCE = "difflib_autojunk_off"


def _corpus(seed: int) -> list[str]:
    """Words of generated step-by-step solutions: the vocabulary of real SRL targets."""
    text = " ".join(t["question"] + " " + t["solution"] for t in generate_traces(300, seed))
    return text.split(" ")


def _step(words: list[str], chars: int, rng: random.Random) -> str:
    """A contiguous run of corpus words cut to exactly `chars` characters."""
    start = rng.randrange(len(words))
    text = ""
    while len(text) < chars:
        text += words[start % len(words)] + " "
        start += 1
    return text[:chars].rstrip() or text[:chars]


def _edited(step: str, vocabulary: list[str], rng: random.Random) -> str:
    """A near miss of `step`: about one word in five swapped, replaced, dropped, added or renumbered."""
    words = step.split(" ")
    out: list[str] = []
    i = 0
    while i < len(words):
        roll = rng.random()
        if roll < 0.05 and i + 1 < len(words):
            out += [words[i + 1], words[i]]
            i += 2
            continue
        if roll < 0.10:
            out.append(rng.choice(vocabulary))
        elif roll < 0.13:
            pass
        elif roll < 0.16:
            out += [words[i], rng.choice(vocabulary)]
        elif roll < 0.20 and any(c.isdigit() for c in words[i]):
            out.append("".join(str(rng.randint(0, 9)) if c.isdigit() else c for c in words[i]))
        else:
            out.append(words[i])
        i += 1
    return " ".join(out) or "x"


def make_pairs(chars: int, count: int, seed: int) -> list[tuple[str, str]]:
    """(completion, expert step) pairs of about `chars` characters, the same for the same seed."""
    words = _corpus(seed)
    rng = random.Random(f"{seed}-{chars}")
    pairs = []
    for _ in range(count):
        step = _step(words, chars, rng)
        pairs.append((_edited(step, words, rng), step))
    return pairs


def _throughput(score: Score, pairs: list[tuple[str, str]], min_seconds: float) -> float:
    """Pairs scored per second, over whole passes until at least `min_seconds` have elapsed."""
    done, start = 0, time.perf_counter()
    while True:
        for completion, step in pairs:
            score(completion, step)
        done += len(pairs)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def _agreement(reference: list[float], other: list[float]) -> dict[str, float]:
    diffs = [abs(r - o) for r, o in zip(reference, other, strict=True)]
    return {
        "agree_fraction": sum(d <= AGREE_TOL for d in diffs) / len(diffs),
        "mean_abs_diff": statistics.fmean(diffs),
        "max_abs_diff": max(diffs),
    }


def run(scale: str, seed: int) -> list[dict]:
    """One result row per step length: throughput of every method and agreement with the reward."""
    count, min_seconds = SCALES[scale]
    rows = []
    for chars in LENGTHS:
        pairs = make_pairs(chars, count, seed)
        scores = {name: [score(c, s) for c, s in pairs] for name, score in METHODS.items()}
        reference = scores[REFERENCE]
        swapped = [difflib.SequenceMatcher(None, s, c, autojunk=False).ratio() for c, s in pairs]
        rows.append(
            {
                "chars": chars,
                "pairs": count,
                "mean_reward": statistics.fmean(reference),
                "pairs_per_s": {
                    name: _throughput(score, pairs, min_seconds) for name, score in METHODS.items()
                },
                "vs_reward": {
                    name: _agreement(reference, scores[name]) for name in METHODS if name != REFERENCE
                },
                "indel_ge_difflib_fraction": sum(
                    i >= r - AGREE_TOL for i, r in zip(scores["rapidfuzz_indel"], reference, strict=True)
                ) / count,
                # Even without autojunk, difflib's greedy matching can depend on argument order.
                "difflib_order_dependent": _agreement(reference, swapped),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    """The results as a markdown table (throughput in pairs/s; agreement with the reward)."""
    header = (
        "| chars | pairs | reward mean | difflib aj=False /s | difflib aj=True /s | Indel /s "
        "| fuzz.ratio /s "
        "| Indel speed-up | aj=True agree | aj=True mean abs diff | Indel agree | Indel mean abs diff "
        "| aj=False order-dependent (mean abs diff) |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        speed, agree, order = row["pairs_per_s"], row["vs_reward"], row["difflib_order_dependent"]
        lines.append(
            f"| {row['chars']} | {row['pairs']} | {row['mean_reward']:.3f} "
            f"| {speed['difflib_autojunk_off']:,.0f} | {speed['difflib_autojunk_on']:,.0f} "
            f"| {speed['rapidfuzz_indel']:,.0f} | {speed['rapidfuzz_fuzz_ratio']:,.0f} "
            f"| {speed['rapidfuzz_indel'] / speed['difflib_autojunk_off']:,.0f}x "
            f"| {agree['difflib_autojunk_on']['agree_fraction']:.0%} "
            f"| {agree['difflib_autojunk_on']['mean_abs_diff']:.4f} "
            f"| {agree['rapidfuzz_indel']['agree_fraction']:.0%} "
            f"| {agree['rapidfuzz_indel']['mean_abs_diff']:.4f} "
            f"| {1 - order['agree_fraction']:.0%} ({order['mean_abs_diff']:.4f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="smoke",
                        help="smoke: under 30 s; full: 10x the pairs, longer timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, default=None, help="append one JSON line with the results")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    rows = run(args.scale, args.seed)
    print(markdown(rows))
    record = {
        "bench": "rewards",
        "scale": args.scale,
        "seed": args.seed,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - started, 2),
        "python": platform.python_version(),
        "rapidfuzz": rapidfuzz.__version__,
        **machine(),
        "results": rows,
    }
    print(f"\n{args.scale} run took {record['wall_s']} s")
    append_json(args.json_out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
