"""The layering shows in the imports: no circles, connectors below hub, frameworks at the edge only."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
PACKAGES: Final = ("hub", "connectors")
MAX_LINES: Final = 400


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any level (type-checking imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {other for other in imports(path) if other in known and other != name} for name, path in known.items()
    }


def test_there_are_modules_to_check() -> None:
    assert len(modules()) > 30  # the checks below would pass vacuously on an empty tree


def test_no_import_circles_in_hub_or_connectors() -> None:
    edges = graph()
    # Package __init__ files re-export their modules; a module importing its own package is what would loop.
    edges = {name: {o for o in out if o not in PACKAGES} for name, out in edges.items()}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(edges[name]):
            if state.get(other) == 1:
                circles.append([*path[path.index(other) :], other] if other in path else [name, other])
            elif other not in state:
                visit(other, [*path, other])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_connectors_import_nothing_of_hub() -> None:
    offenders = {
        name: sorted(i for i in imports(path) if i == "hub" or i.startswith("hub."))
        for name, path in modules().items()
        if name.startswith("connectors")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_only_the_http_layer_imports_the_web_frameworks() -> None:
    frameworks = ("fastapi", "starlette", "uvicorn")
    users = {name for name, path in modules().items() if any(i.split(".")[0] in frameworks for i in imports(path))}
    assert users == {"hub.app", "hub.admin", "hub.server"}


def test_the_json_rpc_engine_and_its_transport_protocol_import_no_http_library() -> None:
    http = ("httpx", "httpx_sse", "httptools", "h11", "ssl", "socket", "connectors.http1", "connectors.clients")
    for name in ("connectors.engine", "connectors.calls", "connectors.transport", "connectors.jsonrpc"):
        found = [i for i in imports(modules()[name]) if i.split(".")[0] in http or i in http]
        assert found == [], name


def test_only_the_store_imports_aiosqlite() -> None:
    users = {name for name, path in modules().items() if any(i.split(".")[0] == "aiosqlite" for i in imports(path))}
    assert users == {"hub.sqlite_store"}


def test_no_module_passes_the_line_limit() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
