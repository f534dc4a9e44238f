"""Fixtures for integration tests: a real gateway on the built-in models."""

from __future__ import annotations

import pytest

from genfoundry.testing.servers import start_gateway, stop_gateway


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("gf-home"))
    yield gw
    stop_gateway(gw)
