"""`srl generate` and `srl collect`: the `generated_traces` and `collected_traces` assets without Dagster.

For a container or a laptop: the same library calls (`collaborate`, `collect`) on local files, with
progress and a summary on the terminal. Exit codes follow the `srl data` commands: 2 when the input
is wrong (the message names the option and its value), 1 when a run produced nothing usable; and
75, as `srl train` after SIGTERM, when nothing is wrong but the command should be run again later.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from srl_platform.clients import ClientSpec, ModelClient
from srl_platform.clients.spec import KIND_OPTIONS, POLICY_OPTIONS, PRICING_OPTIONS
from srl_platform.collaboration import CollaborationConfig, CollaborationResult, collaborate
from srl_platform.models import DEFAULT_BASE_MODEL
from srl_platform.tasks import FAMILY_NAMES, GENERATED, TaskFamily, get_family
from srl_platform.traces import read_records, write_jsonl
from srl_platform.weakness import WeaknessProfile

DEFAULT_CLIENT = f"transformers:{DEFAULT_BASE_MODEL}"
_COLLAB = CollaborationConfig()
# `srl_platform.collector` imports pandas and pandera (about a second on every `srl` call), so its
# defaults are repeated here for the help text; tests/test_cli_generate.py checks they agree.
_COLLECTOR_MAX_CHARS = 32_000

_GENERATE_DESCRIPTION = """\
A proposer model writes new problems of a task family (aimed at the misses of an evaluation
when given one), a solver writes numbered-step solutions, and the family's verifier keeps only
those that check out. Writes, in DIR:
  traces.jsonl   the accepted traces, each naming the models that made it (meta.lineage)
  rejects.jsonl  every rejected proposal with its stage, reason and the models' text
  report.json    counts, token use and cost by role, models, settings, weakness profile
"""

_SPEC_HELP = f"""\
client specs (--proposer, --solver, --judge) are KIND:TARGET[?option=value&...]:
  transformers:{DEFAULT_BASE_MODEL}
      a pulled model in this process (`srl models pull NAME` first), or a model directory:
  transformers:/models/base?adapter=/runs/bronze/adapter&dtype=float32
  openai:http://127.0.0.1:8000/v1?model=Qwen2.5-7B-Instruct&api_key_env=VLLM_KEY
      any OpenAI-compatible server (vLLM, `transformers serve`, a paid API); ?model= is required
  bedrock:anthropic.claude-3-5-haiku-20241022-v1:0?region=us-east-1&input_per_mtok=0.8&output_per_mtok=4
options by kind:
{chr(10).join(f"  {kind}: {', '.join(options)}" for kind, options in KIND_OPTIONS.items())}
  any kind: {', '.join(PRICING_OPTIONS)} (USD per million tokens, for the cost column),
            {', '.join(POLICY_OPTIONS)}
Option values are URL-encoded ("+" reads as a space: write %2B).
Roles with the same spec share one client (one model in memory).

exit codes: 0 done (even with nothing accepted: rejects.jsonl says why); 1 every model call failed; 2 bad input.
"""

_COLLECT_DESCRIPTION = """\
Collect the serving tier's request logs (*.jsonl, one JSON object a line) from a local folder
or an S3 prefix into a dataset: each good row kept once, each bad line quarantined with its
reason.
"""

_COLLECT_HELP = """\
A serving-log file is identified by its content: one collected before (under any name) is skipped,
so re-running over the same folder adds nothing. Good rows go to DIR/parts/<sha>.parquet, bad lines
with their reason and raw text to DIR/quarantine/<sha>.jsonl. For s3:// sources, boto3 finds
credentials, region and endpoint as usual (AWS_PROFILE, AWS_ENDPOINT_URL for MinIO or LocalStack).

exit codes: 0 done; 2 bad input (source, state or limits) or a source that cannot be read;
75 run again later (another collector holds the state, or a log changed while it was read).
"""


EXIT_RERUN = 75


class InputError(ValueError):
    """Bad command-line input; the message names the option and its value."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _number_between(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:  # NaN fails too
            raise argparse.ArgumentTypeError(f"must be a number from {low:g} to {high:g}, got {text!r}")
        return value

    return parse


