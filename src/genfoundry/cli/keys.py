"""`genfoundry keys`: create, list and revoke API keys."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from genfoundry.cli.common import console, get_context, handle_errors
from genfoundry.gateway.keys import create_key, list_keys, revoke_key, set_budget

app = typer.Typer(help="Create, list and revoke API keys (stored only as hashes).", no_args_is_help=True)


@app.command("create")
@handle_errors
def create(ctx: typer.Context,
           name: str = typer.Argument(..., help="A name that says who or what uses the key."),
           role: str = typer.Option("developer", help="admin, developer or app."),
           rpm: int = typer.Option(None, help="Requests per minute allowed (default: unlimited or the default_rpm setting)."),
           token_budget: int = typer.Option(None, help="Tokens (prompt + completion) allowed per budget period."),
           budget_period: str = typer.Option("month", help="day, month or total."),
           model: list[str] = typer.Option(None, "--model", help="Limit an app key to these models (repeatable)."),
           cost_budget: float = typer.Option(None, help="Dollars the key may spend per budget period (warnings "
                                                        "from budget_warn_fraction, then 429)."),
           permission: list[str] = typer.Option(None, "--permission", help="Let agents use side-effect tools "
                                                "that need this permission for this key, e.g. refunds (repeatable).")):
    """Create a key and print it once."""
    secret, key = create_key(get_context(ctx).store, name=name, role=role, rpm_limit=rpm,
                             token_budget=token_budget, budget_period=budget_period,
                             allowed_models=model or None, cost_budget_usd=cost_budget,
                             permissions=permission or None)
    console.print(f"Created {key.role} key [bold]{escape(key.name)}[/bold] (id {key.id}). It is shown only now:")
    print(secret)


@app.command("list")
@handle_errors
def list_(ctx: typer.Context, all_: bool = typer.Option(False, "--all", help="Include revoked keys.")):
    """List keys (never their secrets)."""
    table = Table("id", "name", "role", "prefix", "rpm", "budget", "models", "created", "revoked")
    for k in list_keys(get_context(ctx).store, include_revoked=all_):
        limits = [f"{k.token_budget} tokens" if k.token_budget else "", f"${k.cost_budget_usd:g}" if k.cost_budget_usd else ""]
        budget = f"{' + '.join(x for x in limits if x)}/{k.budget_period}" if any(limits) else "-"
        table.add_row(k.id, escape(k.name), k.role, k.prefix + "…", str(k.rpm_limit or "-"), budget,
                      ",".join(k.allowed_models or []) or "all", f"{k.created_at:%Y-%m-%d %H:%M}",
                      f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "")
    console.print(table)


@app.command("budget")
@handle_errors
def budget(ctx: typer.Context, key: str = typer.Argument(..., help="Key id or name."),
           cost_usd: float = typer.Option(None, help="Dollars per period; 0 removes the limit."),
           tokens: int = typer.Option(None, help="Tokens per period; 0 removes the limit."),
           period: str = typer.Option(None, help="day, month or total.")):
    """Change a key's budgets (dollars, tokens, period)."""
    changed = set_budget(get_context(ctx).store, key, cost_budget_usd=cost_usd, token_budget=tokens,
                         budget_period=period)
    limits = [f"${changed.cost_budget_usd:g}" if changed.cost_budget_usd else "no dollar limit",
              f"{changed.token_budget} tokens" if changed.token_budget else "no token limit"]
    console.print(f"Key {escape(changed.name)}: {', '.join(limits)} per {changed.budget_period}.")


@app.command("revoke")
@handle_errors
def revoke(ctx: typer.Context, key: str = typer.Argument(..., help="Key id or name.")):
    """Revoke a key; requests with it get 401 from then on."""
    revoked = revoke_key(get_context(ctx).store, key)
    console.print(f"Revoked key {escape(revoked.name)} ({revoked.id}).")
