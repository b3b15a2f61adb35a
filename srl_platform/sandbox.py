"""Run untrusted Python against assert tests in a subprocess, under time, memory and output limits.

This is resource limiting, not a security sandbox. The code runs as the calling user: it can read
and write any file that user can, open network connections, and start processes that leave its
process group. What it cannot do is hang or starve the caller: an infinite loop, a huge allocation,
a print flood or a giant file is cut off and reported. Run code from untrusted people inside a
container (no network, read-only filesystem, its own user) and call this there.

A run: `solution.py` (the code) and `tests.json` (the source of each test) are written to a fresh
temporary directory; this module's own file is started there as the harness, with
`python -I -S` (isolated: no site or user packages, no PYTHON* variables, nothing prepended to
`sys.path`), a minimal environment, stdin closed and a session of its own, so killing its process
group kills every process it forked. The harness sets its resource limits, executes the code, then
each test in the code's namespace, and reports one JSON line per stage on a pipe of its own, so the
code may print anything on stdout/stderr without corrupting the result. Each top-level statement of
`tests` is one test; all of them run, and the first that does not pass is the one reported.

The limits are set by the harness before it runs the code, not by `preexec_fn`: `preexec_fn` is
documented as unsafe in a threaded parent (a trainer, Dagster), where the child can deadlock before
exec. RLIMIT_NPROC is not set: it counts every process and thread of the user, not of this run, so
a value low enough to stop a fork loop would also fail the code's first thread on a busy trainer.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OUTCOMES = ("passed", "failed", "error", "syntax", "timeout", "memory", "killed")
"""`failed`: a test's assertion is false; `error`: the code or a test raised (or the process
exited early); `syntax`: the code does not compile; `timeout`: the wall clock or the CPU limit
ran out; `memory`: the code hit the memory limit; `killed`: another signal ended the process
(a crash, the kernel's OOM killer)."""

_HARNESS = Path(__file__).resolve()
_CODE_FILE, _TESTS_FILE = "solution.py", "tests.json"
_REPORT_CAP = 1 << 20  # report lines are short; a cap keeps code that writes to the pipe bounded
_DETAIL_CHARS = 300
_SOURCE_CHARS = 120
_POLL_S = 0.1  # how soon a finished process is noticed while a grandchild holds its pipes open
_DRAIN_S = 1.0  # after the kill, how long to wait for the pipes' last bytes


@dataclass(frozen=True)
class SandboxLimits:
    """The limits of one `run_tests` call."""

    timeout_s: float = 5.0
    """Wall clock for the whole run, interpreter start included; then the process group is killed."""
    cpu_s: int = 5
    """CPU seconds (RLIMIT_CPU): ends a spinning process even if its parent died before killing it."""
    memory_mb: int = 256
    """Address space (RLIMIT_AS); an allocation past it raises MemoryError in the code."""
    max_output_bytes: int = 64_000
    """How much of stdout, and of stderr, is kept (the tail); the rest is read and dropped."""
    max_file_bytes: int = 1_000_000
    """Largest file the code may write (RLIMIT_FSIZE); a bigger write fails with OSError."""

    def __post_init__(self) -> None:
        for name in ("timeout_s", "cpu_s", "memory_mb", "max_output_bytes", "max_file_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"SandboxLimits.{name}={value!r} must be a positive number")


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class TestRun:
    """What running the tests against the code gave: the `outcome` (one of `OUTCOMES`), how many
    tests finished (`tests_run`) and passed, a short `detail` naming the first test that did not
    pass and why, the run's wall time, and the tails of the code's stdout and stderr."""

    __test__ = False  # a result, not a pytest test class, despite its name

    passed: bool
    outcome: str
    tests_run: int
    tests_passed: int
    detail: str
    wall_s: float
    stdout: str = ""
    stderr: str = ""


def split_tests(tests: str) -> list[str]:
    """The source of each top-level statement of `tests`, one test each.

    ValueError when `tests` does not parse or holds no statement: the tests are the caller's
    reference, so a broken block is the caller's error, not the code's.
    """
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError) as error:
        where = f"line {error.lineno}: {error.msg}" if isinstance(error, SyntaxError) else str(error)
        raise ValueError(f"tests do not parse as Python ({where}); give assert statements, "
                         f"one per test: {tests[:_SOURCE_CHARS]!r}") from None
    if not tree.body:
        raise ValueError(f"tests hold no statement; give at least one assert: {tests[:_SOURCE_CHARS]!r}")
    return [ast.get_source_segment(tests, node) for node in tree.body]


def run_tests(code: str, tests: str, limits: SandboxLimits = DEFAULT_LIMITS) -> TestRun:
    """Run `code`, then each test of `tests` (see `split_tests`), in a limited subprocess."""
    sources = split_tests(tests)
    with tempfile.TemporaryDirectory(prefix="srl-sandbox-", ignore_cleanup_errors=True) as workdir:
        # A lone surrogate (a model's broken decode) cannot be written as UTF-8; it becomes "?".
        Path(workdir, _CODE_FILE).write_text(code, encoding="utf-8", errors="replace")
        Path(workdir, _TESTS_FILE).write_text(json.dumps(sources), encoding="utf-8")
        report_read, report_write = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_HARNESS), str(report_write), str(int(limits.cpu_s)),
                 str(int(limits.memory_mb * 2**20)), str(int(limits.max_file_bytes))],
                cwd=workdir,
                env={"PATH": os.defpath, "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir},
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(report_write,), start_new_session=True,
            )
        except BaseException:
            os.close(report_read)
            raise
        finally:
            os.close(report_write)  # the child's copy is the only writer: EOF when it is gone
        with proc, os.fdopen(report_read, "rb") as report:
            try:
                streams = _Streams(proc, report.fileno(), limits.max_output_bytes)
                timed_out, wall_s = _await_exit(proc, streams, time.monotonic() + limits.timeout_s)
            finally:
                _kill_group(proc)
            streams.pump(time.monotonic() + _DRAIN_S)
            streams.close()
    return _test_run(streams, sources, proc.returncode, timed_out, wall_s, limits)


