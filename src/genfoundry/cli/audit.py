"""`genfoundry audit`: the hash-chained audit log — verify it, list it."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from genfoundry.cli.common import console, err_console, get_context, handle_errors
from genfoundry.cli.logs import _parse_time
from genfoundry.core.audit import entries, verify

app = typer.Typer(no_args_is_help=True, help="The audit log: key, access, deletion and forget events, hash-chained.")


@app.command("verify")
@handle_errors
def verify_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Check the whole chain; exit 1 when an entry was edited, deleted or inserted."""
    report = verify(get_context(ctx).store)
    if as_json:
        print(json.dumps({"ok": report.ok, "entries": report.entries, "problems": report.problems}))
    elif report.ok:
        console.print(f"[green]audit log intact[/green]: {report.entries} entries, every hash and link checks out")
    else:
        err_console.print(f"[red]audit log tampered with[/red] ({report.entries} entries):")
        for problem in report.problems:
            err_console.print(f"  {escape(problem)}", soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command("list")
@handle_errors
def list_(ctx: typer.Context,
          action: str = typer.Option(None, help="Only this action, or a prefix such as 'key.'."),
          since: str = typer.Option(None, help="From this time (ISO, or an age such as 2h, 7d)."),
          limit: int = typer.Option(50, min=1, help="How many entries, newest first."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON lines.")):
    """List audit entries, newest first."""
    rows = entries(get_context(ctx).store, action=action, since=_parse_time(since, "--since"), limit=limit)
    if as_json:
        for e in rows:
            print(json.dumps(vars(e), default=str))
        return
    table = Table("#", "time (UTC)", "actor", "action", "target", "details")
    for e in rows:
        table.add_row(str(e.seq), e.at.isoformat(timespec="seconds"), escape(e.actor), e.action, escape(e.target),
                      escape(json.dumps(e.details)[:80]))
    console.print(table)
