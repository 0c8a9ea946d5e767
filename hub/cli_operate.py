"""The ``manifold`` commands that operate a running hub: ``sessions`` and ``reload``.

Like :mod:`hub.cli_remote`'s, each takes the hub's base URL and an admin credential
(``--token`` or ``MANIFOLD_TOKEN``) when the hub has auth on.
"""

from __future__ import annotations

import sys
from typing import Any, Final

import httpx

from connectors import jsonrpc
from hub.cli_remote import table

__all__ = ["reload", "sessions"]

_TIMEOUT: Final = 60.0  # a reload waits for removed upstreams' calls (up to hub.drainTimeout)


def _ask(method: str, url: str, path: str, token: str | None) -> httpx.Response | None:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        return httpx.request(method, f"{url.rstrip('/')}{path}", headers=headers, timeout=_TIMEOUT, trust_env=False)
    except httpx.HTTPError as exc:
        print(f"manifold: cannot reach the hub at {url}: {exc}", file=sys.stderr)
        return None


def _answer(method: str, url: str, path: str, token: str | None) -> dict[str, Any] | None:
    """The hub's JSON answer, or None (said why on stderr) when it could not be reached or refused."""
    response = _ask(method, url, path, token)
    if response is None:
        return None
    if response.status_code in (401, 403):
        status = response.status_code
        print(f"manifold: the hub refused (HTTP {status}): an admin credential is needed", file=sys.stderr)
        return None
    answer: dict[str, Any] = response.json()
    return answer


def sessions(url: str, as_json: bool, token: str | None = None) -> int:
    """Print the hub's open sessions; exit 0 when it answered."""
    report = _answer("GET", url, "/admin/sessions", token)
    if report is None:
        return 1
    if as_json:
        print(jsonrpc.dumps(report).decode())
        return 0
    rows = [["TENANT", "ERA", "PRINCIPAL", "CLIENT", "AGE", "IN FLIGHT", "SESSION"]]
    for s in sorted(report["sessions"], key=lambda s: (s["tenant"], -s["ageSeconds"])):
        age = f"{s['ageSeconds']:.0f}s"
        rows.append(
            [s["tenant"] or "-", "session", s["principal"], s["client"] or "", age, str(s["callsInFlight"]), s["id"]]
        )
    for s in sorted(report["stateless"], key=lambda s: (s["tenant"], s["principal"])):
        rows.append([s["tenant"] or "-", "stateless", s["principal"], "", "", str(s["callsInFlight"]), ""])
    print(table(rows))
    print(f"\n{len(report['sessions'])} sessions, {len(report['stateless'])} stateless callers")
    return 0


def reload(url: str, as_json: bool, token: str | None = None) -> int:
    """Ask the hub to reload its config file; exit 0 when applied, 1 with every problem when refused."""
    outcome = _answer("POST", url, "/admin/reload", token)
    if outcome is None:
        return 1
    if as_json:
        print(jsonrpc.dumps(outcome).decode())
    elif outcome["ok"]:
        changes = "; ".join(f"{kind}: {', '.join(names) or '-'}" for kind, names in outcome["upstreams"].items())
        print(f"reloaded (upstreams {changes})")
        for setting in outcome["restartNeeded"]:
            print(f"not applied until a restart: {setting}")
    else:
        print("reload refused; the hub keeps serving its config:", file=sys.stderr)
        for problem in outcome["problems"]:
            print(f"  {problem}", file=sys.stderr)
    return 0 if outcome["ok"] else 1
