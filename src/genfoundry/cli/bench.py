"""`genfoundry bench`: benchmarks that print JSON."""

from __future__ import annotations

import datetime as dt
import json

import typer

from genfoundry.cli.common import err_console, get_context, handle_errors
from genfoundry.gateway.bench import BenchConfig, run_gateway_bench
from genfoundry.gateway.keys import create_key, revoke_key
from genfoundry.models.providers.llama_server import find_llama_server

app = typer.Typer(help="Benchmarks; each prints JSON and saves it under GENFOUNDRY_HOME/runs.", no_args_is_help=True)


@app.command("gateway")
@handle_errors
def gateway(ctx: typer.Context,
            max_tokens: int = typer.Option(128, min=8, help="Tokens generated per request."),
            runs: int = typer.Option(10, min=1, help="Single-stream turns per side (after one warm-up turn)."),
            rounds: int = typer.Option(3, min=1, help="Concurrent rounds per side; the median counts."),
            concurrency: int = typer.Option(8, min=1, help="Concurrent streaming clients."),
            port: int = typer.Option(8790, help="Port for the gateway under test (the next one for llama-server).")):
    """Gateway vs direct llama-cpp-python and vs llama-server -np N, on the default model."""
    context = get_context(ctx)
    hub = context.hub()
    spec = hub.resolve("default")
    secret, key = create_key(context.store, name="bench", role="developer")
    binary = find_llama_server(context.settings.llama_server_path)
    try:
        cfg = BenchConfig(model_path=spec.location, max_tokens=max_tokens, runs=runs, rounds=rounds,
                          concurrency=concurrency, port=port)
        result = run_gateway_bench(cfg, context.settings, secret, binary,
                                   progress=lambda m: err_console.print(m, style="dim"))
    finally:
        revoke_key(context.store, key.id)
    result["model"] = spec.name
    result["engine_binary"] = binary
    hub.record_measured(spec.name, prefill_tps=None,
                        decode_tps=result["concurrent"]["gateway"]["aggregate_tokens_per_s_median"])
    out = context.settings.home / "runs" / f"bench-gateway-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    err_console.print(f"saved to {out}", style="dim")
