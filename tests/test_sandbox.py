"""The sandbox: outcomes, counts and details of test runs, and the limits that stop bad code."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import pytest

from srl_platform.sandbox import SandboxLimits, run_tests, split_tests

ADD_ONE = "def add_one(x):\n    return x + 1\n"
QUICK = SandboxLimits(timeout_s=1.0)


def running(pid: int) -> bool:
    """True while `pid` is a live process. A killed process whose parent is gone may stay a zombie
    until PID 1 reaps it (a container's PID 1 often never does): dead, so not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_passing_code_passes_every_test() -> None:
    run = run_tests(ADD_ONE, "assert add_one(1) == 2\nassert add_one(-1) == 0")
    assert (run.passed, run.outcome, run.tests_run, run.tests_passed, run.detail) == (True, "passed", 2, 2, "")
    assert 0 < run.wall_s < 5


def test_a_failing_assert_is_counted_and_named() -> None:
    tests = "assert add_one(1) == 2\nassert add_one(2) == 4, 'two plus one'\nassert add_one(0) == 1"
    run = run_tests(ADD_ONE, tests)
    assert (run.passed, run.outcome, run.tests_run, run.tests_passed) == (False, "failed", 3, 2)
    assert run.detail == "test 2 `assert add_one(2) == 4, 'two plus one'`: AssertionError: two plus one"


def test_a_multi_line_statement_is_one_test() -> None:
    tests = 'assert add_one(1) == 2\ntry:\n    add_one("a")\nexcept TypeError:\n    pass\nelse:\n    raise AssertionError("no TypeError")'
    assert split_tests(tests)[1].startswith("try:")
    run = run_tests(ADD_ONE, tests)
    assert (run.outcome, run.tests_run, run.tests_passed) == ("passed", 2, 2)


def test_an_exception_in_the_code_or_a_test_is_an_error_at_its_line() -> None:
    run = run_tests("x = 1\ny = x / 0\n", "assert True")
    assert (run.outcome, run.tests_run) == ("error", 0)
    assert run.detail == "solution.py: ZeroDivisionError: division by zero (solution.py line 2)"

    run = run_tests("def first(items):\n    return items[0]\n", "assert first([3]) == 3\nassert first([]) is None")
    assert (run.outcome, run.tests_run, run.tests_passed) == ("error", 2, 1)
    assert "test 2 `assert first([]) is None`: IndexError" in run.detail
    assert "(solution.py line 2)" in run.detail


def test_a_syntax_error_is_reported_as_syntax() -> None:
    run = run_tests("def broken(:\n    return 1\n", "assert broken() == 1")
    assert (run.passed, run.outcome, run.tests_run) == (False, "syntax", 0)
    assert run.detail.startswith("solution.py: line 1:")


def test_exiting_the_interpreter_is_an_error() -> None:
    assert run_tests("import sys\nsys.exit(0)\n", "assert True").outcome == "error"
    run = run_tests("import os\nos._exit(0)\n", "assert True")
    assert run.outcome == "error" and "exited with code 0 while loading solution.py" in run.detail


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_an_infinite_loop_times_out_and_its_process_group_is_killed() -> None:
    # The code reports its own pid and a forked child's, then spins; both must be gone afterwards.
    code = (
        "import os, time\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "print(os.getpid(), child, flush=True)\n"
        "while True:\n"
        "    pass\n"
    )
    start = time.monotonic()
    run = run_tests(code, "assert True", QUICK)
    elapsed = time.monotonic() - start
    assert (run.outcome, run.tests_run) == ("timeout", 0)
    assert run.detail == "wall-clock limit of 1 s reached while loading solution.py"
    assert 1.0 <= run.wall_s < 1.5 and elapsed < 3.0
    pids = [int(pid) for pid in run.stdout.split()]
    assert len(pids) == 2 and not any(running(pid) for pid in pids)


def test_a_timeout_names_the_test_that_was_running() -> None:
    code = "def spin():\n    while True:\n        pass\n"
    run = run_tests(code, "assert True\nassert spin()\nassert True", QUICK)
    assert (run.outcome, run.tests_run, run.tests_passed) == ("timeout", 1, 1)
    assert run.detail == "wall-clock limit of 1 s reached while running test 2 `assert spin()`"


def test_the_cpu_limit_ends_a_loop_the_wall_clock_has_not() -> None:
    run = run_tests("while True:\n    pass\n", "assert True", SandboxLimits(timeout_s=20, cpu_s=1))
    assert run.outcome == "timeout" and run.detail.startswith("CPU limit of 1 s reached")
    assert run.wall_s < 5


def test_allocating_past_the_memory_limit_is_memory() -> None:
    run = run_tests("blob = bytearray(1 << 30)\n", "assert True", SandboxLimits(memory_mb=256))
    assert (run.outcome, run.tests_run) == ("memory", 0)

    code = "def grow():\n    return [0] * (1 << 28)\n"
    run = run_tests(code, "assert len(grow()) > 0\nassert 1 + 1 == 2", SandboxLimits(memory_mb=256))
    assert (run.outcome, run.tests_run, run.tests_passed) == ("memory", 2, 1)
    assert run.detail.startswith("test 1 `assert len(grow()) > 0`: MemoryError")


def test_a_print_flood_keeps_only_the_tail_of_the_output() -> None:
    # 328 MB through stdout: the run passes, the last bytes are kept, and this process does not
    # grow by anything like that (ru_maxrss is in KiB on Linux).
    code = "import sys\nline = 'x' * 65535 + '\\n'\nfor _ in range(5000):\n    sys.stdout.write(line)\nprint('end')\n"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run = run_tests(code, "assert True", SandboxLimits(max_output_bytes=10_000))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert run.outcome == "passed"
    assert len(run.stdout) == 10_000 and run.stdout.endswith("x\nend\n")
    if sys.platform == "linux":
        assert grown_kib < 64 * 1024

    run = run_tests("while True:\n    print('y' * 1000)\n", "assert True",
                    SandboxLimits(timeout_s=1.0, max_output_bytes=5_000))
    assert run.outcome == "timeout" and len(run.stdout) <= 5_000


def test_output_that_looks_like_a_report_does_not_change_the_result() -> None:
    fake = '{"stage": "test", "status": "failed", "detail": "fake"}'
    code = f"import sys\nprint({fake!r})\nprint({fake!r}, file=sys.stderr)\n" + ADD_ONE
    run = run_tests(code, "assert add_one(1) == 2\nprint('noise')")
    assert (run.outcome, run.tests_run, run.tests_passed) == ("passed", 2, 2)
    assert fake in run.stdout and "noise" in run.stdout and fake in run.stderr


def test_the_code_runs_isolated_in_a_temporary_directory_that_is_removed(monkeypatch) -> None:
    monkeypatch.setenv("SRL_SANDBOX_SECRET", "leak")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    code = "import os, sys\nprint(os.getcwd())\n"
    tests = ('assert "SRL_SANDBOX_SECRET" not in os.environ\n'
             'assert "/nowhere" not in sys.path\n'
             'assert not any("site-packages" in path for path in sys.path)')
    run = run_tests(code, tests)
    assert (run.outcome, run.tests_passed) == ("passed", 3)
    workdir = Path(run.stdout.strip())
    assert workdir.name.startswith("srl-sandbox-") and not workdir.exists()


def test_writing_a_big_file_fails_inside_the_code() -> None:
    run = run_tests("open('big.txt', 'w').write('x' * 2_000_000)\n", "assert True",
                    SandboxLimits(max_file_bytes=1_000_000))
    assert run.outcome == "error" and "File too large" in run.detail


def test_bad_tests_and_bad_limits_are_the_callers_error() -> None:
    with pytest.raises(ValueError, match="tests do not parse as Python"):
        run_tests(ADD_ONE, "assert add_one(1) ==")
    with pytest.raises(ValueError, match="tests hold no statement"):
        split_tests("# only a comment\n")
    with pytest.raises(ValueError, match=r"SandboxLimits.timeout_s=0 must be a positive number"):
        SandboxLimits(timeout_s=0)
