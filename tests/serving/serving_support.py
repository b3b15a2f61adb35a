"""Serving test helpers: the vLLM stand-in process (`vllm_stub_server.py`) and adapter directories for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np

STUB = Path(__file__).with_name("vllm_stub_server.py")


@contextmanager
def running_stub(*options: str, runtime_updates: bool = True):
    """Start the stand-in on a free port; yields its URL; stops it at the end."""
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True" if runtime_updates else "False"}
    process = subprocess.Popen([sys.executable, str(STUB), "--port", "0", *options], stdout=subprocess.PIPE,
                               text=True, env=env)
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("listening on "), f"stub did not start: {line!r}"
        yield line[len("listening on "):]
    finally:
        process.terminate()
        process.wait(timeout=10)


def stub_log(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/stub/log", timeout=10) as response:
        return json.loads(response.read())


def admin_calls(url: str, since: int = 0) -> list[tuple[str, str | None, int]]:
    """(route, lora_path, status) of each load/unload the stand-in handled, from entry `since` on."""
    return [(entry["path"].rsplit("/", 1)[-1], (entry["body"] or {}).get("lora_path"), entry["status"])
            for entry in stub_log(url)[since:] if entry["path"].endswith("_lora_adapter")]


def fake_adapter(directory: Path, r: int = 8, seed: int = 0, corrupt: bool = False) -> Path:
    """A directory shaped like a saved peft LoRA adapter: adapter_config.json and a real (tiny)
    safetensors file, or garbage bytes in its place when `corrupt`."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": ["q_proj", "v_proj"]}))
    weights = directory / "adapter_model.safetensors"
    if corrupt:
        weights.write_bytes(b"\xff" * 64)
    else:
        save_file({"lora_A": np.random.default_rng(seed).standard_normal((r, 4)).astype(np.float32)}, str(weights))
    return directory


def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(interval_s)


def random_lora(base_dir: Path, out: Path, seed: int, r: int = 4) -> Path:
    """A saved peft LoRA whose B matrices are random (peft's default B = 0 would change nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=r, lora_alpha=r, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                      init_lora_weights=False))
    model.save_pretrained(out)
    return out


def post(url: str, path: str, body: dict) -> tuple[int, dict | str]:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, raw = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read().decode()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw
