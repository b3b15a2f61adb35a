"""Helpers shared by test modules (importable as `support`: pytest's pythonpath has tests/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "srl_platform.train", *args]


def run_train(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(train_command(*args), capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=REPO)


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


AWS_TEST_CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "testing",
                        "aws_secret_access_key": "testing"}
"""What boto3 clients of the `moto_endpoint` server are built with."""
