"""`genfoundry models`: the model hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.table import Table

from genfoundry.cli.common import console, get_context, handle_errors
from genfoundry.core.errors import InvalidRequest
from genfoundry.models.pricing import per_million_output
from genfoundry.models.providers import get_provider
from genfoundry.models.secrets import is_secret_reference
from genfoundry.models.spec import ModelSpec, Price

app = typer.Typer(help="List, inspect, add and remove models in the hub.", no_args_is_help=True)


def _price_text(spec: ModelSpec) -> str:
    p = spec.price
    if p.input_per_million is not None or p.output_per_million is not None:
        return f"${p.input_per_million or 0:g}/${p.output_per_million or 0:g} per M in/out"
    if p.per_hour is not None:
        derived = per_million_output(spec)
        return f"${p.per_hour:g}/h" + (f" (≈${derived:.3f}/M out)" if derived else "")
    return "-"


@app.command("list")
@handle_errors
def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """List registered models."""
    specs = get_context(ctx).hub().list()
    if as_json:
        print(json.dumps([s.model_dump(mode="json") for s in specs], indent=2))
        return
    table = Table("name", "provider", "aliases", "capabilities", "context", "clearance", "price")
    for s in specs:
        table.add_row(s.name, s.provider, ", ".join(s.aliases), ", ".join(s.capabilities),
                      str(s.context_length or "-"), s.clearance, _price_text(s))
    console.print(table)


@app.command("show")
@handle_errors
def show(ctx: typer.Context, name: str = typer.Argument(..., help="Model name or alias.")):
    """Show everything the hub knows about a model."""
    spec = get_context(ctx).hub().resolve(name)
    data = spec.model_dump(mode="json")
    data["derived_cost_per_million_output_tokens"] = per_million_output(spec)
    print(json.dumps(data, indent=2))


def _guess_provider(location: str) -> str:
    if location == "anthropic" or "anthropic.com" in location:
        return "anthropic"
    if location.startswith(("http://", "https://")):
        return "openai_compat"
    path = Path(location).expanduser()
    if path.suffix == ".gguf":
        return "llamacpp"
    if (path / "modules.json").exists():
        return "sentence_transformers"
    if (path / "config.json").exists():
        return "transformers"
    raise InvalidRequest(f"cannot tell what '{location}' is; pass --provider "
                         "(llamacpp, transformers, sentence_transformers, openai_compat, anthropic)")


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidRequest(f"--option takes KEY=VALUE, not '{pair}'")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


@app.command("add")
@handle_errors
def add(ctx: typer.Context,
        name: str = typer.Argument(..., help="Name clients will send as `model`."),
        location: str = typer.Argument(..., help="GGUF file, Hugging Face folder, base URL, or 'anthropic'."),
        provider: str = typer.Option(None, help="Provider; guessed from the location when omitted."),
        alias: list[str] = typer.Option(None, "--alias", help="Another name for the model (repeatable)."),
        capability: list[str] = typer.Option(None, "--capability", help="chat, completion, embedding, tools, json (repeatable)."),
        clearance: str = typer.Option(None, help="public, internal, confidential or restricted."),
        context_length: int = typer.Option(None, help="Context window in tokens."),
        parameters: int = typer.Option(None, help="Parameter count."),
        license_: str = typer.Option(None, "--license", help="Licence of the weights or API terms."),
        price_input: float = typer.Option(None, help="Dollars per million prompt tokens (APIs)."),
        price_output: float = typer.Option(None, help="Dollars per million generated tokens (APIs)."),
        price_hour: float = typer.Option(None, help="Dollars per hour of the serving hardware (self-hosted)."),
        api_key: str = typer.Option(None, help="Key reference such as env:OPENAI_API_KEY or file:/path."),
        remote_model: str = typer.Option(None, help="Model id on the remote server, if not NAME."),
        adapter: str = typer.Option(None, help="PEFT adapter folder for a Hugging Face model."),
        fallback: list[str] = typer.Option(None, "--fallback", help="Model to try when this one fails (repeatable)."),
        option: list[str] = typer.Option(None, "--option", help="Provider option KEY=VALUE (repeatable)."),
        description: str = typer.Option(None, help="One line for humans."),
        backend: list[str] = typer.Option(None, "--backend", help="Base URL of another server of the same model: makes a pool with LOCATION (repeatable)."),
        eject_after: int = typer.Option(3, help="Pool: failed requests in a row that leave a backend out."),
        eject_seconds: float = typer.Option(30.0, help="Pool: how long a failing backend is left out."),
        health_interval: float = typer.Option(10.0, help="Pool: seconds between health checks of each backend."),
        replace: bool = typer.Option(False, help="Overwrite an existing model of that name.")):
    """Register a model: a local GGUF, a Hugging Face folder, an OpenAI-compatible server (or a pool of them), or Anthropic."""
    provider = provider or _guess_provider(location)
    if provider in ("llamacpp", "transformers", "sentence_transformers"):
        location = str(Path(location).expanduser().resolve())
    options = _parse_options(option or [])
    if api_key is not None:
        if not is_secret_reference(api_key):
            raise InvalidRequest("--api-key takes a reference (env:NAME or file:PATH), never the key itself")
        options["api_key"] = api_key
    if remote_model:
        options["remote_model"] = remote_model
    if adapter:
        options["adapter"] = str(Path(adapter).expanduser().resolve())
    plugin = get_provider(provider)
    found = plugin.inspect(location, options) if plugin.inspect else {}
    fields = {"aliases": alias, "capabilities": capability, "clearance": clearance,
              "context_length": context_length, "parameters": parameters, "license": license_,
              "fallbacks": fallback, "description": description,
              "pool": {"backends": backend, "eject_after": eject_after, "eject_seconds": eject_seconds,
                       "health_interval_s": health_interval} if backend else None}
    spec_data = {**found, **{k: v for k, v in fields.items() if v}}
    try:
        spec = ModelSpec(name=name, provider=provider, location=location, options=options,
                         price=Price(input_per_million=price_input, output_per_million=price_output,
                                     per_hour=price_hour), **spec_data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidRequest(f"invalid model entry ({problems})") from None
    get_context(ctx).hub().add(spec, replace=replace)
    console.print(f"Added [bold]{spec.name}[/bold] ({spec.provider}): {', '.join(spec.capabilities)}, "
                  f"clearance {spec.clearance}.")


@app.command("remove")
@handle_errors
def remove(ctx: typer.Context, name: str = typer.Argument(..., help="Model name or alias.")):
    """Remove a model from the hub (its files are left alone)."""
    spec = get_context(ctx).hub().remove(name)
    console.print(f"Removed {spec.name}.")


@app.command("default")
@handle_errors
def default(ctx: typer.Context, name: str = typer.Argument(..., help="Model to use for 'default' (or 'default-embedding' for embedding models).")):
    """Make a model the default for its kind."""
    spec = get_context(ctx).hub().set_default(name)
    console.print(f"{spec.name} is now the default ({'embedding' if spec.capabilities == ['embedding'] else 'chat'}).")
