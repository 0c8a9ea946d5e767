"""How an upstream's messages look to a client: the upstream named, URIs public, task ids public."""

from __future__ import annotations

from connectors.jsonrpc import Message
from hub.catalog import Catalog

__all__ = ["for_client"]


def for_client(catalog: Catalog, upstream: str, message: Message) -> Message:
    """An upstream's notification as a client should see it: its logger names the upstream, URIs are public."""
    method = message["method"]
    params = message.get("params")
    if not isinstance(params, dict):
        return message
    if method == "notifications/message":
        logger_name = params.get("logger")
        params = {**params, "logger": f"{upstream}/{logger_name}" if logger_name else upstream}
    elif method == "notifications/resources/updated" and isinstance(params.get("uri"), str):
        params = {**params, "uri": catalog.public_uri_of(upstream, params["uri"])}
    else:
        return message
    return {**message, "params": params}
