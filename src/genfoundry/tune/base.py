"""Base models for fine-tuning: a Hugging Face folder, or a GGUF de-quantised once into one.

LoRA trains on full-precision weights, so a GGUF base (the built-in Gemma 3 270M
included) is read by transformers, de-quantised, and saved as a safetensors
checkpoint in the machine's cache (``~/.cache/genfoundry/bases``), keyed by the
GGUF's content: the conversion (about a minute on 2 cores) happens
once per machine, not once per run or per home. API models cannot be trained.

Example::

    base = resolve_base(hub.resolve("default"))
    base.folder      # a checkpoint folder with config.json, tokenizer and weights
    base.gguf        # the GGUF the adapter will be served on (None for an HF base)
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from genfoundry.core.errors import ConfigError, InvalidRequest
from genfoundry.models.spec import ModelSpec

__all__ = ["BaseModel", "bases_cache", "dequantize", "resolve_base"]

TRAINABLE_PROVIDERS = ("llamacpp", "transformers")


@dataclass(frozen=True)
class BaseModel:
    """What a run trains on and what its adapter is served on."""

    name: str  # the hub entry
    folder: Path  # Hugging Face checkpoint (config.json, tokenizer, safetensors)
    gguf: Path | None  # the GGUF it came from: the adapter is exported for it and served on it
    spec: ModelSpec

    @property
    def architecture(self) -> str:
        import json
        config = json.loads((self.folder / "config.json").read_text())
        return str(config.get("model_type", ""))


def bases_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genfoundry" / "bases"


def _key(gguf: Path) -> str:
    """The file's identity by content (its size, first and last MiB), not its path: the same model copied
    into several homes is converted once."""
    size = gguf.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(gguf, "rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a second process converting the same file waits, then reuses it
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def dequantize(gguf: Path, *, cache: Path | None = None, progress=None) -> Path:
    """The HF checkpoint folder for ``gguf``, converting it once (atomically: a killed conversion leaves
    nothing half-written behind)."""
    if not gguf.is_file():
        raise ConfigError(f"GGUF file {gguf} does not exist")
    cache = cache or bases_cache()
    folder = cache / f"{gguf.stem}-{_key(gguf)}"
    if (folder / "config.json").is_file():
        return folder
    with _locked(cache / f".{folder.name}.lock"):
        if (folder / "config.json").is_file():
            return folder
        partial = cache / f".{folder.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        if progress:
            progress(f"de-quantising {gguf.name} into a checkpoint for training (once per machine, about a minute)")
        _convert(gguf, partial)
        partial.rename(folder)
    return folder


def _convert(gguf: Path, out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"transformers cannot de-quantise {gguf.name} ({exc}); train on a Hugging Face "
                          "checkpoint of the same model instead (register it with provider 'transformers')") from exc
    kinds = {p.dtype for p in model.parameters()}
    if any(not k.is_floating_point for k in kinds):
        raise ConfigError(f"{gguf.name} still holds quantised blocks after loading ({sorted(map(str, kinds))}); "
                          "it cannot be trained here")
    # The weights are plain floats now; what remains is the loader's marker that they came from GGUF.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_base(spec: ModelSpec, *, progress=None) -> BaseModel:
    """The trainable checkpoint behind a hub entry; a clear refusal for API models."""
    if spec.provider not in TRAINABLE_PROVIDERS:
        raise InvalidRequest(
            f"model '{spec.name}' is served by '{spec.provider}' (an API or a remote server): its weights are not "
            "here to train; pick a local GGUF or Hugging Face model (`genfoundry models list`)", param="base")
    if spec.options.get("adapter"):
        raise InvalidRequest(f"model '{spec.name}' is itself a tuned adapter; train on its base "
                             f"'{spec.options.get('tuned_from', 'the base model')}' instead", param="base")
    if spec.provider == "transformers":
        folder = Path(spec.location).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{folder} is not a Hugging Face checkpoint folder (no config.json)")
        return BaseModel(name=spec.name, folder=folder, gguf=None, spec=spec)
    if spec.can("embedding") and not spec.can("chat") and not spec.can("completion"):
        raise InvalidRequest(f"model '{spec.name}' is an embedding model; fine-tuning here trains chat models",
                             param="base")
    gguf = Path(spec.location).expanduser()
    return BaseModel(name=spec.name, folder=dequantize(gguf, progress=progress), gguf=gguf, spec=spec)
