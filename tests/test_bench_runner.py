"""`srl bench`: the arguments each benchmark gets per scale, BENCHMARKS.md sections replaced in place
and kept grouped by scale, and a real run over a bench/ folder of small scripts (one fails, the
router is skipped when distill failed, the CLI's exit status says so). The real benchmarks are
not run here: each is a benchmark, run by `srl bench` itself."""

from __future__ import annotations

from pathlib import Path

from srl_platform.bench_runner import BENCHES, argv, begin_marker, end_marker, render, run, write_section
from srl_platform.cli import main as srl_main

BENCH = {b.name: b for b in BENCHES}


def test_every_benchmark_script_in_bench_has_an_entry_and_both_scales():
    scripts = {p.stem for p in (Path(__file__).resolve().parents[1] / "bench").glob("*.py")} - {"common"}
    assert scripts == set(BENCH)
    assert all(set(b.args) == {"smoke", "full"} for b in BENCHES)


def test_arguments_fill_in_the_artefact_root_gsm8k_and_json_out(tmp_path):
    common = dict(artifacts=tmp_path / "art", work=tmp_path / "w", json_out=tmp_path / "b.jsonl")
    assert argv(BENCH["router"], "smoke", gsm8k=None, **common) == [
        "--artifacts", str(tmp_path / "art"), "--decisions", "5000", "--json-out", str(tmp_path / "b.jsonl")]
    assert argv(BENCH["learning"], "full", gsm8k=None, **common) == [
        "--scale", "full", "--out-dir", str(tmp_path / "w" / "learning"), "--json-out", str(tmp_path / "b.jsonl")]
    with_gsm8k = argv(BENCH["learning"], "smoke", gsm8k=Path("/data/train.jsonl"), **{**common, "json_out": None})
    assert with_gsm8k[-2:] == ["--gsm8k", "/data/train.jsonl"]
    assert "--json-out" not in with_gsm8k


def _section(scale, name, body):
    return f"{begin_marker(scale, name)}\n{body}\n{end_marker(scale, name)}"


def test_sections_are_replaced_in_place_and_grouped_by_scale(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nHand-written analysis.\n")
    write_section(doc, "smoke", "rewards", _section("smoke", "rewards", "first"))
    write_section(doc, "full", "rewards", _section("full", "rewards", "full one"))
    write_section(doc, "smoke", "router", _section("smoke", "router", "second"))
    write_section(doc, "smoke", "rewards", _section("smoke", "rewards", "rerun"))
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written analysis.\n")
    assert "first" not in text and text.count(begin_marker("smoke", "rewards")) == 1
    order = [text.index(s) for s in ("rerun", "second", "full one")]
    assert order == sorted(order), text  # smoke's two sections together, before full's part
    assert text.index("--scale smoke`: every") < order[0] and text.index("--scale full`: every") > order[1]


def _fake_bench_dir(tmp_path, failing=()):
    bench = tmp_path / "bench"
    bench.mkdir()
    for b in BENCHES:
        code = ("import sys\nprint('figures of', __file__.rsplit('/', 1)[-1], sys.argv[1:])\n"
                + ("print('boom', file=sys.stderr)\nsys.exit(3)\n" if b.name in failing else ""))
        (bench / f"{b.name}.py").write_text(code)
    return bench


def test_a_run_writes_every_section_and_reports_failures(tmp_path, capsys):
    bench = _fake_bench_dir(tmp_path, failing=("distill",))
    out = tmp_path / "BENCHMARKS.md"
    code = run("smoke", bench, out, work=tmp_path / "work", json_out=None)
    assert code == 1
    text = out.read_text()
    for b in BENCHES:
        assert begin_marker("smoke", b.name) in text and end_marker("smoke", b.name) in text
    rewards = text[text.index(begin_marker("smoke", "rewards")):text.index(end_marker("smoke", "rewards"))]
    assert ": ok" in rewards and "python bench/rewards.py --scale smoke" in rewards
    assert "figures of rewards.py ['--scale', 'smoke']" in rewards
    assert "cores (" in rewards and "s wall." in rewards
    distill = text[text.index(begin_marker("smoke", "distill")):text.index(end_marker("smoke", "distill"))]
    assert "FAILED (exit 3)" in distill and "boom" in distill
    router = text[text.index(begin_marker("smoke", "router")):text.index(end_marker("smoke", "router"))]
    assert "SKIPPED (distill did not succeed in this run)" in router and "figures of" not in router
    assert "failed: distill, router" in capsys.readouterr().out


def test_the_cli_runs_a_selection_and_rejects_unknown_names(tmp_path, capsys):
    bench = _fake_bench_dir(tmp_path)
    out = tmp_path / "B.md"
    common = ["--bench-dir", str(bench), "--output", str(out), "--work-dir", str(tmp_path / "w")]
    assert srl_main(["bench", "--scale", "full", "--only", "rewards", "collector", *common]) == 0
    text = out.read_text()
    assert begin_marker("full", "collector") in text and begin_marker("full", "cascade") not in text
    assert srl_main(["bench", "--only", "nope", *common]) == 2
    assert "unknown benchmark(s) ['nope']" in capsys.readouterr().err


def test_output_tables_render_as_tables_and_other_lines_verbatim():
    out = render(["2 cores", "", "| a | b |", "|---|---|", "| 1 | 2 |", "took 3 s"])
    assert out == ["```text", "2 cores", "```", "", "| a | b |", "|---|---|", "| 1 | 2 |", "",
                   "```text", "took 3 s", "```", ""]