def add_generate_commands(subparsers) -> None:
    """Register `generate` and `collect` on the main parser's subparsers."""
    gen = subparsers.add_parser(
        "generate", help="write new expert traces with a proposer, a solver and a verifier",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_SPEC_HELP,
        description=_GENERATE_DESCRIPTION)
    gen.add_argument("--family", choices=FAMILY_NAMES, default="arithmetic",
                     help=f"task family (default: %(default)s); {' and '.join(GENERATED)} generate their "
                          "examples, the others read them from --source")
    gen.add_argument("--source", default=None, metavar="FILE",
                     help="gsm8k / s1k only: local data file in that format (.jsonl or .parquet) the "
                          "proposer's examples are drawn from")
    gen.add_argument("--proposals", type=_positive_int, default=_COLLAB.proposals, metavar="N",
                     help="problems to propose; each becomes at most one trace (default: %(default)s)")
    gen.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    gen.add_argument("--proposer", default=DEFAULT_CLIENT, metavar="SPEC",
                     help="client spec of the model that writes problems (default: %(default)s)")
    gen.add_argument("--solver", default=DEFAULT_CLIENT, metavar="SPEC",
                     help="client spec of the model that writes solutions: the strongest you have "
                          "(default: %(default)s)")
    gen.add_argument("--judge", default=None, metavar="SPEC",
                     help="client spec of an optional model that scores each verified solution 1-10 "
                          "(default: no judge)")
    gen.add_argument("--judge-min-score", type=_number_between(1, 10), default=None, metavar="X",
                     help="with --judge: reject verified solutions scored below X (default: only record "
                          "the score)")
    gen.add_argument("--focus", type=_number_between(0, 1), default=_COLLAB.focus, metavar="F",
                     help="share of proposals aimed at the weakness profile's misses, 0 to 1; the rest are "
                          "spread uniformly (default: %(default)s)")
    gen.add_argument("--solver-attempts", type=_positive_int, default=_COLLAB.solver_attempts, metavar="N",
                     help="solutions sampled per problem; the first that verifies is kept "
                          "(default: %(default)s)")
    gen.add_argument("--seed", type=int, default=_COLLAB.seed,
                     help="seeds targets, examples and sampling: same inputs, same run (default: %(default)s)")
    gen.add_argument("--weakness-report", default=None, metavar="REPORT.json",
                     help="evaluation report whose per-problem results steer the proposals (`srl eval "
                          "--out`, or a tier_eval report); needs --weakness-traces")
    gen.add_argument("--weakness-traces", default=None, metavar="TRACES",
                     help="the traces (.jsonl or .parquet) that report was evaluated on (`srl eval --data`): "
                          "they give each problem's weakness dimensions")
    gen.set_defaults(handler=_cmd_generate)

    col = subparsers.add_parser(
        "collect", help="ingest serving logs into a deduplicated, validated dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_COLLECT_HELP,
        description=_COLLECT_DESCRIPTION)
    col.add_argument("source", metavar="SOURCE", help="local folder (searched recursively) or s3://bucket/prefix")
    col.add_argument("--state", required=True, metavar="STATE.sqlite",
                     help="collector state: which files and rows were collected (created if missing); "
                          "keep it with DIR, one collector at a time")
    col.add_argument("--out", required=True, metavar="DIR", help="output folder for parts/ and quarantine/")
    col.add_argument("--max-completion-chars", type=_positive_int, default=_COLLECTOR_MAX_CHARS, metavar="N",
                     help="longer completions are quarantined as oversized_completion (default: %(default)s)")
    col.add_argument("--max-prompt-chars", type=_positive_int, default=_COLLECTOR_MAX_CHARS, metavar="N",
                     help="longer prompts are quarantined as oversized_prompt (default: %(default)s)")
    col.set_defaults(handler=_cmd_collect)


# ---- srl generate --------------------------------------------------------------------------------

def _say(message: str) -> None:
    print(message, flush=True)


def _family(args: argparse.Namespace) -> TaskFamily:
    """The family, with a dataset family's --source read now: a bad file is an input error, not a
    failure halfway through the run (the examples are cached, the run reuses them)."""
    if args.family in GENERATED:
        if args.source is not None:
            raise InputError(f"--source {args.source}: the {args.family} family generates its problems and "
                             "takes no source; leave --source out")
        return get_family(args.family)
    if args.source is None:
        raise InputError(f"--family {args.family} reads its example problems from a data file: give it with "
                         "--source FILE (e.g. GSM8K's train.jsonl)")
    family = get_family(args.family, args.source)
    try:
        family.examples(_COLLAB.pool, args.seed)
    except (OSError, ValueError) as error:
        raise InputError(f"--source {args.source}: {error}") from None
    return family


