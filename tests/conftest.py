"""Shared fixtures: the real pulled base model, and a tiny model with its tokenizer for fast mechanics.

The tiny model is a 2-layer Llama with SmolLM2's own tokenizer and chat template, randomly
initialised: real transformers/peft/TRL code paths in well under a second per optimizer step, so the
checkpoint, SIGTERM and resume tests stay fast. Tests marked `slow` train the real SmolLM2 model.
"""

from __future__ import annotations

import socket
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


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """One moto server on loopback (real HTTP) for every AWS API the tests call (S3, SageMaker).

    moto keeps one backend per process, whatever the number of servers: buckets, objects and model
    package groups persist from test to test, so each test uses names of its own.
    """
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def other_tokenizer_model_dir(base_model_dir, tmp_path_factory) -> Path:
    """A tiny Llama with a tokenizer of its own (a 400-token byte-level BPE trained here, SmolLM2's
    chat template): a student that cannot share a vocabulary with a SmolLM2 teacher."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    smol = AutoTokenizer.from_pretrained(base_model_dir)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["What is 3 + 4? 1. **Add**: 3 + 4 = 7. The answer is 7."] * 50
                            + [smol.chat_template], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = smol.chat_template
    out = tmp_path_factory.mktemp("other-tokenizer-model")
    tokenizer.save_pretrained(out)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out
