"""`srl bench`: every benchmark in `bench/` at one scale, each a subprocess, each written to
BENCHMARKS.md as its own section (command, machine, wall time, exit status, the figures it printed).

A section sits between `<!-- srl bench SCALE: NAME -->` and `<!-- /srl bench SCALE: NAME -->`: a
rerun replaces it in place and leaves every other line of the file (the hand-written analysis
above) as it was. `smoke` runs every benchmark at toy sizes, to show each one runs here and what
its figures look like (minutes on 2 cores); `full` is what the analysis in BENCHMARKS.md is based on.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

SCALES = ("smoke", "full")
OUTPUT_LINES = 80
"""The last lines of a benchmark's stdout kept in its section (its tables come last)."""


@dataclass(frozen=True)
class Bench:
    """One benchmark script and its arguments at each scale (`{artifacts}`, `{gsm8k}`: see `argv`)."""

    name: str
    args: dict[str, list[str]]
    needs: tuple[str, ...] = field(default=())
    """Benchmarks that must have succeeded first (their outputs are this one's inputs)."""


# In run order. `distill` keeps its cascade's artefact store for `router`.
BENCHES = (
    Bench("rewards", {"smoke": ["--scale", "smoke"], "full": ["--scale", "full"]}),
    Bench("generation", {"smoke": ["--scale", "smoke"], "full": ["--scale", "full"]}),
    Bench("collector", {"smoke": ["--scale", "quick"], "full": ["--scale", "full"]}),
    Bench("train_step", {"smoke": ["--scale", "smoke"], "full": ["--scale", "full"]}),
    Bench("collaboration", {"smoke": ["--scale", "smoke"], "full": ["--scale", "full"]}),
    Bench("cascade", {"smoke": ["--scale", "smoke"], "full": ["--scale", "full"]}),
    Bench("interruptions", {"smoke": ["--intervals", "5", "--time-scale", "60", "--kill-after", "6",
                                      "--max-steps", "60"], "full": []}),
    Bench("distill", {"smoke": ["--scale", "smoke", "--keep", "{artifacts}"],
                      "full": ["--scale", "full", "--keep", "{artifacts}"]}),
    Bench("router", {"smoke": ["--artifacts", "{artifacts}", "--decisions", "5000"],
                     "full": ["--artifacts", "{artifacts}"]}, needs=("distill",)),
    Bench("learning", {"smoke": ["--scale", "smoke", "--out-dir", "{work}/learning", "{gsm8k}"],
                       "full": ["--scale", "full", "--out-dir", "{work}/learning", "{gsm8k}"]}),
)


def machine() -> dict:
    """CPU model, core count, architecture, GPU (nvidia-smi's name, if any) and load right now."""
    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    gpu = None
    if shutil.which("nvidia-smi"):
        try:
            found = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=20)
            gpu = ", ".join(line.strip() for line in found.stdout.splitlines() if line.strip()) or None
        except (OSError, subprocess.SubprocessError):
            gpu = None
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "machine": platform.machine(), "gpu": gpu,
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def describe(host: dict) -> str:
    return (f"{host['cpu_count']} cores ({host['cpu_model']}, {host['machine']}), "
            + (f"GPU {host['gpu']}" if host["gpu"] else "no GPU") + f", load {host['loadavg_1m']} at start")


def argv(bench: Bench, scale: str, *, artifacts: Path, work: Path, gsm8k: Path | None,
         json_out: Path | None) -> list[str]:
    """The benchmark's arguments at `scale`: `{artifacts}` is the cascade artefact root `distill`
    keeps and `router` reads, `{work}` a scratch folder, `{gsm8k}` becomes `--gsm8k PATH` (or nothing)."""
    out = []
    for arg in bench.args[scale]:
        if arg == "{gsm8k}":
            out += ["--gsm8k", str(gsm8k)] if gsm8k is not None else []
        else:
            out.append(arg.format(artifacts=artifacts, work=work))
    return out + (["--json-out", str(json_out)] if json_out is not None else [])


def section(bench: Bench, scale: str, command: str, host: dict, result: dict) -> str:
    """The markdown section of one run, markers included."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    status = ("ok" if result["returncode"] == 0 else
              result.get("skipped") or f"FAILED (exit {result['returncode']})")
    lines = [begin_marker(scale, bench.name),
             f"### `bench/{bench.name}.py` at scale {scale}: {status}", "",
             f"{when}; {describe(host)}; {result['wall_s']:.1f} s wall.", "",
             "```", command, "```", ""]
    output = result["stdout"].rstrip("\n").splitlines()
    if len(output) > OUTPUT_LINES:
        lines.append(f"Last {OUTPUT_LINES} of {len(output)} output lines:")
        output = output[-OUTPUT_LINES:]
    if result["returncode"] != 0 and result.get("stderr_tail"):
        output += ["", "stderr (last lines):", *result["stderr_tail"]]
    lines += [*render(output), end_marker(scale, bench.name)]
    return "\n".join(lines)


def render(output: list[str]) -> list[str]:
    """A benchmark's output as markdown: its tables (lines starting with `|`) as tables, every other
    run of lines verbatim in a text block."""
    out, text = [], []

    def flush():
        while text and not text[-1].strip():
            text.pop()
        while text and not text[0].strip():
            text.pop(0)
        if text:
            out.extend(["```text", *text, "```", ""])
        text.clear()

    for line in output:
        if line.startswith("|"):
            flush()
            out.append(line)
        else:
            if out and out[-1].startswith("|"):
                out.append("")
            text.append(line)
    flush()
    return out


def begin_marker(scale: str, name: str) -> str:
    return f"<!-- srl bench {scale}: {name} -->"


def end_marker(scale: str, name: str) -> str:
    return f"<!-- /srl bench {scale}: {name} -->"


SCALE_HEADINGS = {
    "smoke": "## `srl bench --scale smoke`: every benchmark at toy sizes (generated)",
    "full": "## `srl bench --scale full`: every benchmark at full size (generated)",
}


def write_section(path: Path, scale: str, name: str, text: str) -> None:
    """Replace the section of (scale, name) in `path`, or append it under the scale's heading."""
    doc = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin_marker(scale, name)) + r".*?" + re.escape(end_marker(scale, name)),
                         re.DOTALL)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text, doc, count=1)
    else:
        intro = (f"{SCALE_HEADINGS[scale]}\n\nWritten by `srl bench --scale {scale}`; a rerun replaces "
                 "each section in place.")
        if SCALE_HEADINGS[scale] not in doc:
            doc = doc.rstrip("\n") + "\n\n" + intro + "\n"
        # After the scale's last section (or its introduction), so each scale's sections stay together.
        ends = [m.end() for m in re.finditer(re.escape(f"<!-- /srl bench {scale}: ") + r"\S+ -->", doc)]
        at = ends[-1] if ends else (doc.index(intro) + len(intro) if intro in doc
                                    else doc.index(SCALE_HEADINGS[scale]) + len(SCALE_HEADINGS[scale]))
        doc = doc[:at] + "\n\n" + text + "\n" + doc[at:]
    path.write_text(doc.rstrip("\n") + "\n", encoding="utf-8")


