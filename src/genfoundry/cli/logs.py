"""`genfoundry logs`: the recorded calls."""

from __future__ import annotations

import datetime as dt
import json

import typer
from rich.markup import escape
from rich.table import Table

from genfoundry.cli.common import console, get_context, handle_errors
from genfoundry.core.errors import InvalidRequest
from genfoundry.observe.calls import list_calls


def _parse_time(value: str | None, label: str) -> dt.datetime | None:
    if value is None:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{label} must be an ISO date/time (2026-11-01, 2026-11-01T09:30) or an age such as 30m, 2h, 7d") from None
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


@handle_errors
def logs(ctx: typer.Context,
         model: str = typer.Option(None, help="Only calls to this model."),
         key: str = typer.Option(None, help="Only calls made with this key id."),
         status: str = typer.Option(None, help="ok, error or cancelled."),
         since: str = typer.Option(None, help="From this time (ISO, or an age such as 2h, 7d)."),
         until: str = typer.Option(None, help="Before this time (ISO, or an age)."),
         limit: int = typer.Option(20, min=1, help="How many calls, newest first."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON lines, content included.")):
    """List recorded calls, newest first."""
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    if start and end and start >= end:
        raise InvalidRequest("--since must be before --until")
    rows = list_calls(get_context(ctx).store, model=model, key_id=key, status=status,
                      since=start, until=end, limit=limit)
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str))
        return
    table = Table("time (UTC)", "id", "key", "endpoint", "model", "status", "tokens in/out", "ttft ms", "ms", "cost $")
    for r in rows:
        table.add_row(f"{r['created_at']:%m-%d %H:%M:%S}", r["id"][-12:], r["key_id"] or "-", r["endpoint"],
                      escape(r["resolved_model"] or r["model"] or "-"),
                      r["status"] if r["status"] == "ok" else f"[red]{r['status']} {r['http_status']}[/red]",
                      f"{r['prompt_tokens']}/{r['completion_tokens']}",
                      f"{r['ttft_ms']:.0f}" if r["ttft_ms"] is not None else "-", f"{r['latency_ms']:.0f}",
                      f"{r['cost_usd']:.6f}" if r["cost_usd"] is not None else "-")
    console.print(table)
