"""`srl serve` is the embedded serving server's command line (`python -m srl_platform.serving_server`)."""

from __future__ import annotations

import pytest

from srl_platform.cli import build_parser


def test_srl_serve_takes_the_server_arguments():
    args = build_parser().parse_args(["serve", "--base-model", "smollm2-135m-instruct", "--port", "0",
                                      "--max-lora-rank", "64", "--adapter", "gold=/adapters/gold/v1",
                                      "--adapter", "silver=/adapters/silver/v2"])
    assert (args.base_model, args.host, args.port, args.max_lora_rank, args.dtype) == \
        ("smollm2-135m-instruct", "127.0.0.1", 0, 64, "bfloat16")
    assert args.adapter == [("gold", "/adapters/gold/v1"), ("silver", "/adapters/silver/v2")]
    assert args.handler.__name__ == "_cmd_serve"


def test_srl_serve_rejects_an_adapter_without_a_name(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--base-model", "m", "--adapter", "/adapters/gold"])
    assert "--adapter must be NAME=DIR, got '/adapters/gold'" in capsys.readouterr().err


def test_an_unknown_base_model_exits_2_with_the_reason(capsys):
    args = build_parser().parse_args(["serve", "--base-model", "no-such-model", "--port", "0"])
    assert args.handler(args) == 2
    assert "base model 'no-such-model' is neither a directory nor a known model" in capsys.readouterr().err
