"""The `genfoundry` command. One module per noun."""

from __future__ import annotations

from pathlib import Path

import typer

from genfoundry.cli import bench, engine, keys, models
from genfoundry.cli.chat import chat
from genfoundry.cli.common import Context
from genfoundry.cli.logs import logs
from genfoundry.cli.serve import serve, up

__all__ = ["app", "main"]

app = typer.Typer(name="genfoundry", no_args_is_help=True, add_completion=False,
                  help="genfoundry: your own generative-AI stack. Start with `genfoundry up`.")


@app.callback()
def _root(ctx: typer.Context,
         home: Path = typer.Option(None, "--home", envvar="GENFOUNDRY_HOME",
                                   help="Where genfoundry keeps its data (default ~/.genfoundry).")):
    ctx.obj = Context(home=home)


app.command("up")(up)
app.command("serve")(serve)
app.command("chat")(chat)
app.command("logs")(logs)
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
app.add_typer(bench.app, name="bench")
app.add_typer(engine.app, name="engine")


def main() -> None:
    app()
