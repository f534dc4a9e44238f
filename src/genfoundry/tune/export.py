"""Exports of a trained adapter: a GGUF LoRA for llama.cpp, and merged weights for other engines.

The GGUF adapter is written by llama.cpp's own ``convert_lora_to_gguf.py``, from
the very sources the installed engine was built from (the llama-cpp-python
sdist that ``genfoundry engine build`` unpacks, fetched from PyPI once when it
is not there), with that tree's ``gguf-py``: the file format always matches the
engine that will load it.

Example::

    path = export_gguf_adapter(base_folder, run_dir / "adapter", run_dir / "adapter.gguf")
    merge(base_folder, run_dir / "adapter", Path("merged"))  # an HF folder any engine loads
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from genfoundry.core.errors import ConfigError

__all__ = ["converter_script", "export_gguf_adapter", "export_gguf_model", "file_sha256", "merge"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def converter_script(name: str = "convert_lora_to_gguf.py") -> Path:
    """The converter from the llama.cpp sources of the installed engine (fetched once if missing)."""
    from genfoundry.models import engine_build

    version = engine_build.installed_version(sys.executable)
    cache = engine_build.cache_dir()
    source = cache / f"src-{version}" if version else None
    if source is None or not (source / "vendor" / "llama.cpp" / name).is_file():
        spec = f"llama-cpp-python=={version}" if version else engine_build.requirement()
        try:
            _, source = engine_build.fetch_sources(sys.executable, spec, cache)
        except (subprocess.CalledProcessError, SystemExit) as exc:
            raise ConfigError(f"llama.cpp's {name} comes with the llama-cpp-python sources, which could not be "
                              f"fetched ({exc}); run `genfoundry engine build` once with access to PyPI") from exc
    script = source / "vendor" / "llama.cpp" / name
    if not script.is_file():
        raise ConfigError(f"{script} is missing from the llama.cpp sources")
    return script


def _run_converter(script: Path, args: list[str], what: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(script.parent / "gguf-py"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-1500:]
        raise ConfigError(f"llama.cpp's converter could not export {what}: {tail}")


def export_gguf_adapter(base_folder: Path, adapter_dir: Path, out: Path, *, outtype: str = "f16") -> Path:
    """Write ``adapter_dir`` (a PEFT LoRA) as a GGUF LoRA adapter for the base in ``base_folder``."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter_dir} holds no PEFT adapter (adapter_config.json)")
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    _run_converter(converter_script(), ["--base", str(base_folder), "--outfile", str(partial), "--outtype", outtype,
                                        str(adapter_dir)], f"the adapter in {adapter_dir}")
    partial.replace(out)
    return out


def merge(base_folder: Path, adapter_dir: Path, out: Path) -> Path:
    """Fold the adapter into the base's weights and save a plain Hugging Face checkpoint."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_folder, local_files_only=True, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_folder, local_files_only=True).save_pretrained(out)
    return out


def export_gguf_model(merged_folder: Path, out: Path, *, outtype: str = "q8_0") -> Path:
    """A merged checkpoint as a standalone GGUF model (llama.cpp's convert_hf_to_gguf.py)."""
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    _run_converter(converter_script("convert_hf_to_gguf.py"),
                   ["--outfile", str(partial), "--outtype", outtype, str(merged_folder)], f"{merged_folder}")
    partial.replace(out)
    return out
