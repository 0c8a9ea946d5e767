"""The ``manifold`` command: serve, check, tools, health."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from connectors import jsonrpc
from connectors.spec import LATEST_VERSION
from hub.config import ProcessSettings, load_config
from hub.errors import ConfigError

__all__ = ["main"]

_TIMEOUT = 10.0


def _parser(settings: ProcessSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="manifold", description="One URL in front of many MCP servers.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the hub")
    serve.add_argument("--config", default=str(settings.config), help="config file (default: %(default)s)")
    serve.add_argument("--host", default=settings.host, help="listen address (default: the config's hub.host)")
    serve.add_argument("--port", type=int, default=settings.port, help="listen port (default: the config's hub.port)")
    serve.add_argument("--log-level", default=settings.log_level, choices=["debug", "info", "warning", "error"])

    check = commands.add_parser("check", help="validate a config file; exit 2 with every problem")
    check.add_argument("path")

    for name, text in (("tools", "print the merged catalog of a running hub"), ("health", "ask a running hub")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--url", default=settings.url, help="the hub's base URL (default: %(default)s)")
        command.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    settings = ProcessSettings()
    args = _parser(settings).parse_args(argv)
    if args.command == "serve":
        return _serve(args.config, args.host, args.port, args.log_level)
    if args.command == "check":
        return _check(args.path)
    if args.command == "tools":
        return _tools(args.url, args.json)
    return _health(args.url, args.json)


def _serve(path: str, host: str | None, port: int | None, log_level: str) -> int:
    from hub.app import create_app
    from hub.server import HubServer, server_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {exc.message}", file=sys.stderr)
        return 2
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream request is noise
    app = create_app(config)
    listen = server_config(
        app,
        config.hub,
        host=host or config.hub.host,
        port=config.hub.port if port is None else port,
        log_level=log_level,
    )
    server = HubServer(listen, app.hub)
    server.run()
    return 0 if server.started else 1


def _check(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {exc.message}", file=sys.stderr)
        return 2
    print(f"{path}: ok ({len(config.enabled())} upstreams enabled of {len(config.mcp_servers)})")
    return 0


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _health(url: str, as_json: bool) -> int:
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=_TIMEOUT, trust_env=False)
        response.raise_for_status()
        report: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"manifold health: cannot reach the hub at {url}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(jsonrpc.dumps(report).decode())
    else:
        rows = [["UPSTREAM", "TRANSPORT", "STATE", "BREAKER", "LATENCY", "TOOLS", "LAST ERROR"]]
        for upstream in report["upstreams"]:
            latency = upstream.get("latencyMs")
            rows.append(
                [
                    upstream["name"],
                    upstream["transport"],
                    upstream["state"],
                    _breaker(upstream.get("breaker") or {}),
                    "-" if latency is None else f"{latency:.1f} ms",
                    str(upstream["tools"]),
                    upstream.get("lastError") or "",
                ]
            )
        print(_table(rows))
        print(f"\nhub: {report['status']}, {report['sessions']} sessions, {report['tools']} tools")
        for note in report.get("collisions", []):
            print(f"collision: {note}")
    return 0 if report.get("status") == "ok" else 1


def _breaker(breaker: dict[str, Any]) -> str:
    state = str(breaker.get("state", "-"))
    if state == "open" and "retryInS" in breaker:
        return f"open ({breaker.get('failures', 0)} failures, retry in {breaker['retryInS']}s)"
    return state


class _Client:
    """Just enough of an MCP client to list a hub's catalog."""

    def __init__(self, url: str) -> None:
        self.url = f"{url.rstrip('/')}/mcp"
        self.http = httpx.Client(timeout=_TIMEOUT, trust_env=False)
        self.headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        self.ids = 0

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.ids += 1
        response = self.http.post(
            self.url, content=jsonrpc.dumps(jsonrpc.request(self.ids, method, params)), headers=self.headers
        )
        if session_id := response.headers.get("mcp-session-id"):
            self.headers["mcp-session-id"] = session_id
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            lines = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
            reply = jsonrpc.loads(lines[-1])
        else:
            reply = jsonrpc.loads(response.content)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message')}")
        result: dict[str, Any] = reply["result"]
        return result

    def close(self) -> None:
        if "mcp-session-id" in self.headers:
            self.http.delete(self.url, headers=self.headers)
        self.http.close()


def _tools(url: str, as_json: bool) -> int:
    client = _Client(url)
    tools: list[dict[str, Any]] = []
    try:
        init = client.request(
            "initialize",
            {
                "protocolVersion": LATEST_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "manifold-cli", "version": "0"},
            },
        )
        client.headers["mcp-protocol-version"] = init["protocolVersion"]
        client.http.post(
            client.url, content=jsonrpc.dumps(jsonrpc.notification("notifications/initialized")), headers=client.headers
        )
        cursor = None
        while True:
            page = client.request("tools/list", {"cursor": cursor} if cursor else None)
            tools += page.get("tools", [])
            cursor = page.get("nextCursor")
            if not cursor:
                break
    except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as exc:
        print(f"manifold tools: cannot list the catalog at {url}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if as_json:
        print(jsonrpc.dumps(tools).decode())
        return 0
    rows = [["TOOL", "DESCRIPTION"]]
    for tool in tools:
        description = (tool.get("description") or tool.get("title") or "").strip().splitlines()
        text = description[0] if description else ""
        rows.append([tool["name"], text if len(text) <= 70 else text[:67] + "..."])
    print(_table(rows))
    print(f"\n{len(tools)} tools")
    return 0
