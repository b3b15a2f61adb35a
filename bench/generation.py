"""Benchmark: greedy generation throughput of the base model by dtype and batch size on this CPU.

The figures behind `EvalSettings.dtype="bfloat16"` and `batch_size=16`: the same prompts (solve
prompts of seeded arithmetic problems), the same number of new tokens (forced with
`min_new_tokens`), fp32 vs bf16 weights, measured side by side in one process.

    python bench/generation.py --scale smoke|full [--json-out runs/bench.jsonl]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from common import append_json, machine

SCALES = {"smoke": {"new_tokens": 32, "batches": (8, 16), "repeats": 1},
          "full": {"new_tokens": 64, "batches": (1, 8, 16, 32), "repeats": 2}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    parser.add_argument("--json-out", type=Path, default=None, help="append one JSON line here")
    args = parser.parse_args()
    scale = SCALES[args.scale]

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from srl_platform import prompts
    from srl_platform.models import DEFAULT_BASE_MODEL, pull
    from srl_platform.tasks.arithmetic import generate_traces

    model_dir = pull(DEFAULT_BASE_MODEL, log=lambda message: None)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    traces = generate_traces(max(scale["batches"]), seed=1)
    texts = [prompts.render(tokenizer, prompts.solve_messages(t["question"])) for t in traces]

    rows = []
    for dtype in ("float32", "bfloat16"):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
        for batch in scale["batches"]:
            enc = tokenizer(texts[:batch], return_tensors="pt", padding=True, add_special_tokens=False)
            best = float("inf")
            for _ in range(scale["repeats"]):
                started = time.perf_counter()
                with torch.inference_mode():
                    model.generate(**enc, max_new_tokens=scale["new_tokens"],
                                   min_new_tokens=scale["new_tokens"], do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
                best = min(best, time.perf_counter() - started)
            rows.append({"dtype": dtype, "batch": batch,
                         "tokens_per_s": round(batch * scale["new_tokens"] / best, 1)})
    base = {r["batch"]: r["tokens_per_s"] for r in rows if r["dtype"] == "float32"}
    print(f"{args.scale}: {scale['new_tokens']} new tokens, best of {scale['repeats']}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores\n")
    print("| dtype | batch | tokens/s | vs fp32 same batch | vs fp32 batch 8 |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['batch']} | {r['tokens_per_s']:.1f} | "
              f"{r['tokens_per_s'] / base[r['batch']]:.2f}x | "
              f"{r['tokens_per_s'] / base.get(8, base[r['batch']]):.2f}x |")
    append_json(args.json_out, {"bench": "generation", "scale": args.scale, **scale, **machine(),
                                "threads": torch.get_num_threads(), "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
