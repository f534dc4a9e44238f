"""Every command, option, setting and route is documented; every module's __all__ is sorted and complete."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
import typer.main

import genfoundry
from genfoundry.cli import app as cli_app
from genfoundry.core.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _commands(command, path=()):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


COMMANDS = list(_commands(typer.main.get_command(cli_app)))


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_and_option_is_documented(path, command):
    text = (DOCS / "cli.md").read_text()
    assert f"genfoundry {' '.join(path)}" in text
    options = [o for p in command.params for o in p.opts
               if type(p).__name__.endswith("Option") and o.startswith("--") and o != "--help"]
    missing = [o for o in options if f"`{o}`" not in text and f"[{o}]" not in text and f"{o} " not in text]
    assert not missing, f"undocumented options of genfoundry {' '.join(path)}: {missing}"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name):
    assert f"| `{name}` |" in (DOCS / "settings.md").read_text()


def test_every_route_is_documented(tmp_path):
    from genfoundry.core.settings import load_settings
    from genfoundry.gateway.app import create_app
    text = (DOCS / "gateway.md").read_text()
    app = create_app(load_settings(home=tmp_path, environ={}), builtins=False)
    routes = list(app.openapi()["paths"])  # every documented operation, from included routers too
    assert "/v1/chat/completions" in routes and "/v1/collections/{name}/documents" in routes
    missing = [p for p in routes if re.sub(r"\{(\w+)(:path)?\}", r"{\1}", p) not in text]
    assert not missing, f"undocumented routes: {missing}"


def _modules():
    for info in pkgutil.walk_packages(genfoundry.__path__, "genfoundry."):
        if not info.name.endswith("__main__"):
            yield info.name


@pytest.mark.parametrize("name", sorted(_modules()))
def test_all_is_sorted_and_complete(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    defined = [n for n, obj in vars(module).items()
               if not n.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
               and getattr(obj, "__module__", None) == name]
    if exported is None:
        # Modules without __all__ are internal (routes, CLI commands): nothing to keep in order.
        return
    assert exported == sorted(exported), f"{name}.__all__ is not sorted"
    assert all(hasattr(module, n) for n in exported), f"{name}.__all__ names something missing"
    missing = sorted(set(defined) - set(exported))
    assert not missing, f"{name} defines public names not in __all__: {missing}"
