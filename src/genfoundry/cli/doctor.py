"""`genfoundry doctor`: check a deployment (database, clock, vault key, models, vector store, audit chain)."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from genfoundry.cli.common import console, get_context, handle_errors
from genfoundry.gateway.doctor import run_checks

COLOURS = {"ok": "green", "warn": "yellow", "fail": "red"}


@handle_errors
def doctor(ctx: typer.Context,
           as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
           models: bool = typer.Option(True, help="Probe every model's server or file (--no-models skips it)."),
           strict: bool = typer.Option(False, help="Exit 1 on warnings too, not only on failures.")):
    """Check this deployment as a replica sees it; exit 1 when a check fails."""
    checks = run_checks(get_context(ctx).settings, models=models)
    if as_json:
        print(json.dumps([c.to_dict() for c in checks], default=str))
    else:
        table = Table(show_header=True, header_style="bold")
        for column in ("check", "status", "detail"):
            table.add_column(column, overflow="fold")
        for check in checks:
            colour = COLOURS.get(check.status, "white")
            table.add_row(check.name, f"[{colour}]{check.status}[/{colour}]", escape(check.detail))
        console.print(table)
    bad = {"fail", "warn"} if strict else {"fail"}
    if any(c.status in bad for c in checks):
        raise typer.Exit(1)