def _weakness_profile(args: argparse.Namespace, family: TaskFamily) -> WeaknessProfile:
    """The misses of the report's model joined with the traces it was evaluated on; empty without a report."""
    if (args.weakness_report is None) != (args.weakness_traces is None):
        given, missing = (("--weakness-report", "--weakness-traces") if args.weakness_traces is None
                          else ("--weakness-traces", "--weakness-report"))
        raise InputError(f"{given} needs {missing} too: the report lists problem ids, the traces "
                         "give their weakness dimensions")
    if args.weakness_report is None:
        return WeaknessProfile()
    try:
        report = json.loads(Path(args.weakness_report).read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"--weakness-report {args.weakness_report}: cannot read it as JSON ({error})") from None
    # A tier_eval report nests the adapter's evaluation; `srl eval` writes one directly (its
    # "adapter" is the adapter's path).
    nested = report.get("adapter") if isinstance(report, dict) else None
    evaluation = nested if isinstance(nested, dict) else report
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get("results"), list):
        raise InputError(f"--weakness-report {args.weakness_report}: no per-problem 'results' list; give a "
                         "report written by `srl eval` or the tier_eval asset")
    try:
        traces = read_records(args.weakness_traces)
    except (OSError, ValueError) as error:
        raise InputError(f"--weakness-traces {args.weakness_traces}: {error}") from None
    traces = [t for t in traces if (t.get("meta") or {}).get("family", family.name) == family.name]
    profile = WeaknessProfile.from_evaluation(evaluation, traces, family.dims, source=args.weakness_report)
    if not profile.error_rates:
        _say(f"no result in {args.weakness_report} matches a {family.name} trace of {args.weakness_traces}: "
             "proposals are spread uniformly")
    else:
        _say(f"weakness profile from {args.weakness_report}: {profile.error_rates}")
    return profile


def _open_clients(args: argparse.Namespace) -> dict[str, ModelClient | None]:
    """role → client; every spec is parsed before any is built, and identical specs share one client."""
    specs = {}
    for role in ("proposer", "solver", "judge"):
        text = getattr(args, role)
        try:
            specs[role] = None if text is None else ClientSpec.parse(text)
        except ValueError as error:
            raise InputError(f"--{role}: {error}") from None
    clients: dict[str, ModelClient] = {}
    roles: dict[str, ModelClient | None] = {}
    for role, spec in specs.items():
        if spec is not None and str(spec) not in clients:
            try:
                clients[str(spec)] = spec.build()
            except (ValueError, LookupError, OSError) as error:  # LookupError: a model not pulled
                _close(clients.values())
                raise InputError(f"--{role} {getattr(args, role)}: {error}") from None
        roles[role] = None if spec is None else clients[str(spec)]
    return roles


def _close(clients) -> None:
    for client in {id(c): c for c in clients if c is not None}.values():
        client.close()


def _generation_summary(result: CollaborationResult) -> str:
    stats = result.stats
    lines = [f"{'proposals':<24}{stats['proposals']:>8}",
             f"{'new problems':<24}{stats['new_problems']:>8}",
             f"{'verified':<24}{stats['verified']:>8}",
             f"{'accepted':<24}{stats['accepted']:>8}",
             f"{'rejected':<24}{stats['rejected']:>8}"]
    lines += [f"  {reason:<22}{count:>8}" for reason, count in stats["reasons"].items()]
    lines += ["", f"{'role':<10}{'calls':>7}{'failed':>8}{'tokens in':>12}{'tokens out':>12}{'cost (USD)':>12}"]
    rows = [*result.usage.get("by_role", {}).items(), ("total", result.usage["total"])]
    lines += [f"{role:<10}{row['calls']:>7}{row['failed_calls']:>8}{row['input_tokens']:>12,}"
              f"{row['output_tokens']:>12,}{row['cost_usd']:>12.4f}" for role, row in rows]
    return "\n".join(lines)


