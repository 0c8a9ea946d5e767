"""Fixtures shared by every test (the helpers themselves live in ``tests/servers.py`` and beside it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.npm_peers import node_modules_path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def node_modules() -> Path:
    """The npm peers `make test` installs (Node 22 among them); skips the test without them."""
    return node_modules_path()
