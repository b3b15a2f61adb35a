"""Benchmark: what the three-model collaboration yields on the embedded default, and why.

Two measurements in one process, SmolLM2-135M-Instruct in every role:

1. the whole loop (`collaborate`): proposals → new problems → verified → accepted, the reject
   reasons, tokens and wall time per role;
2. the solver alone on generated problems whose answers are known (so the proposer's mistakes do
   not count), with and without the worked example the collaboration shows it: how often the
   solution reads as numbered steps and how often it verifies.

    python bench/collaboration.py --scale smoke|full [--json-out runs/bench.jsonl]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from common import append_json, machine

SCALES = {"smoke": {"proposals": 4, "solver_problems": 4}, "full": {"proposals": 64, "solver_problems": 32}}


def _solver_alone(client, family, problems: list[dict], example: dict | None) -> dict:
    from srl_platform.clients import GenerationParams
    from srl_platform.steps import StepParseError

    replies = client.complete_batch([family.solve_messages(p["question"], example) for p in problems],
                                    GenerationParams(max_tokens=256, temperature=0.0))
    outcomes = Counter()
    for problem, reply in zip(problems, replies):
        try:
            verdict = family.verify(family.parse_solution(reply.text), problem["answer"])
            outcomes["verified" if verdict.ok else verdict.reason] += 1
        except StepParseError:
            outcomes["step_format"] += 1
    return {"problems": len(problems), "steps_parse": len(problems) - outcomes["step_format"],
            "verified": outcomes["verified"], "outcomes": dict(sorted(outcomes.items()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--json-out", type=Path, default=None, help="append one JSON line here")
    args = parser.parse_args()
    scale = SCALES[args.scale]

    from srl_platform.clients import TransformersClient
    from srl_platform.collaboration import CollaborationConfig, collaborate
    from srl_platform.models import DEFAULT_BASE_MODEL, pull
    from srl_platform.tasks import get_family

    pull(DEFAULT_BASE_MODEL, log=lambda message: None)
    family = get_family("arithmetic")
    client = TransformersClient(DEFAULT_BASE_MODEL)
    started = time.perf_counter()
    result = collaborate(family, client, client, judge=client,
                         config=CollaborationConfig(proposals=scale["proposals"], seed=args.seed))
    loop_seconds = time.perf_counter() - started

    known = family.examples(scale["solver_problems"] + 1, args.seed)
    example, problems = known[0], known[1:]
    alone = {"without_example": _solver_alone(client, family, problems, None),
             "with_example": _solver_alone(client, family, problems, example)}
    client.close()

    stats, roles = result.stats, result.usage["by_role"]
    print(f"{args.scale}: SmolLM2-135M-Instruct proposing, solving and judging, seed {args.seed}")
    print(f"loop: {stats['proposals']} proposals → {stats['new_problems']} new problems → "
          f"{stats['verified']} verified → {stats['accepted']} accepted in {loop_seconds:.0f} s")
    print(f"reject reasons: {stats['reasons']}")
    for role, row in sorted(roles.items()):
        print(f"  {role}: {row['calls']} calls, {row['input_tokens']} tokens in, {row['output_tokens']} out")
    print("solver alone (greedy) on known-answer problems:")
    for name, row in alone.items():
        print(f"  {name}: steps parse {row['steps_parse']}/{row['problems']}, "
              f"verified {row['verified']}/{row['problems']}  {row['outcomes']}")
    append_json(args.json_out, {"bench": "collaboration", "scale": args.scale, "seed": args.seed,
                                "machine": machine(), "loop_seconds": round(loop_seconds, 1),
                                "stats": stats, "usage_by_role": roles, "solver_alone": alone})
    return 0


if __name__ == "__main__":
    sys.exit(main())
