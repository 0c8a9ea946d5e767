"""The ``manifold`` commands that ask a running hub: ``health``, ``tools``, ``audit``.

Each takes the hub's base URL and, when the hub has auth on, a credential
(``--token`` or ``MANIFOLD_TOKEN``), sent as a bearer token.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any, Final

import httpx
from httpx_sse import EventSource

from connectors import jsonrpc
from connectors.spec import LATEST_VERSION

__all__ = ["audit", "health", "table", "tools"]

_TIMEOUT: Final = 10.0


def _auth(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def health(url: str, as_json: bool, token: str | None = None) -> int:
    """Print a running hub's health; exit 0 only when every upstream is up."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", headers=_auth(token), timeout=_TIMEOUT, trust_env=False)
        response.raise_for_status()
        report: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"manifold health: cannot reach the hub at {url}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(jsonrpc.dumps(report).decode())
    elif "upstreams" not in report:
        print(f"hub: {report.get('status')} (the detail needs an admin credential: --token or MANIFOLD_TOKEN)")
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
        print(table(rows))
        _processes(report["upstreams"])
        _replicas(report.get("replica"))
        print(f"\nhub: {report['status']}, {report['sessions']} sessions, {report['tools']} tools")
        for note in report.get("collisions", []):
            print(f"collision: {note}")
    return 0 if report.get("status") == "ok" else 1


def _replicas(replica: dict[str, Any] | None) -> None:
    """The replicas on the hub's Redis, as its last heartbeat saw them (this one marked)."""
    if not replica:
        return
    rows = [["REPLICA", "URL", "SESSIONS", "UP FOR", "CONFIG"]]
    now = time.time()
    for other in replica["replicas"]:
        mark = " (this one)" if other["id"] == replica["id"] else ""
        same = "same" if other["config"] == replica["config"] else "DIFFERS"
        rows.append([other["id"] + mark, other["url"], str(other["sessions"]), f"{now - other['started']:.0f}s", same])
    print("\n" + table(rows))
    moved = f"forwarded {replica['forwarded']}, taken over {replica['takeovers']}"
    print(f"{moved}, control plane {replica['controlPlane']}")


def _processes(upstreams: list[dict[str, Any]]) -> None:
    """The processes of local servers, and what their sandboxes loosen."""
    rows = [["UPSTREAM", "PID", "FOR", "AGE", "RESTARTS", "MEMORY"]]
    for upstream in upstreams:
        for process in upstream.get("processes", []):
            whom = "discovery" if process["role"] == "discovery" else f"tenant {process['tenant'] or '-'}"
            rss = f"{process['rssBytes'] / 1048576:.1f} MiB"
            rows.append(
                [
                    upstream["name"],
                    str(process["pid"]),
                    whom,
                    f"{process['ageSeconds']:.0f}s",
                    str(process["restarts"]),
                    rss,
                ]
            )
    if len(rows) > 1:
        print("\n" + table(rows))
    for upstream in upstreams:
        sandbox = upstream.get("sandbox")
        if sandbox and sandbox.get("loosened"):
            print(f"sandbox of {upstream['name']} loosened: {', '.join(sandbox['loosened'])}")


def _breaker(breaker: dict[str, Any]) -> str:
    state = str(breaker.get("state", "-"))
    if state == "open" and "retryInS" in breaker:
        return f"open ({breaker.get('failures', 0)} failures, retry in {breaker['retryInS']}s)"
    return state


class _Client:
    """Just enough of an MCP client to list a hub's catalog."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = f"{url.rstrip('/')}/mcp"
        self.http = httpx.Client(timeout=_TIMEOUT, trust_env=False)
        self.headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            **_auth(token),
        }
        self.ids = 0

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.ids += 1
        body = jsonrpc.dumps(jsonrpc.request(self.ids, method, params))
        with self.http.stream("POST", self.url, content=body, headers=self.headers) as response:
            if session_id := response.headers.get("mcp-session-id"):
                self.headers["mcp-session-id"] = session_id
            if response.status_code >= 400 and not response.headers.get("content-type", "").startswith(
                "application/json"
            ):
                raise RuntimeError(f"{method}: HTTP {response.status_code}")
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                messages = [jsonrpc.loads(e.data) for e in EventSource(response).iter_sse() if e.data]
                reply = messages[-1] if messages else {"error": {"message": "the stream ended without a reply"}}
            else:
                reply = jsonrpc.loads(response.read())
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message')}")
        result: dict[str, Any] = reply["result"]
        return result

    def close(self) -> None:
        if "mcp-session-id" in self.headers:
            self.http.delete(self.url, headers=self.headers)
        self.http.close()


def tools(url: str, as_json: bool, token: str | None = None) -> int:
    """Print a running hub's merged catalog (the caller's view of it)."""
    client = _Client(url, token)
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
    print(table(rows))
    print(f"\n{len(tools)} tools")
    return 0


def _since(text: str) -> float:
    """``1h``, ``30m``, ``2d``, ``45s`` ago (or unix seconds) as unix seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (try 1h, 30m or 2d)")
    value, unit = float(match.group(1)), match.group(2)
    if not unit:
        return value
    return time.time() - value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def audit(url: str, as_json: bool, token: str | None, tenant: str | None, since: str, tool: str | None) -> int:
    """Print a running hub's recent audit records (an admin credential when auth is on)."""
    try:
        params: dict[str, str] = {"since": str(_since(since))}
    except ValueError as exc:
        print(f"manifold audit: {exc}", file=sys.stderr)
        return 2
    if tenant:
        params["tenant"] = tenant
    if tool:
        params["tool"] = tool
    try:
        response = httpx.get(
            f"{url.rstrip('/')}/audit", params=params, headers=_auth(token), timeout=_TIMEOUT, trust_env=False
        )
        payload = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"manifold audit: cannot reach the hub at {url}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        message = payload.get("error", {}).get("message") if isinstance(payload, dict) else response.text
        print(f"manifold audit: {message}", file=sys.stderr)
        return 1
    if as_json:
        print(jsonrpc.dumps(payload).decode())
        return 0
    rows = [["TIME", "TENANT", "PRINCIPAL", "METHOD", "NAME", "UPSTREAM", "MS", "OUTCOME"]]
    for record in payload:
        outcome = record["outcome"] + (f" {record['code']}" if record.get("code") is not None else "")
        rows.append(
            [
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["time"])),
                record["tenant"] or "-",
                record["principal"] or "-",
                record["method"],
                record["name"] or "-",
                record["upstream"] or "-",
                f"{record['duration_ms']:.1f}",
                outcome,
            ]
        )
    print(table(rows))
    print(f"\n{len(payload)} records")
    return 0
