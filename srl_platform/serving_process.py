"""Start the embedded serving server (`srl_platform.serving_server`) as a process on loopback, wait
until it answers, and stop it: for tests, demos and notebooks that need a server for a while.

    with embedded_server("smollm2-135m-instruct", {"gold": adapter_dir}) as server:
        server.serving.complete("gold", [{"role": "user", "content": "What is 2 + 3?"}])

A long-lived server is started with `srl serve` instead (see `srl_platform.serving_server`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from srl_platform.serving_backends import EmbeddedServing, ServingUnavailable


@dataclass
class RunningServer:
    """An embedded server process started by `embedded_server`."""

    url: str
    process: subprocess.Popen
    log_path: Path
    """Its stdout and stderr (loads, unloads, errors)."""
    serving: EmbeddedServing

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@contextmanager
def embedded_server(base_model: str, adapters: Mapping[str, str | Path] | None = None, *,
                    max_lora_rank: int = 16, dtype: str = "bfloat16", host: str = "127.0.0.1", port: int = 0,
                    startup_timeout_s: float = 300.0, log_path: Path | None = None, extra_args: Sequence[str] = (),
                    **serving_options) -> Iterator[RunningServer]:
    """Start `python -m srl_platform.serving_server`, wait until `/health` answers, yield it, and stop
    it with SIGTERM (it finishes the requests it accepted, and writes its serving logs and metrics)
    when the block ends. `port=0` lets the server pick a free port. `extra_args` are more `srl serve`
    options (`--router`, `--serving-logs`, `--metrics`); `serving_options` go to `EmbeddedServing`."""
    if log_path is None:
        descriptor, temp_name = tempfile.mkstemp(prefix="srl-serve-", suffix=".log")
        os.close(descriptor)
        log_path = Path(temp_name)
    command = [sys.executable, "-m", "srl_platform.serving_server", "--base-model", str(base_model),
               "--host", host, "--port", str(port), "--max-lora-rank", str(max_lora_rank), "--dtype", dtype]
    for name, directory in (adapters or {}).items():
        command += ["--adapter", f"{name}={directory}"]
    command += list(extra_args)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    try:
        url = _wait_started(process, log_path, startup_timeout_s)
        yield RunningServer(url, process, log_path,
                            EmbeddedServing(url, max_lora_rank=max_lora_rank, **serving_options))
    finally:
        _stop(process)


def _wait_started(process: subprocess.Popen, log_path: Path, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    marker = "srl serve: listening on "
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServingUnavailable(f"the embedded server exited with code {process.returncode} before serving: "
                                     f"{log_path.read_text(errors='replace')[-4000:]}")
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.startswith(marker)]
        if lines:
            url = lines[0][len(marker):].strip()
            if EmbeddedServing(url).health():
                return url
        time.sleep(0.2)
    raise ServingUnavailable(f"the embedded server did not answer /health within {timeout_s:g} s: "
                             f"{log_path.read_text(errors='replace')[-4000:]}")


def _stop(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
