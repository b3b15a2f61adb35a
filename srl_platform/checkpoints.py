"""The checkpoint layout every backend shares, without torch: `checkpoints/checkpoint-<step>/`, complete
once its `srl_state.json` exists (the trainer writes it last, then renames the staging directory into
place), so a sensor or a launcher can read checkpoints without loading the training stack."""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint-"
STAGING_DIR = ".staging"
STATE_FILE = "srl_state.json"  # written last inside a checkpoint: its presence marks it complete


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a `checkpoint-N` directory holds."""
    return int(checkpoint.name[len(CHECKPOINT_PREFIX):])


def checkpoint_dirs(root: Path) -> list[Path]:
    """Every `checkpoint-N` directory under `root`, oldest first. On a node other than the first of
    a torchrun job these hold only that node's ranks' files and are never complete on their own."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=checkpoint_step)


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (staging leftovers are never listed)."""
    return [p for p in checkpoint_dirs(root) if (p / STATE_FILE).is_file()]


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None