class _Streams:
    """The child's stdout and stderr (tails kept) and its report pipe (head kept), read as they come."""

    def __init__(self, proc: subprocess.Popen, report_fd: int, output_cap: int) -> None:
        self._selector = selectors.DefaultSelector()
        self._caps = {"stdout": output_cap, "stderr": output_cap, "report": _REPORT_CAP}
        self.buffers = {name: bytearray() for name in self._caps}
        for name, fd in (("stdout", proc.stdout.fileno()), ("stderr", proc.stderr.fileno()),
                         ("report", report_fd)):
            self._selector.register(fd, selectors.EVENT_READ, name)

    def pump(self, until: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Read until every stream has ended, the clock passes `until`, or `stop()` is true."""
        while self._selector.get_map() and not stop():
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            for key, _ in self._selector.select(min(remaining, _POLL_S)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    self._selector.unregister(key.fd)
                    continue
                buffer, cap = self.buffers[key.data], self._caps[key.data]
                if key.data == "report":
                    buffer += chunk[: max(0, cap - len(buffer))]
                else:
                    buffer += chunk
                    del buffer[:-cap]  # the tail: that is where a traceback is

    def text(self, name: str) -> str:
        return self.buffers[name].decode("utf-8", errors="replace")

    def close(self) -> None:
        self._selector.close()


def _await_exit(proc: subprocess.Popen, streams: _Streams, deadline: float) -> tuple[bool, float]:
    """(timed out, wall seconds): read the streams until the process exits or `deadline` passes."""
    start = time.monotonic()
    streams.pump(deadline, stop=lambda: proc.poll() is not None)
    try:  # the streams may all have closed while the process still runs
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return True, round(time.monotonic() - start, 3)
    return False, round(time.monotonic() - start, 3)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL every process in the child's group (its forks included), then reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already empty (macOS answers EPERM when only zombies are left)
    proc.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return f"signal {number}"


def _short(source: str) -> str:
    line = " ".join(source.split())
    return line if len(line) <= _SOURCE_CHARS else line[: _SOURCE_CHARS - 1] + "…"


def _reports(raw: str) -> list[dict] | None:
    """The harness's report lines, or None when one is not a report (the code wrote to the pipe)."""
    reports = []
    for line in raw.splitlines():
        try:
            report = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(report, dict) or not {"stage", "status", "detail"} <= report.keys():
            return None
        reports.append(report)
    return reports


def _test_run(streams: _Streams, sources: list[str], returncode: int, timed_out: bool, wall_s: float,
              limits: SandboxLimits) -> TestRun:
    stdout, stderr = streams.text("stdout"), streams.text("stderr")
    reports = _reports(streams.text("report"))

    def result(outcome: str, tests: list[dict], detail: str) -> TestRun:
        passed = sum(report["status"] == "passed" for report in tests)
        return TestRun(outcome == "passed", outcome, len(tests), passed, detail[:_DETAIL_CHARS], wall_s,
                       stdout, stderr)

    garbled = "the code wrote to the harness's report pipe; no result can be read"
    if reports is None:
        return result("error", [], garbled)
    codes = [report for report in reports if report["stage"] == "code"]
    tests = [report for report in reports if report["stage"] == "test"]
    if len(codes) > 1 or len(tests) > len(sources):
        return result("error", [], garbled)
    code = codes[0] if codes else None
    if code is not None and code["status"] != "passed":
        return result(code["status"], [], f"{_CODE_FILE}: {code['detail']}")
    if code is not None and len(tests) == len(sources):
        for number, (report, source) in enumerate(zip(tests, sources, strict=True), start=1):
            if report["status"] != "passed":
                return result(report["status"], tests, f"test {number} `{_short(source)}`: {report['detail']}")
        return result("passed", tests, "")

    # The process stopped before reporting every stage: say what it was running.
    running = (f"loading {_CODE_FILE}" if code is None
               else f"running test {len(tests) + 1} `{_short(sources[len(tests)])}`")
    last_error = stderr.strip().splitlines()[-1] if stderr.strip() else "nothing on stderr"
    if timed_out:
        return result("timeout", tests, f"wall-clock limit of {limits.timeout_s:g} s reached while {running}")
    if returncode == -signal.SIGXCPU:
        return result("timeout", tests, f"CPU limit of {int(limits.cpu_s)} s reached while {running}")
    if "MemoryError" in stderr:
        return result("memory", tests, f"memory limit of {limits.memory_mb} MB reached while {running}")
    if returncode < 0:
        return result("killed", tests, f"killed by {_signal_name(-returncode)} while {running}: {last_error}")
    return result("error", tests, f"the process exited with code {returncode} while {running} "
                                  f"(code must not exit the interpreter): {last_error}")


# The harness: the child's side, run as `python -I -S sandbox.py REPORT_FD CPU_S AS_BYTES FILE_BYTES`.


def _set_limit(kind: int, soft: int, hard: int) -> None:
    _, current_hard = resource.getrlimit(kind)
    if current_hard != resource.RLIM_INFINITY:  # an unprivileged process cannot raise its hard limit
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(kind, (soft, hard))


def _describe(error: BaseException) -> str:
    """`Type: message (solution.py line N)`, N being the deepest line of the code in the traceback."""
    try:
        message = str(error)
    except Exception:  # the code's own exception class may fail to print
        message = "<message cannot be printed>"
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    line, frame = None, error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename == _CODE_FILE:
            line = frame.tb_lineno
        frame = frame.tb_next
    return (text if line is None else f"{text} ({_CODE_FILE} line {line})")[:_DETAIL_CHARS]


def _attempt(action: Callable[[], None], on_assert: str) -> tuple[str, str]:
    """(status, detail) of running `action`; an AssertionError gets status `on_assert`."""
    try:
        action()
    except MemoryError:
        return "memory", "MemoryError: the memory limit was reached"
    except AssertionError as error:
        return on_assert, _describe(error)
    except BaseException as error:  # SystemExit included: the code must not end the run
        return "error", _describe(error)
    return "passed", ""


def _harness(report_fd: int, cpu_s: int, memory_bytes: int, file_bytes: int) -> None:
    """Set the limits, run solution.py and then each test, one report line per stage."""
    report = os.fdopen(report_fd, "w", encoding="utf-8")
    code = Path(_CODE_FILE).read_text(encoding="utf-8")
    sources = json.loads(Path(_TESTS_FILE).read_text(encoding="utf-8"))
    _set_limit(resource.RLIMIT_CORE, 0, 0)  # SIGXCPU would otherwise dump a core file
    # SIGXCPU at the soft limit (reported as a timeout); SIGKILL at the hard one, a second later,
    # ends code that catches SIGXCPU.
    _set_limit(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)
    _set_limit(resource.RLIMIT_FSIZE, file_bytes, file_bytes)
    _set_limit(resource.RLIMIT_AS, memory_bytes, memory_bytes)

    def send(stage: str, status: str, detail: str) -> None:
        report.write(json.dumps({"stage": stage, "status": status, "detail": detail}) + "\n")
        report.flush()

    namespace = {"__name__": "solution"}  # not "__main__": the code's demo block must not run
    try:
        program = compile(code, _CODE_FILE, "exec")
    except (SyntaxError, ValueError) as error:  # ValueError: a null byte in the source
        where = f"line {error.lineno}: {error.msg}" if isinstance(error, SyntaxError) else str(error)
        send("code", "syntax", where)
        return
    status, detail = _attempt(lambda: exec(program, namespace), on_assert="error")
    send("code", status, detail)
    if status == "passed":
        for number, source in enumerate(sources, start=1):
            test = compile(source, f"<test {number}>", "exec")
            send("test", *_attempt(lambda test=test: exec(test, namespace), on_assert="failed"))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the code may have closed or replaced it; its output is its business
            pass
    # Skip interpreter shutdown: a thread or atexit hook the code left behind must not hold the run.
    os._exit(0)


if __name__ == "__main__":
    _harness(*(int(arg) for arg in sys.argv[1:5]))
