"""`genfoundry audit`: the hash-chained audit log — verify it, list it."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from genfoundry.cli.common import console, err_console, get_context, handle_errors
from genfoundry.cli.logs import _parse_time
from genfoundry.core.audit import entries, verify
from genfoundry.core.errors import InvalidRequest
from genfoundry.guard.types import SENSITIVITY_LEVELS

app = typer.Typer(no_args_is_help=True, help="The audit log: guard decisions, key, access, deletion, forget and vault events, hash-chained.")


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


@app.command("prove")
@handle_errors
def prove_(ctx: typer.Context,
           since: str = typer.Option(..., help="From this time (ISO date/time, or an age such as 7d)."),
           until: str = typer.Option(None, help="Up to this time (default: now)."),
           as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Show from the records that no request above a model's clearance reached it (or list those that did).

    Exits 1 when a request reached a model not cleared for it, a call has no guard
    decision on record, or the audit chain was tampered with.
    """
    from genfoundry.guard.proof import prove

    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    if end is not None and start >= end:
        raise InvalidRequest("--since must be before --until")
    c = get_context(ctx)
    report = prove(c.store, c.hub(), since=start, until=end)
    if as_json:
        print(json.dumps(report.to_dict(), default=str))
    else:
        _print_proof(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_proof(report) -> None:
    console.print(f"Routing proof, {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC")
    console.print(f"  audit chain: {'[green]intact[/green]' if report.chain_ok else '[red]TAMPERED[/red]'}")
    for problem in report.chain_problems:
        console.print(f"    {escape(problem)}")
    outcomes = ", ".join(f"{n} {k}" for k, n in sorted(report.outcomes.items())) or "none"
    console.print(f"  guard decisions: {report.decisions} ({outcomes})")
    table = Table("model", *SENSITIVITY_LEVELS, title="requests sent, by model and sensitivity")
    for model, counts in sorted(report.by_model.items()):
        table.add_row(escape(model), *(str(counts.get(level, 0)) for level in SENSITIVITY_LEVELS))
    if report.by_model:
        console.print(table)
    if report.violations:
        console.print(f"[red]{len(report.violations)} request(s) reached a model not cleared for them:[/red]")
        for v in report.violations:
            console.print(f"  {v['call']} at {v['at']}: {v['sensitivity']} request to '{escape(v['model'])}' "
                          f"(cleared for {v['clearance']}); {escape(v['why'])}; evidence: "
                          f"{escape('; '.join(v['evidence']) or 'none')} (audit entry {v['audit_seq']})")
    if report.unguarded:
        console.print(f"[red]{len(report.unguarded)} call(s) reached a model with no guard decision:[/red]")
        for u in report.unguarded[:50]:
            console.print(f"  {u['call']} at {u['at']} ({u['endpoint']}, model '{escape(u['model'])}')")
    if report.ok:
        console.print("[green]proved[/green]: every request in the period went to a model cleared for it")
