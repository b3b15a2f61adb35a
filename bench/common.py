"""What every benchmark in bench/ shares: the machine it ran on, the JSON line it appends, and the
tests' tiny model for benchmarks of mechanics (and smoke runs)."""

from __future__ import annotations

import json
from pathlib import Path

from srl_platform.bench_runner import machine  # noqa: F401  (re-exported to the benchmarks)


def append_json(path: Path | str | None, record: dict) -> None:
    """Append `record` as one JSON line to `path` (nothing when no path was given)."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def tiny_model(out: Path) -> Path:
    """The tests' tiny model (tests/conftest.py): SmolLM2's tokenizer on a 2-layer random Llama."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from srl_platform.models import DEFAULT_BASE_MODEL, pull

    tokenizer = AutoTokenizer.from_pretrained(pull(DEFAULT_BASE_MODEL, log=lambda msg: None))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
