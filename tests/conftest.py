"""Shared fixtures: the real pulled base model, and a tiny model with its tokenizer for fast mechanics.

The tiny model is a 2-layer Llama with SmolLM2's own tokenizer and chat template, randomly
initialised: real transformers/peft/TRL code paths in well under a second per optimizer step, so the
checkpoint, SIGTERM and resume tests stay fast. Tests marked `slow` train the real SmolLM2 model.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    from srl_platform.models import DEFAULT_BASE_MODEL, pull

    return pull(DEFAULT_BASE_MODEL, log=lambda msg: None)


@pytest.fixture(scope="session")
def tiny_model_dir(base_model_dir, tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
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


@pytest.fixture(scope="session")
def arithmetic_traces(tmp_path_factory) -> Path:
    from srl_platform.tasks.arithmetic import generate_traces
    from srl_platform.traces import write_jsonl

    path = tmp_path_factory.mktemp("data") / "traces.jsonl"
    write_jsonl(generate_traces(60, seed=0), path)
    return path
