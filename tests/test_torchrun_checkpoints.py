"""Multi-node training (the bronze tier's torchrun): two nodes on loopback, one rank each, each with a
checkpoint directory of its own as on SageMaker, where every node's /opt/ml/checkpoints is synced to
one S3 prefix. What that sync needs: no file name written by two ranks, one `srl_state.json` (global
rank 0's) listing the files of all ranks, and every rank stopping and saving at the same step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from support import REPO, read_metrics
from srl_platform.trainer import STATE_FILE, checkpoint_dirs, complete_checkpoints, latest_checkpoint

MAX_STEPS = 10
FAST = ["--num-generations", "2", "--prompts-per-step", "1", "--max-completion-length", "8"]


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(node: int, port: int, model: Path, data: Path, root: Path) -> subprocess.Popen:
    """One node's `torchrun ... -m srl_platform.train`, its own output and checkpoint directories."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
               "-m", "srl_platform.train", "--stage", "srl", "--base-model", str(model), "--data", str(data),
               "--output-dir", str(root / f"node{node}" / "out"),
               "--checkpoint-dir", str(root / f"node{node}" / "ckpt"), "--max-steps", str(MAX_STEPS), *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "120"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _files(checkpoint: Path) -> set[str]:
    return {p.name for p in checkpoint.iterdir()}


def _sync_like_s3(root: Path) -> None:
    """What SageMaker does between two attempts: both nodes upload to one prefix, both download it."""
    for source in ("node0", "node1"):
        for target in ("node0", "node1"):
            if source != target:
                shutil.copytree(root / source / "ckpt", root / target / "ckpt", dirs_exist_ok=True)


def test_two_nodes_save_disjoint_files_agree_on_the_stop_and_resume(tiny_model_dir, arithmetic_traces,
                                                                    tmp_path):
    port = _port()
    nodes = [_launch(n, port, tiny_model_dir, arithmetic_traces, tmp_path) for n in (0, 1)]
    metrics = tmp_path / "node0" / "out" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and any(r["step"] >= 2 for r in read_metrics(metrics))):
        for proc in nodes:
            assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "training never reached step 2"
        time.sleep(0.05)
    # A spot reclaim: each node's init signals its process group, torchrun forwards it to its rank.
    nodes[0].send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the other node hears of it a little later
    nodes[1].send_signal(signal.SIGTERM)
    logs = [proc.communicate(timeout=300)[0] for proc in nodes]

    first, second = tmp_path / "node0" / "ckpt", tmp_path / "node1" / "ckpt"
    saved = latest_checkpoint(first)
    assert saved is not None, logs[0]
    step = int(saved.name.split("-")[1])
    assert 2 <= step < MAX_STEPS, logs[0]
    for log in logs:  # both ranks stopped after the same step
        assert f"SIGTERM: checkpoint saved at step {step}" in log, log
    state = json.loads((saved / STATE_FILE).read_text())
    on_first, on_second = _files(saved), _files(second / saved.name)
    assert on_first & on_second == set()  # no file of one node overwrites the other's in S3
    assert on_first | on_second == set(state["files"])
    assert {"rng_state_0.pth", "adapter_model.safetensors", "optimizer.pt", STATE_FILE} <= on_first
    assert on_second == {"rng_state_1.pth"}
    assert complete_checkpoints(second) == [] and [p.name for p in checkpoint_dirs(second)] == [saved.name]
    assert not (tmp_path / "node1" / "out" / "metrics.jsonl").exists()  # rank 0 alone keeps the record

    _sync_like_s3(tmp_path)
    port = _port()
    nodes = [_launch(n, port, tiny_model_dir, arithmetic_traces, tmp_path) for n in (0, 1)]
    logs = [proc.communicate(timeout=600)[0] for proc in nodes]

    for node, (proc, log) in enumerate(zip(nodes, logs, strict=True)):
        assert proc.returncode == 0, log
        assert f"resuming from {tmp_path / f'node{node}' / 'ckpt' / saved.name}" in log
    rows = [r for r in read_metrics(metrics) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, MAX_STEPS + 1))  # none re-done, none lost
    assert (tmp_path / "node0" / "out" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "node1" / "out").exists() or not any((tmp_path / "node1" / "out").iterdir())
