"""What every command shares: settings from --home, the store, the hub, and
turning genfoundry errors into a red line and exit code 1."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from genfoundry.core.errors import GenfoundryError
from genfoundry.core.settings import Settings, load_settings
from genfoundry.core.store import Store
from genfoundry.models.hub import ModelHub

__all__ = ["Context", "console", "err_console", "get_context", "handle_errors"]

console = Console()
err_console = Console(stderr=True)


@dataclass
class Context:
    home: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None
    _store: Store | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(home=self.home, overrides=self.overrides)
            self._settings.ensure_home()
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        return self._settings

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.settings.resolved_database_url)
        return self._store

    def hub(self, *, builtins: bool = True) -> ModelHub:
        hub = ModelHub(self.store, self.settings)
        if builtins:
            from genfoundry.models.builtin import register_builtins
            register_builtins(hub)
        return hub


def get_context(ctx: typer.Context) -> Context:
    root = ctx.find_root()
    if not isinstance(root.obj, Context):
        root.obj = Context()
    return root.obj


def handle_errors(fn):
    """Show genfoundry errors as one clear line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GenfoundryError as exc:
            # Messages quote user input, so no markup; soft_wrap keeps one line in a pipe.
            err_console.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
    return wrapper
