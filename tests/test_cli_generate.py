"""`srl generate` and `srl collect`, run in process through the real `srl` parser.

`generate` runs end to end with scripted models (the real-model collaboration is tested with the
`generated_traces` asset): `ClientSpec.build` is patched to hand out `ScriptedClient`s by spec
target, so each test states what every role said and checks the files and the summary.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import re
from collections import Counter
from pathlib import Path

import boto3
import pytest
from test_collaboration import BOOKS, PROPOSALS, SHOPPING, SOLUTIONS, ScriptedClient

from srl_platform.cli import main
from srl_platform.cli_generate import _open_clients
from srl_platform.clients import ClientSpec
from srl_platform.collector import CollectorConfig, read_collected
from srl_platform.tasks import generate
from srl_platform.traces import read_records, write_jsonl

FIXTURES = Path(__file__).parent / "fixtures"


def srl(*argv: str) -> int:
    return main(list(argv))


class ClosableClient(ScriptedClient):
    def __init__(self, name: str, script) -> None:
        super().__init__(name, script)
        self.closed = False

    def close(self) -> None:
        self.closed = True


class ScriptedModels(dict):
    """Spec target → scripted client, and the specs built, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.built: list[str] = []


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch) -> ScriptedModels:
    """`ClientSpec.build` hands out `models[target]`: `transformers:proposer` builds `models["proposer"]`."""
    clients = ScriptedModels()

    def build(spec: ClientSpec) -> ClosableClient:
        clients.built.append(str(spec))
        return clients[spec.target]

    monkeypatch.setattr(ClientSpec, "build", build)
    return clients


def scripted_roles(models: ScriptedModels) -> None:
    """The proposer says PROPOSALS in turn; the solver answers each question from SOLUTIONS in turn."""
    proposals, attempts = iter(PROPOSALS), Counter()

    def solve(messages):
        question = messages[-1]["content"]
        attempts[question] += 1
        return SOLUTIONS[question][(attempts[question] - 1) % len(SOLUTIONS[question])]

    models["proposer"] = ClosableClient("proposer", lambda messages: next(proposals))
    models["solver"] = ClosableClient("solver", solve)


# ---- srl generate --------------------------------------------------------------------------------

