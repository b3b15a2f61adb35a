"""Benchmark: the SRL paper's comparison in miniature (base, SFT, RLVR, SRL, SRL→RLVR), measured.

The SRL paper (arXiv 2510.25992, Table 1: Qwen2.5-7B-Instruct on s1K-1.1) reports base 24.6,
SFT 16.6, RLVR 24.5, SRL 26.9, SRL→RLVR 28.3. This runs the same five arms on the embedded
model (SmolLM2-135M-Instruct) through the platform's own trainer (`srl_platform.train`, the
entrypoint a SageMaker job runs) and evaluator (`srl_platform.evaluate`), on two datasets:

- `arithmetic`: the bundled generated family, its `test` split held out;
- `gsm8k`: real GSM8K rows from `--gsm8k` (GSM8K's train.jsonl): the file's last
  `eval_problems` rows are held out, training problems are sampled from the rest.

Arms, at equal budgets (the same optimizer steps, and the same sequences through the backward pass
per step: `prompts_per_step` × `num_generations`):

- `base`: no training;
- `sft`: supervised fine-tuning on the expert solutions (every expert step, then the final-answer
  line), TRL's `SFTTrainer` through `srl train --stage distill --method sequence` with the expert
  as the teacher, `prompts_per_step × num_generations` solutions per step;
- `rlvr`: GRPO on the final-answer reward (`--stage rlvr`);
- `srl`: GRPO on the step-similarity reward (`--stage srl`);
- `srl_rlvr`: SRL for the first half of the steps, then RLVR from that adapter for the second half.

Dynamic sampling keeps each stage's filter but refills nothing (`--max-refill-rounds 0`), so every
GRPO step generates the same number of rollouts in every arm. Each arm is trained once per seed
(the seed is the trainer's and the sampled evaluation's; the problems are the same for every seed).

Reported per arm, on the held-out problems (bf16, batch 16): greedy accuracy, mean-of-k accuracy
(k sampled solutions per problem at temperature 1), mean SRL step reward on the held-out expert
steps, format-violation rate of those steps; and from training: the fraction of GRPO groups whose
rewards had zero variance (TRL's `frac_reward_zero_std`, averaged over steps: those groups give no
gradient, the reason SRL's dense reward teaches where RLVR's 0/1 reward cannot), reward curves and
wall time. Writes `results.json`, `results.md` and `reward_curves.png` under `--out-dir`, and
appends one JSON line to `--json-out`.

On a CUDA GPU (found automatically) the budgets are larger (`GPU_SCALE`), training runs in bf16 and
GRPO generates with vLLM when it is installed (see `srl_platform.train`).

    python bench/learning.py --scale smoke    # the tests' tiny random model: mechanics only
    python bench/learning.py --scale full --gsm8k ../shared/data/gsm8k/train.jsonl
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import append_json, machine

ARMS = ("base", "sft", "rlvr", "srl", "srl_rlvr")
BASE_MODEL = "smollm2-135m-instruct"
# Generated tokens: SRL writes one step, RLVR a whole solution (GSM8K's are longer); the evaluation's
# solve and step passes.
TOKENS = {"srl": 64, "rlvr": {"arithmetic": 128, "gsm8k": 192}, "solve": 192, "step": 64}
SCALES = {
    # smoke: every arm runs end to end on the tests' tiny random model (bench/common.tiny_model), in
    # about a minute: it shows the benchmark works; its figures say nothing about the method.
    "smoke": dict(model="tiny", seeds=(0,), steps=2, prompts_per_step=1, num_generations=4,
                  train_problems=16, eval_problems=4, eval_step_instances=4, samples_k=2,
                  tokens={"srl": 16, "rlvr": {"arithmetic": 32, "gsm8k": 32}, "solve": 32, "step": 16}),
    # full: what BENCHMARKS.md reports, on SmolLM2-135M-Instruct; sized to finish within 90 minutes on
    # 2 CPU cores with both datasets (measured here: one GRPO step of 4 rollouts takes 11-43 s, one
    # evaluation 1-2 min).
    "full": dict(model=BASE_MODEL, seeds=(0, 1), steps=4, prompts_per_step=1, num_generations=4,
                 train_problems=64, eval_problems=16, eval_step_instances=24, samples_k=2, tokens=TOKENS),
}
GPU_SCALE = dict(steps=8, prompts_per_step=4, num_generations=2, eval_problems=8, samples_k=2)
"""Multipliers applied to a scale when a CUDA GPU is present."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    parser.add_argument("--gsm8k", type=Path, default=None,
                        help="GSM8K train.jsonl (e.g. ../shared/data/gsm8k/train.jsonl); without it "
                             "only the arithmetic family runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the scale's seeds")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/learning"))
    parser.add_argument("--json-out", type=Path, default=None, help="append one JSON line here")
    args = parser.parse_args()
    started = time.monotonic()

    import torch

    from srl_platform.models import pull

    scale = dict(SCALES[args.scale])
    if args.seeds:
        scale["seeds"] = tuple(args.seeds)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if gpu:
        scale.update({k: scale[k] * v for k, v in GPU_SCALE.items()})
    if scale["model"] == "tiny":
        from common import tiny_model

        args.out_dir.mkdir(parents=True, exist_ok=True)
        scale["base"] = str(tiny_model(args.out_dir / "tiny-model"))
    else:
        scale["base"] = str(pull(scale["model"]))
    datasets = {"arithmetic": arithmetic_data(scale)}
    if args.gsm8k is not None:
        datasets["gsm8k"] = gsm8k_data(args.gsm8k, scale)
    host = machine()
    print(f"{args.scale}, model {scale['model']}: {len(datasets)} dataset(s) × seeds {list(scale['seeds'])} × {len(ARMS)} arms; "
          f"{scale['steps']} steps × {scale['prompts_per_step']} prompts × G={scale['num_generations']}; "
          f"{host['cpu_count']} cores, {host['cpu_model']}" + (f", GPU {gpu}" if gpu else ", no GPU"),
          flush=True)

    runs = []
    for name, (train, held_out) in datasets.items():
        workdir = args.out_dir / name
        write_inputs(workdir, train)
        for seed in scale["seeds"]:
            for arm in ARMS:
                run = run_arm(arm, name, seed, workdir, held_out, scale)
                runs.append(run)
                print(f"[{time.monotonic() - started:6.0f} s] {name} seed {seed} {arm}: "
                      f"greedy {run['accuracy']:.3f}, mean@{scale['samples_k']} {run['mean_of_k_accuracy']:.3f}, "
                      f"step reward {run['mean_step_reward']:.3f}, zero-variance groups "
                      f"{fmt(run['zero_variance_fraction'])} (train {run['train_seconds']:.0f} s, "
                      f"eval {run['eval_seconds']:.0f} s)", flush=True)

    summary = summarize(runs)
    record = {"bench": "learning", "scale": args.scale, **host, "gpu": gpu,
              "model": scale["model"], "seeds": list(scale["seeds"]),
              "budgets": {k: v for k, v in scale.items() if k not in ("seeds", "model", "base", "tokens")},
              "tokens": scale["tokens"],
              "datasets": {n: {"train_problems": len(t), "eval_problems": len(h)}
                           for n, (t, h) in datasets.items()},
              "summary": summary, "runs": runs, "wall_s": round(time.monotonic() - started, 1)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    table = markdown(record)
    (args.out_dir / "results.md").write_text(table + "\n")
    plot_curves(runs, args.out_dir / "reward_curves.png")
    append_json(args.json_out, {k: v for k, v in record.items() if k != "runs"})
    print("\n" + table)
    print(f"\nfiles: {args.out_dir}/results.json, results.md, reward_curves.png; "
          f"{args.scale} run took {record['wall_s']} s")
    return 0


# ---- data ---------------------------------------------------------------------------------------

def arithmetic_data(scale: dict) -> tuple[list[dict], list[dict]]:
    from srl_platform.tasks.arithmetic import generate_traces

    # Enough traces that both splits have what the scale asks for (the generator holds out ~20%).
    traces = generate_traces(6 * max(scale["train_problems"], scale["eval_problems"]), seed=20261203)
    train = [t for t in traces if t["split"] == "train"][: scale["train_problems"]]
    held_out = [t for t in traces if t["split"] == "test"][: scale["eval_problems"]]
    if len(train) < scale["train_problems"] or len(held_out) < scale["eval_problems"]:
        raise SystemExit(f"the arithmetic generator gave {len(train)} train / {len(held_out)} test "
                         f"traces, fewer than the scale asks for")
    return train, held_out


def gsm8k_data(path: Path, scale: dict) -> tuple[list[dict], list[dict]]:
    from srl_platform.tasks.math import sample
    from srl_platform.traces import read_gsm8k

    if not path.is_file():
        raise SystemExit(f"--gsm8k {path}: no such file")
    traces, rejected = read_gsm8k(path)
    if rejected:
        print(f"{path}: {len(rejected)} rows not usable as traces (first: {rejected[0]['quarantine_reason']})")
    n_eval = scale["eval_problems"]
    held_out = [{**t, "split": "test"} for t in traces[-n_eval:]]
    train = sample(traces[:-n_eval], scale["train_problems"], seed=20261203, source=path)
    return train, held_out


def with_answer_line(trace: dict) -> str:
    """The expert solution as the solve prompt asks for it: its steps, then `The answer is X.`"""
    return f"{trace['solution']}\nThe answer is {trace['answer']}."


def write_inputs(workdir: Path, train: list[dict]) -> None:
    from srl_platform.traces import write_jsonl

    write_jsonl(train, workdir / "train_traces.jsonl")
    # The SFT arm's data, in the shape sequence-level distillation trains on (prompt → completion).
    write_jsonl([{"id": t["id"], "question": t["question"], "answer": t["answer"],
                  "completion": with_answer_line(t), "verified": True} for t in train],
                workdir / "sft_examples.jsonl")


# ---- one arm ------------------------------------------------------------------------------------

def train(stage: str, data: Path, out: Path, seed: int, steps: int, scale: dict, extra: list[str]) -> dict:
    """One `srl train` run in this process, from scratch; its training summary and per-step metrics."""
    from srl_platform.train import main as train_main

    for old in (out, out.with_name(out.name + ".ckpt")):  # a rerun must not resume an earlier run
        shutil.rmtree(old, ignore_errors=True)
    argv = ["--stage", stage, "--tier", "gold", "--base-model", scale["base"], "--data", str(data),
            "--output-dir", str(out), "--checkpoint-dir", str(out.with_name(out.name + ".ckpt")),
            "--max-steps", str(steps), "--seed", str(seed), "--checkpoint-interval-minutes", "10000",
            *extra]
    print(f"$ srl train {' '.join(argv)}", flush=True)
    code = train_main(argv)
    if code != 0:
        raise SystemExit(f"srl train --stage {stage} exited {code}")
    summary = json.loads((out / "training_summary.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"summary": summary, "metrics": metrics}


def grpo_extra(stage: str, dataset: str, scale: dict) -> list[str]:
    extra = ["--prompts-per-step", str(scale["prompts_per_step"]),
             "--num-generations", str(scale["num_generations"]), "--max-refill-rounds", "0"]
    tokens = scale["tokens"]["rlvr"][dataset] if stage == "rlvr" else scale["tokens"]["srl"]
    extra += ["--max-completion-length", str(tokens)]
    return extra


def run_arm(arm: str, dataset: str, seed: int, workdir: Path, held_out: list[dict], scale: dict) -> dict:
    from srl_platform.evaluate import EvalSettings, evaluate

    out = workdir / f"seed{seed}" / arm
    traces = workdir / "train_traces.jsonl"
    steps = scale["steps"]
    phases: list[tuple[str, dict]] = []
    started = time.monotonic()
    adapter = None
    if arm == "sft":
        batch = scale["prompts_per_step"] * scale["num_generations"]
        phases.append(("sft", train("distill", workdir / "sft_examples.jsonl", out, seed, steps, scale,
                                    ["--method", "sequence", "--teacher-base-model", scale["base"],
                                     "--prompts-per-step", str(batch)])))
        adapter = out
    elif arm in ("rlvr", "srl"):
        phases.append((arm, train(arm, traces, out, seed, steps, scale, grpo_extra(arm, dataset, scale))))
        adapter = out
    elif arm == "srl_rlvr":
        first = max(1, steps // 2)
        srl_out = out.with_name(arm + ".srl")
        phases.append(("srl", train("srl", traces, srl_out, seed, first, scale,
                                    grpo_extra("srl", dataset, scale))))
        phases.append(("rlvr", train("rlvr", traces, out, seed, steps - first, scale,
                                     grpo_extra("rlvr", dataset, scale) + ["--init-from", str(srl_out)])))
        adapter = out
    train_seconds = time.monotonic() - started

    settings = EvalSettings(max_problems=None, max_step_instances=scale["eval_step_instances"],
                            samples_k=scale["samples_k"], seed=seed, solve_max_new_tokens=scale["tokens"]["solve"],
                            step_max_new_tokens=scale["tokens"]["step"])
    report = evaluate(scale["base"], held_out, adapter=str(adapter) if adapter else None, settings=settings)
    zero = [row["frac_reward_zero_std"] for _, phase in phases for row in phase["metrics"]
            if "frac_reward_zero_std" in row]
    return {
        "dataset": dataset, "seed": seed, "arm": arm,
        "accuracy": report["accuracy"], "correct": report["correct"], "problems": report["problems"],
        "mean_of_k_accuracy": report["mean_of_k_accuracy"], "samples_k": report["samples_k"],
        "mean_step_reward": report["mean_step_reward"], "step_instances": report["step_instances"],
        "format_violation_rate": report["format_violation_rate"],
        "mean_solve_tokens": report["mean_solve_tokens"],
        "zero_variance_fraction": statistics.fmean(zero) if zero else None,
        "zero_variance_by_stage": {stage: statistics.fmean(z) for stage, z in (
            (stage, [r["frac_reward_zero_std"] for s, p in phases if s == stage for r in p["metrics"]
                     if "frac_reward_zero_std" in r]) for stage in ("srl", "rlvr")) if z},
        "curves": [{"stage": stage, "points": [[r["step"], r[key]] for r in phase["metrics"] if key in r]}
                   for stage, phase in phases for key in ["loss" if stage == "sft" else "reward"]],
        "train_steps": sum(p["summary"]["global_step"] for _, p in phases),
        "train_seconds": round(train_seconds, 1), "eval_seconds": report["wall_seconds"],
    }


# ---- reporting ----------------------------------------------------------------------------------

def fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def mean_sd(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None}
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


FIGURES = ("accuracy", "mean_of_k_accuracy", "mean_step_reward", "format_violation_rate",
           "zero_variance_fraction", "train_seconds")


def summarize(runs: list[dict]) -> dict:
    """Per dataset and arm: each figure's mean and standard deviation over seeds."""
    out: dict = {}
    for run in runs:
        out.setdefault(run["dataset"], {}).setdefault(run["arm"], []).append(run)
    return {dataset: {arm: {f: mean_sd([r[f] for r in group]) for f in FIGURES} | {"seeds": len(group)}
                      for arm, group in arms.items()} for dataset, arms in out.items()}


def markdown(record: dict) -> str:
    b, t = record["budgets"], record["tokens"]
    lines = [f"Seeds {record['seeds']}; every trained arm: {b['steps']} optimizer steps × "
             f"{b['prompts_per_step']} prompts × G={b['num_generations']} rollouts (SFT: "
             f"{b['prompts_per_step'] * b['num_generations']} solutions per step; SRL→RLVR: "
             f"{max(1, b['steps'] // 2)} SRL + {b['steps'] - max(1, b['steps'] // 2)} RLVR steps); "
             f"model {record['model']}; rollout tokens: SRL {t['srl']}, RLVR {t['rlvr']}; evaluation: "
             f"solve {t['solve']}, step {t['step']} tokens, greedy, bf16. Figures are the mean "
             f"(± sd) over seeds; mean@k is k={b['samples_k']} samples per problem at temperature 1."]
    for dataset, arms in record["summary"].items():
        sizes = record["datasets"][dataset]
        lines += ["", f"**{dataset}** ({sizes['train_problems']} training problems, "
                      f"{sizes['eval_problems']} held out)", "",
                  f"| arm | greedy accuracy | mean@{b['samples_k']} accuracy | mean step reward | "
                  "format violations | zero-variance GRPO groups | train s |",
                  "|---|---|---|---|---|---|---|"]
        for arm in ARMS:
            if arm not in arms:
                continue
            s = arms[arm]
            cells = []
            for f in FIGURES:
                m, sd = s[f]["mean"], s[f]["sd"]
                digits = 0 if f == "train_seconds" else 3
                cells.append("n/a" if m is None else f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd else ""))
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(runs: list[dict], path: Path) -> None:
    """Training reward per step: one row per dataset; SRL step reward, RLVR outcome reward, SFT loss."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    datasets = sorted({r["dataset"] for r in runs})
    panels = (("srl", "SRL step reward"), ("rlvr", "RLVR outcome reward"), ("sft", "SFT loss"))
    fig, axes = plt.subplots(len(datasets), 3, figsize=(12, 3.2 * len(datasets)), squeeze=False)
    colors = {arm: f"C{i}" for i, arm in enumerate(ARMS)}
    for row, dataset in enumerate(datasets):
        for col, (stage, title) in enumerate(panels):
            ax = axes[row][col]
            for run in (r for r in runs if r["dataset"] == dataset):
                offset = 0
                for curve in run["curves"]:
                    if curve["stage"] == stage and curve["points"]:
                        xs = [offset + x for x, _ in curve["points"]]
                        ax.plot(xs, [y for _, y in curve["points"]], color=colors[run["arm"]],
                                alpha=0.8, marker="o", markersize=2,
                                label=f"{run['arm']} s{run['seed']}")
                    offset += len(curve["points"])
            ax.set_title(f"{dataset}: {title}", fontsize=9)
            ax.set_xlabel("optimizer step", fontsize=8)
            ax.tick_params(labelsize=7)
            if ax.lines:
                ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
