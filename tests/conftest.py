"""Fixtures shared by every test (the helpers themselves live in ``tests/servers.py`` and beside it)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