def run_one(script: Path, args: list[str], cwd: Path, log: Path) -> dict:
    """Run one benchmark; echo its stdout live (prefixed), keep it; stderr to `log`."""
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stdout = []
    with log.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen([sys.executable, str(script), *args], cwd=cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        for line in proc.stdout:
            stdout.append(line)
            print(f"  [{script.stem}] {line}", end="", flush=True)
        returncode = proc.wait()
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
    return {"returncode": returncode, "stdout": "".join(stdout), "stderr_tail": tail,
            "wall_s": time.monotonic() - started}


def run(scale: str, bench_dir: Path, output: Path, *, only: list[str] | None = None,
        gsm8k: Path | None = None, work: Path = Path("runs/bench"),
        json_out: Path | None = Path("runs/bench.jsonl")) -> int:
    """Run the benchmarks at `scale`, writing each one's section to `output` as soon as it ends.
    Returns 0 when every one succeeded, 1 otherwise."""
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r}: expected one of {SCALES}")
    names = [b.name for b in BENCHES]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}: expected some of {names}")
    missing = [b.name for b in BENCHES if not (bench_dir / f"{b.name}.py").is_file()]
    if missing:
        raise FileNotFoundError(f"{bench_dir}: no {', '.join(m + '.py' for m in missing)} (run srl bench "
                                "from a clone of the repository, or give --bench-dir)")
    if gsm8k is not None and not gsm8k.is_file():
        raise FileNotFoundError(f"--gsm8k {gsm8k}: no such file")
    work = work.resolve()
    artifacts = work / f"{scale}-cascade-artifacts"
    json_out = json_out.resolve() if json_out is not None else None
    gsm8k = gsm8k.resolve() if gsm8k is not None else None
    output = output.resolve()
    cwd = bench_dir.resolve().parent
    selected = [b for b in BENCHES if only is None or b.name in only]
    outcome: dict[str, int] = {}
    total = time.monotonic()
    for i, bench in enumerate(selected, 1):
        host = machine()
        args = argv(bench, scale, artifacts=artifacts, work=work, gsm8k=gsm8k, json_out=json_out)
        script = bench_dir.resolve() / f"{bench.name}.py"
        command = shlex.join(["python", f"bench/{bench.name}.py", *[_relative(a, cwd) for a in args]])
        print(f"[{i}/{len(selected)}] {command}", flush=True)
        failed = [n for n in bench.needs
                  if outcome.get(n) != 0 and not (n not in outcome and _reuse_ok(n, artifacts))]
        if failed:
            result = {"returncode": 1, "stdout": "", "wall_s": 0.0,
                      "skipped": f"SKIPPED ({', '.join(failed)} did not succeed in this run)"}
        else:
            result = run_one(script, args, cwd, work / "logs" / f"{scale}-{bench.name}.stderr")
        outcome[bench.name] = result["returncode"]
        write_section(output, scale, bench.name, section(bench, scale, command, host, result))
        print(f"[{i}/{len(selected)}] {bench.name}: "
              + ("ok" if result["returncode"] == 0 else result.get("skipped") or f"exit {result['returncode']}")
              + f" in {result['wall_s']:.0f} s → {output}", flush=True)
    bad = [n for n, code in outcome.items() if code != 0]
    print(f"srl bench --scale {scale}: {len(outcome) - len(bad)}/{len(outcome)} ok in "
          f"{time.monotonic() - total:.0f} s" + (f"; failed: {', '.join(bad)}" if bad else ""), flush=True)
    return 1 if bad else 0


def _reuse_ok(name: str, artifacts: Path) -> bool:
    """A dependency not run this time (`--only`) counts when its output is still there."""
    return name == "distill" and (artifacts / "serving" / "manifest.json").is_file()


def _relative(arg: str, cwd: Path) -> str:
    try:
        return str(Path(arg).relative_to(cwd)) if arg.startswith("/") else arg
    except ValueError:
        return arg


def default_bench_dir() -> Path:
    """bench/ beside the srl_platform package (a clone, or an editable install of one)."""
    return Path(__file__).resolve().parents[1] / "bench"