def _cmd_generate(args: argparse.Namespace) -> int:
    try:
        if args.judge_min_score is not None and args.judge is None:
            raise InputError(f"--judge-min-score {args.judge_min_score:g} needs --judge SPEC: "
                             "without a judge nothing is scored")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {args.out} is a file: give a folder for traces.jsonl, rejects.jsonl "
                             "and report.json")
        family = _family(args)
        profile = _weakness_profile(args, family)
        roles = _open_clients(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = CollaborationConfig(proposals=args.proposals, focus=args.focus, solver_attempts=args.solver_attempts,
                                 judge_min_score=args.judge_min_score, seed=args.seed)
    try:
        result = collaborate(family, roles["proposer"], roles["solver"], judge=roles["judge"], profile=profile,
                             config=config, run=f"srl-generate:{out.resolve()}", log=_say)
    finally:
        _close(roles.values())

    report = {"family": family.name, "source": args.source, "stats": result.stats, "usage": result.usage,
              "models": {role: (c.model_id if c else None) for role, c in roles.items()},
              "specs": {role: getattr(args, role) for role in roles},
              "config": asdict(config), "weakness_profile": profile.as_dict()}
    traces_path = write_jsonl(result.traces, out / "traces.jsonl")
    rejects_path = write_jsonl(result.rejects, out / "rejects.jsonl")
    report_path = out / "report.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(_generation_summary(result))
    print()
    print(f"traces: {len(result.traces)} → {traces_path}")
    print(f"rejects: {len(result.rejects)} → {rejects_path}")
    print(f"report: {report_path}")
    # Nothing accepted is a normal outcome for a small model (the rejects say why); every call
    # failing is not: the models are unreachable or cannot load.
    failures = [r for r in result.rejects if r["reason"] == "client_error"]
    if result.rejects and len(failures) == len(result.rejects):
        print(f"error: every model call failed, e.g. {failures[0]['detail']}", file=sys.stderr)
        return 1
    return 0


# ---- srl collect ---------------------------------------------------------------------------------

def _s3_client():
    """boto3's S3 client, built only for s3:// sources; boto3 itself reads credentials, region and
    AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 from the environment."""
    try:
        import boto3
    except ImportError:
        raise InputError("reading s3:// needs boto3: pip install boto3") from None
    return boto3.client("s3")


def _source_errors(s3: bool) -> tuple[type[BaseException], ...]:
    """What reading the source raises when the source (not this program) is at fault."""
    if not s3:
        return (OSError, ValueError)
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no boto3: `_s3_client` says so as a ValueError
        return (OSError, ValueError)
    return (OSError, ValueError, BotoCoreError, ClientError)


def _collect_summary(stats, total: dict, state: Path, out: Path) -> str:
    lines = [(f"files: {stats.files_seen} listed, {stats.files_processed} collected, "
              f"{stats.skipped_files} skipped (collected before)"),
             f"lines: {stats.lines:,} ({stats.blank_lines:,} blank)",
             f"rows: {stats.rows:,} new, {stats.duplicates:,} duplicates",
             f"quarantined: {stats.quarantined:,}"]
    lines += [f"  {reason:<22}{count:>8,}" for reason, count in stats.reasons.items()]
    lines += [f"outputs: {out / 'parts'}, {out / 'quarantine'}",
              (f"collected so far ({state}): {total['files']:,} files, {total['rows']:,} rows, "
               f"{total['duplicates']:,} duplicates, {total['quarantined']:,} quarantined")]
    if stats.files_seen and not stats.files_processed:
        lines.append("nothing new: every file was collected before, so this run added nothing")
    return "\n".join(lines)


def _cmd_collect(args: argparse.Namespace) -> int:
    from srl_platform.collector import (
        CollectorConfig,
        FileChangedError,
        collect,
        collected_summary,
        list_log_files,
    )

    from_s3 = args.source.startswith("s3://")
    state, out = Path(args.state), Path(args.out)
    source_errors = _source_errors(from_s3)
    config = CollectorConfig(max_completion_chars=args.max_completion_chars, max_prompt_chars=args.max_prompt_chars)
    try:
        s3 = _s3_client() if from_s3 else None
        files = list_log_files(args.source, s3)
    except source_errors as error:
        print(f"error: SOURCE {args.source}: {error}", file=sys.stderr)
        return 2
    _say(f"{len(files)} {config.pattern} files under {args.source}")
    try:
        stats = collect(files, state, out, config, s3_client=s3, progress=_say)
    except RuntimeError as error:
        # A log still being written, or another collector holding the state's lock: both pass.
        if not isinstance(error, FileChangedError) and not str(error).startswith("another collector"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_RERUN
    except sqlite3.DatabaseError as error:
        print(f"error: --state {state}: {error} (is it a collector state file?)", file=sys.stderr)
        return 2
    except source_errors as error:  # an object that cannot be read, an output inside the source
        print(f"error: {error}", file=sys.stderr)
        return 2
    print()
    print(_collect_summary(stats, collected_summary(state), state, out))
    return 0