def test_generate_writes_traces_rejects_and_report(
    tmp_path: Path, models: ScriptedModels, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted_roles(models)
    scores = iter(["Score: 9", "Score: 3"])
    models["judge"] = ClosableClient("judge", lambda messages: next(scores))
    out = tmp_path / "run"
    code = srl("generate", "--proposals", "7", "--solver-attempts", "2", "--out", str(out),
               "--proposer", "transformers:proposer", "--solver", "transformers:solver",
               "--judge", "transformers:judge", "--judge-min-score", "5")
    assert code == 0
    printed = capsys.readouterr().out

    traces = read_records(out / "traces.jsonl")
    assert [t["question"] for t in traces] == [SHOPPING]
    lineage = traces[0]["meta"]["lineage"]
    assert (lineage["proposer"], lineage["solver"], lineage["judge"]) == \
        ("scripted:proposer", "scripted:solver", "scripted:judge")
    assert lineage["run"] == f"srl-generate:{out.resolve()}"
    rejects = read_records(out / "rejects.jsonl")
    reasons = {"answer_mismatch": 1, "client_error": 1, "duplicate_problem": 1, "judge_low_score": 1,
               "proposal_unparseable": 1, "step_format": 1}
    assert dict(Counter(r["reason"] for r in rejects)) == reasons
    assert next(r for r in rejects if r["reason"] == "judge_low_score")["question"] == BOOKS

    report = json.loads((out / "report.json").read_text())
    assert report["family"] == "arithmetic" and report["source"] is None
    assert report["stats"]["proposals"] == 7 and report["stats"]["accepted"] == 1
    assert report["stats"]["reasons"] == reasons
    assert report["models"] == {"proposer": "scripted:proposer", "solver": "scripted:solver",
                                "judge": "scripted:judge"}
    assert report["specs"]["judge"] == "transformers:judge"
    assert report["config"]["judge_min_score"] == 5 and report["config"]["seed"] == 0
    assert report["weakness_profile"] == {"error_rates": {}, "counts": {}, "source": ""}
    usage = report["usage"]
    assert (usage["by_role"]["proposer"]["calls"], usage["by_role"]["solver"]["calls"],
            usage["by_role"]["judge"]["calls"]) == (7, 8, 2)

    # Progress (the collaboration's log), then the summary table, then where the files went.
    assert "arithmetic: proposing 7 problems with scripted:proposer" in printed
    assert "arithmetic: judging 2 verified solutions with scripted:judge" in printed
    assert re.search(r"^proposals +7$", printed, re.MULTILINE) and re.search(r"^accepted +1$", printed, re.MULTILINE)
    assert re.search(r"^rejected +6$", printed, re.MULTILINE)
    assert all(re.search(rf"^  {reason} +{n}$", printed, re.MULTILINE) for reason, n in reasons.items())
    total = usage["total"]
    assert re.search(rf"^total +17 +1 +{total['input_tokens']:,} +{total['output_tokens']:,} "
                     rf"+{total['cost_usd']:.4f}$", printed, re.MULTILINE)
    assert re.search(r"^solver +8 +0 ", printed, re.MULTILINE)
    assert f"traces: 1 → {out / 'traces.jsonl'}" in printed and f"report: {out / 'report.json'}" in printed
    assert all(models[role].closed for role in ("proposer", "solver", "judge"))


@pytest.mark.parametrize("nested", [False, True], ids=["srl-eval-report", "tier-eval-report"])
def test_generate_aims_at_the_weakness_report(
    tmp_path: Path, models: ScriptedModels, capsys: pytest.CaptureFixture[str], nested: bool
) -> None:
    """Farm problems were all missed: with --focus 1 every target is farm. No proposal parses, so
    nothing is accepted, which is an outcome, not a failure: the exit code is 0."""
    evaluated = generate("arithmetic", 120, 5)
    results = [{"id": t["id"], "correct": t["meta"]["template"] != "farm"} for t in evaluated]
    evaluation = {"adapter": "runs/bronze", "accuracy": 0.8, "results": results}
    report_path = tmp_path / "eval.json"
    report_path.write_text(json.dumps({"tier": "bronze", "adapter": evaluation} if nested else evaluation))
    traces_path = write_jsonl(evaluated, tmp_path / "evaluated.jsonl")
    models["proposer"] = ClosableClient("proposer", lambda messages: "I'd rather not.")
    models["solver"] = ClosableClient("solver", lambda messages: "unused")
    out = tmp_path / "run"
    code = srl("generate", "--proposals", "12", "--focus", "1", "--out", str(out),
               "--proposer", "transformers:proposer", "--solver", "transformers:solver",
               "--weakness-report", str(report_path), "--weakness-traces", str(traces_path))
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    profile = report["weakness_profile"]
    assert profile["source"] == str(report_path) and profile["error_rates"]["template"]["farm"] == 1.0
    assert report["stats"]["targets"]["template"] == {"farm": 12}
    assert read_records(out / "traces.jsonl") == [] and len(read_records(out / "rejects.jsonl")) == 12
    assert f"weakness profile from {report_path}" in capsys.readouterr().out


def test_roles_with_the_same_spec_share_one_client(models: ScriptedModels) -> None:
    models["smol"] = ClosableClient("smol", lambda messages: "")
    args = argparse.Namespace(proposer="transformers:smol", solver="transformers:smol", judge=None)
    roles = _open_clients(args)
    assert roles["proposer"] is roles["solver"] is models["smol"] and roles["judge"] is None
    assert models.built == ["transformers:smol"]


GSM8K_SAMPLE = FIXTURES / "gsm8k_sample.jsonl"


@pytest.mark.parametrize("argv, message", [
    (["--family", "gsm8k"], "--family gsm8k reads its example problems from a data file: give it with --source"),
    (["--family", "s1k", "--source", "missing.jsonl"], "--source missing.jsonl: "),
    (["--family", "gsm8k", "--source", str(GSM8K_SAMPLE)],
     f"--source {GSM8K_SAMPLE}: {GSM8K_SAMPLE}: asked for 24 examples but it has 4 usable rows"),
    (["--source", "x.jsonl"], "--source x.jsonl: the arithmetic family generates its problems"),
    (["--proposer", "gpt-4o"],
     "--proposer: client spec 'gpt-4o' must start with one of transformers:, openai:, bedrock:"),
    (["--solver", "transformers:smol?temperature=0.2"],
     "--solver: client spec 'transformers:smol?temperature=0.2': unknown option 'temperature' for transformers"),
    (["--judge", "openai:http://127.0.0.1:8000/v1"],
     "--judge: openai client spec for http://127.0.0.1:8000/v1 needs ?model=NAME"),
    (["--proposer", "transformers:no-such-model"],
     "--proposer transformers:no-such-model: base model 'no-such-model' is neither a directory nor a known model"),
    (["--judge-min-score", "6"], "--judge-min-score 6 needs --judge SPEC"),
    (["--weakness-report", "r.json"], "--weakness-report needs --weakness-traces too"),
    (["--weakness-traces", "t.jsonl"], "--weakness-traces needs --weakness-report too"),
    (["--weakness-report", "missing.json", "--weakness-traces", "t.jsonl"],
     "--weakness-report missing.json: cannot read it as JSON"),
])
def test_generate_input_errors_exit_2_naming_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    argv: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert srl("generate", "--out", "run", *argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_generate_rejects_a_report_without_results_and_an_out_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"accuracy": 0.5}))
    traces = write_jsonl(generate("arithmetic", 3, 0), tmp_path / "t.jsonl")
    assert srl("generate", "--out", str(tmp_path / "run"), "--weakness-report", str(report),
               "--weakness-traces", str(traces)) == 2
    assert f"--weakness-report {report}: no per-problem 'results' list" in capsys.readouterr().err
    assert srl("generate", "--out", str(report)) == 2
    assert f"--out {report} is a file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--family", "algebra"], "argument --family: invalid choice: 'algebra'"),
    (["--proposals", "0"], "argument --proposals: must be a positive integer, got '0'"),
    (["--solver-attempts", "two"], "argument --solver-attempts: must be a positive integer, got 'two'"),
    (["--focus", "1.5"], "argument --focus: must be a number from 0 to 1, got '1.5'"),
    (["--judge-min-score", "11"], "argument --judge-min-score: must be a number from 1 to 10, got '11'"),
])
def test_generate_argument_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str
                                         ) -> None:
    with pytest.raises(SystemExit) as exited:
        srl("generate", "--out", "unused", *argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_help_lists_the_commands_and_the_spec_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        srl("--help")
    printed = capsys.readouterr().out
    assert re.search(r"^ +generate +write new expert traces", printed, re.MULTILINE)
    assert re.search(r"^ +collect +ingest serving logs", printed, re.MULTILINE)

    with pytest.raises(SystemExit):
        srl("generate", "--help")
    printed = capsys.readouterr().out
    assert "KIND:TARGET[?option=value&...]" in printed and "exit codes:" in printed
    assert "transformers: adapter, dtype, batch_size" in printed and "timeout_s" in printed
    examples = re.findall(r"^  ((?:transformers|openai|bedrock):\S+)$", printed, re.MULTILINE)
    assert len(examples) == 4
    for example in examples:  # every example in the help parses, its target whole
        spec = ClientSpec.parse(example)
        assert example.startswith(f"{spec.kind}:{spec.target}")
    assert ClientSpec.parse(examples[-1]).target == "anthropic.claude-3-5-haiku-20241022-v1:0"

    with pytest.raises(SystemExit):
        srl("collect", "--help")
    printed = capsys.readouterr().out
    defaults = CollectorConfig()
    assert f"oversized_completion (default: {defaults.max_completion_chars})" in " ".join(printed.split())
    assert f"oversized_prompt (default: {defaults.max_prompt_chars})" in " ".join(printed.split())
    assert "AWS_ENDPOINT_URL" in printed


# ---- srl collect ---------------------------------------------------------------------------------

def log_row(n: int, **changes) -> dict:
    return {"prompt": f"What is {n} + {n}?", "completion": f"{2 * n}", "model": "smollm2",
            "adapter_version": "gold-3", "latency_ms": 12.5, "prompt_tokens": 9, "completion_tokens": 2,
            **changes}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """Two files: 4 good rows, 2 duplicates (one within a file, one across), 3 bad lines, 1 blank."""
    folder = tmp_path / "logs"
    write_lines(folder / "2025-06-01" / "a.jsonl", [
        json.dumps(log_row(1)), json.dumps(log_row(2)), '{"prompt": "cut off', "",
        json.dumps(log_row(1)), json.dumps(log_row(3, completion="x" * 50)),
    ])
    write_lines(folder / "2025-06-02" / "b.jsonl", [
        json.dumps(log_row(2)), json.dumps(log_row(4)), json.dumps(log_row(5)),
        json.dumps({k: v for k, v in log_row(6).items() if k != "model"}),
    ])
    (folder / "2025-06-02" / ".c.jsonl").write_text("{")  # still being written: not listed
    return folder


def test_collect_writes_parts_and_quarantine_and_a_rerun_adds_nothing(
    tmp_path: Path, logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, out = tmp_path / "state" / "collector.sqlite", tmp_path / "collected"
    argv = ("collect", str(logs), "--state", str(state), "--out", str(out), "--max-completion-chars", "40")
    assert srl(*argv) == 0
    printed = capsys.readouterr().out
    assert f"2 *.jsonl files under {logs}" in printed
    assert "a.jsonl: collecting" in printed  # the collector's progress
    assert "files: 2 listed, 2 collected, 0 skipped (collected before)" in printed
    assert "lines: 10 (1 blank)" in printed and "rows: 4 new, 2 duplicates" in printed
    assert "quarantined: 3" in printed
    assert all(re.search(rf"^  {reason} +1$", printed, re.MULTILINE)
               for reason in ("bad_json", "missing_field", "oversized_completion"))
    assert f"collected so far ({state}): 2 files, 4 rows, 2 duplicates, 3 quarantined" in printed
    assert "nothing new" not in printed

    rows = list(read_collected(out))
    assert sorted(r["prompt"] for r in rows) == [f"What is {n} + {n}?" for n in (1, 2, 4, 5)]
    quarantined = [q for path in sorted((out / "quarantine").glob("*.jsonl")) for q in read_records(path)]
    assert {(q["reason"], q["line"]) for q in quarantined} == \
        {("bad_json", 3), ("oversized_completion", 6), ("missing_field", 4)}
    written = {path: path.read_bytes() for path in out.rglob("*.*")}
    assert len([p for p in written if p.suffix == ".parquet"]) == 2

    assert srl(*argv) == 0
    printed = capsys.readouterr().out
    assert "files: 2 listed, 0 collected, 2 skipped (collected before)" in printed
    assert "rows: 0 new, 0 duplicates" in printed and "quarantined: 0" in printed
    assert f"collected so far ({state}): 2 files, 4 rows, 2 duplicates, 3 quarantined" in printed
    assert "nothing new: every file was collected before, so this run added nothing" in printed
    assert {path: path.read_bytes() for path in out.rglob("*.*")} == written


def test_collect_errors(tmp_path: Path, logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, out = tmp_path / "state.sqlite", tmp_path / "out"
    missing = tmp_path / "nowhere"
    assert srl("collect", str(missing), "--state", str(state), "--out", str(out)) == 2
    assert f"error: SOURCE {missing}: log source {missing} is not a folder" in capsys.readouterr().err

    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database, just text that is long enough to have a header page " * 20)
    assert srl("collect", str(logs), "--state", str(junk), "--out", str(out)) == 2
    assert f"error: --state {junk}: file is not a database" in capsys.readouterr().err

    with open(tmp_path / "state.sqlite.lock", "w") as lock:  # another collector at work
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert srl("collect", str(logs), "--state", str(state), "--out", str(out)) == 75
    assert "another collector is using the state" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exited:
        srl("collect", str(logs), "--state", str(state), "--out", str(out), "--max-prompt-chars", "0")
    assert exited.value.code == 2
    assert "argument --max-prompt-chars: must be a positive integer, got '0'" in capsys.readouterr().err


def test_collect_from_s3_honours_aws_endpoint_url(
    tmp_path: Path, logs: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="cli-serving")
    for path in logs.rglob("*.jsonl"):
        s3.upload_file(str(path), "cli-serving", f"logs/{path.relative_to(logs).as_posix()}")

    state, out = tmp_path / "state.sqlite", tmp_path / "out"
    assert srl("collect", "s3://cli-serving/logs", "--state", str(state), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "2 *.jsonl files under s3://cli-serving/logs" in printed
    assert "rows: 5 new, 2 duplicates" in printed and "quarantined: 2" in printed
    assert {r["source_file"] for r in read_collected(out)} == \
        {"s3://cli-serving/logs/2025-06-01/a.jsonl", "s3://cli-serving/logs/2025-06-02/b.jsonl"}
    assert srl("collect", "s3://cli-serving/logs", "--state", str(state), "--out", str(out)) == 0
    assert "nothing new" in capsys.readouterr().out

    assert srl("collect", "s3://no-such-bucket/logs", "--state", str(state), "--out", str(out)) == 2
    assert "error: SOURCE s3://no-such-bucket/logs: " in capsys.readouterr().err


def test_generate_exits_1_only_when_every_model_call_failed(
    tmp_path: Path, models: ScriptedModels, capsys: pytest.CaptureFixture[str]
) -> None:
    models["proposer"] = ClosableClient("proposer", lambda messages: ConnectionError("connection refused"))
    models["solver"] = ClosableClient("solver", lambda messages: "unused")
    code = srl("generate", "--proposals", "3", "--out", str(tmp_path / "run"),
               "--proposer", "transformers:proposer", "--solver", "transformers:solver")
    assert code == 1
    assert "every model call failed" in capsys.readouterr().err and "connection refused" in \
        (tmp_path / "run" / "rejects.jsonl").read_text()
