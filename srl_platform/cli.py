"""`srl`: the platform's command line (models, data, generate, collect, train, eval, serve, demo, bench)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from srl_platform.cli_data import add_data_commands
from srl_platform.cli_generate import add_generate_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srl",
        description="Train language models with SRL→RLVR on the embedded default or SageMaker.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="pull and list base models")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    pull = models_sub.add_parser("pull", help="provision a catalogue model into $SRL_HOME (no hub)")
    pull.add_argument("name", help="catalogue name, e.g. smollm2-135m-instruct")
    pull.add_argument("--force", action="store_true", help="convert again even if cached")
    pull.set_defaults(handler=_cmd_models_pull)
    listing = models_sub.add_parser("list", help="catalogue models and whether they are pulled")
    listing.set_defaults(handler=_cmd_models_list)

    add_data_commands(sub)
    add_generate_commands(sub)

    from srl_platform.train import build_parser as build_train_parser

    train = sub.add_parser("train", help="train a LoRA adapter (same as python -m srl_platform.train)",
                           description="Train a LoRA adapter with SRL or RLVR. Exit code 75 means "
                                       "stopped by SIGTERM after a checkpoint: rerun to resume.")
    build_train_parser(train)
    train.set_defaults(handler=_cmd_train)

    ev = sub.add_parser("eval", help="evaluate a model (and adapter) on held-out traces")
    ev.add_argument("--model", required=True, help="base model name or directory")
    ev.add_argument("--adapter", default=None, help="LoRA adapter directory to evaluate on top")
    ev.add_argument("--data", required=True, help="traces JSONL/Parquet (from `srl data generate`)")
    ev.add_argument("--split", default="test", help="split to evaluate ('all' for every record)")
    ev.add_argument("--out", required=True, help="report JSON path")
    ev.add_argument("--samples-out", default=None, help="also write every completion to this JSONL")
    ev.add_argument("--max-problems", type=int, default=16)
    ev.add_argument("--max-step-instances", type=int, default=32)
    ev.add_argument("--format-policy", choices=["strict", "prefill", "none"], default="none")
    ev.add_argument("--samples-k", type=int, default=0,
                    help="also sample K solutions per problem and report mean_of_k_accuracy")
    ev.add_argument("--seed", type=int, default=0, help="seed of the sampling pass")
    ev.set_defaults(handler=_cmd_eval)

    from srl_platform.serving_server import build_parser as build_serve_parser

    serve = sub.add_parser("serve", help="serve the base model and LoRA adapters on a vLLM-compatible API",
                           description="The embedded serving server (same as python -m "
                                       "srl_platform.serving_server): /v1/chat/completions, /v1/models, "
                                       "/v1/load_lora_adapter, /v1/unload_lora_adapter, /health.")
    build_serve_parser(serve)
    serve.set_defaults(handler=_cmd_serve)

    demo = sub.add_parser("demo", help="generate → steps → SRL → RLVR → eval on the embedded default")
    demo.add_argument("--workdir", default=".state/demo", help="where the demo writes its files")
    demo.add_argument("--tier", default="gold")
    demo.set_defaults(handler=_cmd_demo)

    from srl_platform.bench_runner import BENCHES, SCALES

    bench = sub.add_parser(
        "bench", help="run every benchmark in bench/ and write its BENCHMARKS.md section",
        description="Run the benchmarks in bench/ (each a subprocess, in order: "
                    + ", ".join(b.name for b in BENCHES) + ") and write one BENCHMARKS.md section "
                    "per benchmark: command, machine, wall time, its figures. smoke: toy sizes, under "
                    "10 minutes on 2 cores; full: the sizes BENCHMARKS.md's analysis is based on (hours "
                    "on a CPU; distill alone runs the whole cascade).")
    bench.add_argument("--scale", choices=SCALES, default="smoke")
    bench.add_argument("--only", nargs="+", metavar="NAME", default=None,
                       help="run only these benchmarks (router reuses the last distill run's artefacts)")
    bench.add_argument("--gsm8k", type=Path, default=None,
                       help="GSM8K train.jsonl for the learning benchmark (without it: arithmetic only)")
    bench.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"))
    bench.add_argument("--work-dir", type=Path, default=Path("runs/bench"),
                       help="scratch: the kept cascade, the learning runs, each benchmark's stderr log")
    bench.add_argument("--json-out", type=Path, default=Path("runs/bench.jsonl"),
                       help="every benchmark appends its JSON line here")
    bench.add_argument("--bench-dir", type=Path, default=None, help="default: bench/ of this clone")
    bench.set_defaults(handler=_cmd_bench)
    return parser


def _cmd_bench(args) -> int:
    from srl_platform.bench_runner import default_bench_dir, run

    try:
        return run(args.scale, args.bench_dir or default_bench_dir(), args.output, only=args.only,
                   gsm8k=args.gsm8k, work=args.work_dir, json_out=args.json_out)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cmd_models_pull(args) -> int:
    from srl_platform.models import ModelNotFoundError, pull

    try:
        pull(args.name, force=args.force)
    except ModelNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_models_list(args) -> int:
    from srl_platform.models import list_models

    for row in list_models():
        state = "pulled" if row["pulled"] else "not pulled"
        print(f"{row['name']:<24} {state:<11} {row['path']}  {row['description']}")
    return 0


def _cmd_train(args) -> int:
    from srl_platform.train import InputError, run

    try:
        return run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cmd_eval(args) -> int:
    from srl_platform.evaluate import EvalSettings, evaluate
    from srl_platform.models import ModelNotFoundError
    from srl_platform.traces import read_records

    traces = read_records(Path(args.data))
    if args.split != "all":
        traces = [t for t in traces if t.get("split") == args.split]
    if not traces:
        print(f"error: {args.data} has no records with split={args.split!r}", file=sys.stderr)
        return 2
    settings = EvalSettings(format_policy=args.format_policy, max_problems=args.max_problems,
                            max_step_instances=args.max_step_instances, samples_k=args.samples_k,
                            seed=args.seed)
    try:
        report = evaluate(args.model, traces, adapter=args.adapter, settings=settings,
                          samples_out=Path(args.samples_out) if args.samples_out else None)
    except ModelNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"accuracy={report['accuracy']:.3f} ({report['correct']}/{report['problems']}) "
          f"mean_step_reward={report['mean_step_reward']:.3f} "
          f"format_violation_rate={report['format_violation_rate']:.3f}"
          + (f" mean_of_{args.samples_k}_accuracy={report['mean_of_k_accuracy']:.3f}" if args.samples_k else "")
          + f" → {out}")
    return 0


def _cmd_serve(args) -> int:
    from srl_platform.serving_server import serve

    return serve(args)


def _cmd_demo(args) -> int:
    from srl_platform.demo import run_demo

    return run_demo(Path(args.workdir), tier=args.tier)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
