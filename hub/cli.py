"""The ``manifold`` command: ``serve``, ``check``, ``keys``, and (in :mod:`hub.cli_remote`) the commands
that ask a running hub: ``health``, ``tools``, ``audit``."""

from __future__ import annotations

import argparse
import gc
import hashlib
import secrets
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from connectors import jsonrpc, tracing
from connectors.sandbox import loosened
from hub import cli_operate, cli_remote
from hub.config import ProcessSettings, exposure_problem, load_config
from hub.errors import ConfigError

__all__ = ["main", "tune_collector"]


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

    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    new = key_commands.add_parser("new", help="print a new API key once, and the config entry to paste")
    new.add_argument("--name", required=True, help="the key's name (the principal it stands for)")
    new.add_argument("--tenant", required=True, help="the tenant it belongs to")
    new.add_argument("--admin", action="store_true", help="may read health detail, audit records and metrics")
    new.add_argument("--expires", help="when it stops working, e.g. 2027-06-30T00:00:00Z")

    remote = (
        ("tools", "print the merged catalog of a running hub"),
        ("health", "ask a running hub how it and its upstreams are"),
        ("audit", "print a running hub's recent audit records"),
        ("sessions", "list a running hub's open sessions by tenant"),
        ("reload", "make a running hub read its config file again; exit 1 with every problem"),
    )
    for name, text in remote:
        command = commands.add_parser(name, help=text)
        command.add_argument("--url", default=settings.url, help="the hub's base URL (default: %(default)s)")
        command.add_argument("--token", default=settings.token, help="a credential for the hub (or MANIFOLD_TOKEN)")
        command.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if name == "audit":
            command.add_argument("--tenant", help="only this tenant's records")
            command.add_argument("--since", default="1h", help="how far back: 30m, 1h, 2d (default: %(default)s)")
            command.add_argument("--tool", help="only names matching this glob")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = ProcessSettings()
    except ValidationError as exc:
        for problem in exc.errors():
            print(f"{_variable(problem['loc'])}: {problem['msg']}", file=sys.stderr)
        return 2
    except SettingsError as exc:  # (a value that cannot be read at all)
        print(f"MANIFOLD_* settings: {exc}", file=sys.stderr)
        return 2
    args = _parser(settings).parse_args(argv)
    if args.command == "serve":
        tune_collector(settings.gc_threshold)
        return _serve(args.config, args.host, args.port, args.log_level)
    if args.command == "check":
        return _check(args.path)
    if args.command == "keys":
        return _new_key(args.name, args.tenant, args.admin, args.expires)
    if args.command == "tools":
        return cli_remote.tools(args.url, args.json, args.token)
    if args.command == "audit":
        return cli_remote.audit(args.url, args.json, args.token, args.tenant, args.since, args.tool)
    if args.command == "sessions":
        return cli_operate.sessions(args.url, args.json, args.token)
    if args.command == "reload":
        return cli_operate.reload(args.url, args.json, args.token)
    return cli_remote.health(args.url, args.json, args.token)


def _serve(path: str, host: str | None, port: int | None, log_level: str) -> int:
    from hub.app import create_app
    from hub.logs import configure as configure_logs
    from hub.server import HubServer, server_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {exc.message}", file=sys.stderr)
        return 2
    problem = exposure_problem(config, host or config.hub.host)
    if problem is not None:
        print(f"{path}: {problem}", file=sys.stderr)
        return 2
    log_config = configure_logs(log_level, ProcessSettings().log_format)
    tracing.configure()  # on when OTEL_TRACES_EXPORTER names an exporter
    app = create_app(config, path, host)
    listen = server_config(
        app,
        config.hub,
        host=host or config.hub.host,
        port=config.hub.port if port is None else port,
        log_level=log_level,
        log_config=log_config,
    )
    server = HubServer(listen, app.hub)
    server.run()
    return 0 if server.started else 1


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable a problem of the process settings is in (and where inside it)."""
    if not loc:
        return "MANIFOLD_*"
    inside = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])
    return f"MANIFOLD_{str(loc[0]).upper()}{inside}"


def tune_collector(threshold: int) -> None:
    """Set the collector's first threshold; the others keep their values."""
    _, second, third = gc.get_threshold()
    gc.set_threshold(threshold, second, third)


def _check(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {exc.message}", file=sys.stderr)
        return 2
    print(f"{path}: ok ({len(config.enabled())} upstreams enabled of {len(config.mcp_servers)})")
    for spec in config.upstream_specs():
        if spec.stdio is not None and (loose := loosened(spec.stdio)):
            print(f"{path}: upstream {spec.name} runs with a loosened sandbox: {', '.join(loose)}")
    problem = exposure_problem(config, config.hub.host)
    if problem is not None:
        print(f"{path}: {problem}", file=sys.stderr)
        return 2
    return 0


def _new_key(name: str, tenant: str, admin: bool, expires: str | None) -> int:
    key = "mfd_" + secrets.token_urlsafe(32)
    entry: dict[str, Any] = {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "tenant": tenant}
    if expires:
        entry["expires"] = expires
    if admin:
        entry["admin"] = True
    print(f"key (shown once; give it to its holder): {key}")
    print('entry for "auth": {"apiKeys": [...]} in the config:')
    print(jsonrpc.dumps(entry).decode())
    return 0
