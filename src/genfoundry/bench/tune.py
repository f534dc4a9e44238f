"""The tune layer measured: training throughput beside a plain loop, peak memory, and a promotion and a
rollback under streaming load.

- Throughput (tokens/s, padding excluded) of LoRA steps on the built-in Gemma 3 270M, same base, rows,
  rank, targets, learning rate and batch of 4 rows:
  * ``plain_peft_loop``: the loop a user writes from the PEFT docs: pad the batch, ``model(**batch,
    labels=...)``, backward, AdamW step (full logits on every position);
  * ``genfoundry_same_batch``: ``genfoundry.tune.train`` with packing off (4 rows a step, as the loop);
  * ``genfoundry_packed``: the default (4 blocks of up to 512 tokens, examples packed).
  Each is timed per optimizer step after a warm-up step; the figure is the median step.
- Peak RSS of a whole ``genfoundry tune run`` of the built-in model (default settings, a few steps), run
  as its own process.
- Promotion under load: a gateway serving ``support`` (the built-in model), 8 clients streaming chat
  completions; the run's adapter is gated (its test split, both models answering through the gateway
  beside the streams) and promoted to ``support`` (forced: the figure is the switch, not the gate's
  verdict), then rolled back. Requests failed, and latency p50/p95 per phase: before, during the gate,
  from the promotion until the new engine serves (and a moment after), the rollback, after.

Rows: grounded questions built from the sample knowledge base's paragraphs (the paragraph as context, its
heading as the question, its first sentence as the answer), about 145 tokens each.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from genfoundry.tune.train import DEFAULT_TARGETS, TrainConfig

__all__ = ["PARTS", "plain_peft_steps", "promotion_under_load", "run_tune_bench", "sample_rows"]


def sample_rows(limit: int = 64) -> list[dict]:
    """Chat rows from the sample documents: a paragraph as context, a question on its heading, its first
    sentence as the answer."""
    from genfoundry.knowledge import SAMPLE_DOCS

    rows = []
    for path in sorted(Path(SAMPLE_DOCS).rglob("*.md")):
        heading = path.stem.replace("-", " ")
        for block in path.read_text().split("\n\n"):
            block = block.strip()
            if block.startswith("#"):
                heading = block.lstrip("# ").splitlines()[0]
                continue
            if len(block) < 200 or block.startswith(("|", "-", "*")):
                continue
            answer = re.split(r"(?<=[.!?])\s", block, maxsplit=1)[0]
            rows.append({"messages": [
                {"role": "user", "content": f"Context:\n{block[:600]}\n\nQuestion: what does the context say about {heading}?"},
                {"role": "assistant", "content": answer}]})
            if len(rows) >= limit:
                return rows
    return rows


def plain_peft_steps(base_folder: Path, rows: list[dict], *, rank: int, batch: int, steps: int, lr: float,
                     max_length: int = 512) -> dict:
    """The reference loop: tokens/s per step (non-padding tokens over the step's wall time)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genfoundry.core.types import Message
    from genfoundry.models.prompting import TEMPLATES, render_chat

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)  # as genfoundry's trainer does
    tok = AutoTokenizer.from_pretrained(base_folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(base_folder, local_files_only=True, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                                             target_modules=list(DEFAULT_TARGETS), task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    texts = []
    for row in rows:
        msgs = [Message(m["role"], m["content"]) for m in row["messages"]]
        texts.append(render_chat(msgs[:-1], TEMPLATES["gemma"]).text + msgs[-1].content + "<end_of_turn>")
    rates, tokens_per_step = [], []
    for step in range(steps + 1):
        chunk = [texts[(step * batch + i) % len(texts)] for i in range(batch)]
        enc = tok(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        started = time.perf_counter()
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        elapsed = time.perf_counter() - started
        tokens = int(enc["attention_mask"].sum())
        if step:  # the first step warms up allocators and kernels
            rates.append(tokens / elapsed)
            tokens_per_step.append(tokens)
    return {"tokens_per_second": round(statistics.median(rates), 1), "tokens_per_step": statistics.median(tokens_per_step),
            "steps": steps}


def _ours(base, rows: list[dict], config: TrainConfig, run_dir: Path) -> dict:
    from genfoundry.tune.train import train

    rates, per_step = [], []

    def on_event(kind: str, message: str, data: dict) -> None:
        if kind == "metrics" and data.get("tokens_per_second") and data["step"] > 1:
            rates.append(data["tokens_per_second"])

    result = train(base, rows, [], config, run_dir, on_event=on_event)
    per_step = result["tokens"] / max(result["steps"], 1)
    return {"tokens_per_second": round(statistics.median(rates), 1) if rates else None,
            "tokens_per_step": round(per_step), "steps": result["steps"], "peak_rss_mib_in_bench": result["peak_rss_mib"]}


def _gf(home: Path, *args: str, timeout: float = 1800) -> str:
    env = {**os.environ, "GENFOUNDRY_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "genfoundry.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"genfoundry {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


async def promotion_under_load(gw, job_id: str, *, clients: int = 8, hold_s: float = 6.0) -> dict:
    """Stream from ``clients`` while the job's adapter is promoted to 'support' and rolled back."""
    import httpx
    import openai

    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    admin = httpx.AsyncClient(base_url=gw.base_url.removesuffix("/v1"), timeout=600,
                              headers={"Authorization": f"Bearer {gw.key}"})
    phase = {"name": "before"}
    latencies: dict[str, list[float]] = {"before": [], "gate": [], "switch": [], "rollback": [], "after": []}
    failures: list[str] = []
    stop = asyncio.Event()

    async def stream(i: int) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                out = await client.chat.completions.create(
                    model="support", stream=True, max_tokens=16, temperature=0,
                    messages=[{"role": "user", "content": f"How long do refunds take for order {i}?"}])
                async for _ in out:
                    pass
                latencies[phase["name"]].append(time.perf_counter() - started)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    async def switched(count: int) -> float:
        started = time.perf_counter()
        while len((await admin.get("/health")).json()["switches"]) < count and time.perf_counter() - started < 300:
            await asyncio.sleep(0.1)
        return round(time.perf_counter() - started, 2)

    workers = [asyncio.create_task(stream(i)) for i in range(clients)]
    await asyncio.sleep(hold_s)
    phase["name"] = "gate"  # the gate's model calls share the machine with the streams
    started = time.perf_counter()
    response = await admin.post("/admin/tune/promotions", json={"job_id": job_id, "target": "support",
                                                               "suites": ["test"], "force": True})
    response.raise_for_status()
    gate_s = round(time.perf_counter() - started, 2)
    phase["name"] = "switch"  # from the promotion to the new engine serving, and a moment after
    promote_switch_s = await switched(1)
    await asyncio.sleep(hold_s / 2)
    phase["name"] = "rollback"
    (await admin.post("/admin/tune/rollback", json={"model": "support"})).raise_for_status()
    rollback_switch_s = await switched(2)
    await asyncio.sleep(hold_s / 2)
    phase["name"] = "after"
    await asyncio.sleep(hold_s)
    stop.set()
    await asyncio.gather(*workers)
    switches = (await admin.get("/health")).json()["switches"]
    await admin.aclose()
    await client.close()

    def summary(values: list[float]) -> dict:
        if not values:
            return {"requests": 0}
        ordered = sorted(values)
        return {"requests": len(values), "p50_s": round(statistics.median(ordered), 3),
                "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3)}

    return {"clients": clients, "failed": len(failures), "failures": failures[:5],
            "switches_ok": [s["ok"] for s in switches], "switch_warm_s": [s.get("seconds") for s in switches],
            "gate_s": gate_s, "promote_switched_after_s": promote_switch_s,
            "rollback_switched_after_s": rollback_switch_s,
            **{phase_: summary(values) for phase_, values in latencies.items()}}


PARTS = ("throughput", "run", "switch")


def run_tune_bench(home: Path, *, steps: int = 5, rank: int = 8, parts: tuple[str, ...] = PARTS,
                   progress=print) -> dict:
    from genfoundry.core.settings import load_settings
    from genfoundry.core.store import Store
    from genfoundry.data.datasets import Datasets, SplitSpec
    from genfoundry.models.builtin import register_builtins
    from genfoundry.models.hub import ModelHub
    from genfoundry.testing.servers import start_gateway, stop_gateway
    from genfoundry.tune.base import resolve_base

    settings = load_settings(home=home, environ={})
    settings.ensure_home()
    store = Store.open(settings.resolved_database_url)
    hub = ModelHub(store, settings)
    register_builtins(hub)
    base = resolve_base(hub.resolve("default"), progress=progress)
    rows = sample_rows()
    result: dict = {"model": "gemma-3-270m (built-in, de-quantised to float32)", "rank": rank,
                    "targets": DEFAULT_TARGETS, "cpu_count": os.cpu_count()}
    if "throughput" in parts:
        result["throughput"] = _throughput(base, rows, home, steps=steps, rank=rank, progress=progress)

    if "run" not in parts and "switch" not in parts:
        store.close()
        return result
    Datasets(settings, store).add_version("bench-sample", rows, lineage={"source": "bench"},
                                          splits=SplitSpec(seed=1, fractions={"train": 0.8, "dev": 0.1, "test": 0.1}))
    hub.add(hub.resolve("default").model_copy(update={"name": "support", "aliases": []}))
    store.close()
    progress("a whole `genfoundry tune run` of the built-in model, default settings (its own process)")
    started = time.perf_counter()
    job = json.loads(_gf(home, "tune", "run", "--data", "bench-sample", "--max-steps", str(steps), "--suffix", "bench",
                         "--json").strip().splitlines()[-1])
    result["tune_run"] = {"wall_s": round(time.perf_counter() - started, 1), "status": job["status"],
                          "peak_rss_mib": job["result"]["metrics"]["peak_rss_mib"],
                          "memory_estimate_mib": job["result"]["metrics"]["memory_estimate_mib"],
                          "tokens_per_second": job["result"]["metrics"]["tokens_per_second"],
                          "cost_usd": job["result"]["cost_usd"]}
    if "switch" in parts:
        progress("promotion and rollback while 8 clients stream")
        gw = start_gateway(home, preload=("support",))
        try:
            result["promotion_under_load"] = asyncio.run(promotion_under_load(gw, job["id"]))
        finally:
            stop_gateway(gw)
    return result


def _throughput(base, rows: list[dict], home: Path, *, steps: int, rank: int, progress) -> dict:
    lr = TrainConfig().learning_rate
    progress(f"throughput: plain transformers + PEFT loop, {steps} steps of 4 rows")
    plain = plain_peft_steps(base.folder, rows, rank=rank, batch=4, steps=steps, lr=lr)
    common = dict(lora_r=rank, lora_alpha=2 * rank, batch_size=4, max_steps=steps + 1, eval_steps=10_000,
                  early_stopping_patience=0, dev_fraction=0.0)
    progress("throughput: genfoundry, same batch (4 rows a step, the default)")
    same = _ours(base, rows, TrainConfig(packing=False, **common), home / "bench-same")
    progress("throughput: genfoundry, 4 packed blocks of 512 tokens a step")
    packed = _ours(base, rows, TrainConfig(packing=True, **common), home / "bench-packed")
    return {"plain_peft_loop": plain, "genfoundry_same_batch": same, "genfoundry_packed": packed,
            "ratio_same_batch": round(same["tokens_per_second"] / plain["tokens_per_second"], 2)
            if same["tokens_per_second"] else None,
            "ratio_packed": round(packed["tokens_per_second"] / plain["tokens_per_second"], 2)
            if packed["tokens_per_second"] else None}
