"""One upstream's supervisor: its discovery session, its listing, its health, its reconnects.

The supervisor keeps a *discovery* session open (handshake, listing, a ping
per health interval), lists the upstream again when it says ``list_changed``,
pings at once when a client's call failed as if the upstream were gone, and
reconnects with exponential backoff and jitter when the session drops. It
reports every change through ``report``. The discovery session serves no
client's calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from connectors.engine import Connector
from connectors.errors import NotRelayed, UpstreamError, UpstreamUnavailable
from connectors.factory import make_connector
from connectors.jsonrpc import Message
from connectors.limits import PoolLimits
from connectors.sandbox import DISCOVERY
from connectors.spec import TASKS_EXTENSION
from connectors.status import Listing, UpstreamState, UpstreamStatus
from connectors.upstream import Upstream

__all__ = ["DISCOVERY_CAPABILITIES", "Supervisor"]

logger = logging.getLogger(__name__)

_MAX_LIST_PAGES: Final = 1000
_MIN_TTL_MS: Final = 100  # a list is not listed again more often than this, whatever ttlMs says

# The discovery session declares every client capability the hub can relay: some servers list
# capability-gated tools only to sessions that declare them. A client that lacks one gets a clear
# error when such a tool asks it.
DISCOVERY_CAPABILITIES: Final[Message] = {
    "roots": {"listChanged": True},
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
}


async def answer_unrelated(message: Message) -> Message:
    """Answer a request that reached a session serving no client (discovery), or no call of one."""
    if message["method"] == "roots/list":
        return {"roots": []}  # the hub has no roots of its own
    raise NotRelayed(f"{message['method']} has no client to go to outside a call")


class Supervisor:
    """Runs one upstream's discovery session for as long as the pool keeps the upstream."""

    def __init__(self, upstream: Upstream, limits: PoolLimits, report: Callable[[Upstream, UpstreamStatus], None]):
        self.upstream = upstream
        self.limits = limits
        self._report = report

    async def run(self) -> None:
        upstream = self.upstream
        spec = upstream.spec
        attempt = 0
        reconnects = 0
        while True:
            error = "connection closed"
            try:
                connector = make_connector(
                    spec,
                    upstream.clients,
                    capabilities=DISCOVERY_CAPABILITIES,
                    on_message=lambda message: logger.debug("upstream %s said %s", spec.name, message["method"]),
                    on_request=answer_unrelated,
                    on_list_changed=lambda message: upstream.refresh.set(),
                    tool_schema=upstream.tool_schema,
                    key=DISCOVERY,
                )
                started = time.perf_counter()
                async with connector:
                    listing = await discover(connector)
                    upstream.discovery = connector
                    upstream.listing = listing
                    upstream.breaker.close()
                    attempt = 0
                    self._report(
                        upstream,
                        UpstreamStatus(
                            name=spec.name,
                            transport=spec.transport,
                            state=UpstreamState.UP,
                            latency_ms=(time.perf_counter() - started) * 1000,
                            server_info=connector.server_info,
                            capabilities=connector.server_capabilities,
                            protocol=connector.protocol_version,
                            listing=listing,
                            reconnects=reconnects,
                        ),
                    )
                    logger.info("upstream %s is up (%d tools)", spec.name, len(listing.tools))
                    upstream.settled.set()
                    await self._watch(connector)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc.reason if isinstance(exc, UpstreamError) else f"{type(exc).__name__}: {exc}"
            finally:
                upstream.discovery = None
            logger.warning("upstream %s is down: %s", spec.name, error)
            reconnects += 1
            self._report(
                upstream,
                UpstreamStatus(
                    name=spec.name,
                    transport=spec.transport,
                    state=UpstreamState.DOWN,
                    last_error=error,
                    reconnects=reconnects,
                ),
            )
            upstream.settled.set()
            delay = min(self.limits.backoff_max, self.limits.backoff_initial * 2**attempt)
            attempt += 1
            upstream.refresh.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay * random.uniform(0.5, 1.0)):
                    await upstream.refresh.wait()

    async def _watch(self, connector: Connector) -> None:
        """Return or raise when the discovery session is lost; list again and ping as asked."""
        upstream = self.upstream
        spec = upstream.spec
        loop = asyncio.get_running_loop()
        listed_at = loop.time()  # the listing was made just before the watch began
        while True:
            timeout = self.limits.health_interval
            # A 2026-07-28 upstream's lists are listed again when the time it gave them runs out.
            ttl = upstream.listing.ttl_ms if upstream.listing is not None else None
            stale_at = listed_at + max(ttl, _MIN_TTL_MS) / 1000 if ttl else None
            if stale_at is not None:
                timeout = max(0.0, min(timeout, stale_at - loop.time()))
            waits = [
                asyncio.ensure_future(connector.lost_event.wait()),
                asyncio.ensure_future(upstream.refresh.wait()),
                asyncio.ensure_future(upstream.check.wait()),
            ]
            try:
                await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
            finally:
                for wait in waits:
                    wait.cancel()
            if stale_at is not None and loop.time() >= stale_at:
                upstream.refresh.set()
            if connector.is_lost:
                raise UpstreamUnavailable(spec.name, f"connection lost ({connector.lost_reason})")
            if upstream.refresh.is_set():
                upstream.refresh.clear()
                listed_at = loop.time()
                listing = await discover(connector)
                upstream.listing = listing
                self._report(upstream, replace(upstream.status, listing=listing))
                continue
            # A ping per health interval, and at once when a client's call lost its connection.
            upstream.check.clear()
            started = time.perf_counter()
            limit = min(self.limits.health_interval, spec.request_timeout, spec.connect_timeout)
            # The stateless era has no ping; discover is its cheapest question.
            await connector.request("server/discover" if connector.modern else "ping", time_limit=limit)
            self._report(upstream, replace(upstream.status, latency_ms=(time.perf_counter() - started) * 1000))


async def discover(connector: Connector) -> Listing:
    """Everything an upstream offers, every page of every list its capabilities name."""
    capabilities = connector.server_capabilities
    empty: tuple[Message, ...] = ()
    tools, prompts, resources, templates = empty, empty, empty, empty
    ttls: list[int] = []
    if "tools" in capabilities:
        tools = await _list_all(connector, "tools/list", "tools", ttls)
    if "prompts" in capabilities:
        prompts = await _list_all(connector, "prompts/list", "prompts", ttls)
    if "resources" in capabilities:
        resources = await _list_all(connector, "resources/list", "resources", ttls)
        templates = await _list_all(connector, "resources/templates/list", "resourceTemplates", ttls)
    ttl = min(ttls) if connector.modern and ttls else None
    extensions = capabilities.get("extensions")
    decides = connector.modern and isinstance(extensions, dict) and TASKS_EXTENSION in extensions
    return Listing(
        tools=tools,
        prompts=prompts,
        resources=resources,
        resource_templates=templates,
        ttl_ms=ttl,
        task_support="optional" if decides else "forbidden",
    )


async def _list_all(connector: Connector, method: str, key: str, ttls: list[int]) -> tuple[Message, ...]:
    items: list[Message] = []
    cursor: str | None = None
    for _ in range(_MAX_LIST_PAGES):
        result = await connector.request(method, {"cursor": cursor} if cursor else None)
        ttl = result.get("ttlMs")
        if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl >= 0:
            ttls.append(ttl)
        page = result.get(key)
        if isinstance(page, list):
            items.extend(item for item in page if isinstance(item, dict))
        next_cursor = result.get("nextCursor")
        if not isinstance(next_cursor, str) or not next_cursor:
            break
        cursor = next_cursor
    return tuple(items)
