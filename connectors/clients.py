"""The clients the connectors use, made in one place around one TLS context (and the process table).

Hot-path POSTs go through :class:`~connectors.http1.Http1Pool` (a tenth of
httpx's CPU per request, measured); GET streams, resumption, DELETE and the
legacy transport go through httpx. Both take the same TLS context: building
one loads the CA bundle, which cost start-up once per upstream before.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import httpx

from connectors.http1 import Http1Pool
from connectors.processes import Processes
from connectors.spec import UpstreamSpec
from connectors.stream_budget import StreamBudget

__all__ = ["HttpClients", "UpstreamClients"]


@dataclass
class UpstreamClients:
    """The clients of one upstream, shared by all its sessions; closed together."""

    http: httpx.AsyncClient
    posts: Http1Pool | None
    streams: StreamBudget
    processes: Processes
    """The pool's local processes (every upstream shares the one table)."""

    async def aclose(self) -> None:
        if self.posts is not None:
            self.posts.close()
        await self.http.aclose()


class HttpClients:
    """Makes every upstream's clients with one shared TLS context."""

    def __init__(self, processes: Processes | None = None) -> None:
        self._tls: ssl.SSLContext | None = None
        self.processes = processes or Processes()

    @property
    def tls(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def for_upstream(self, spec: UpstreamSpec) -> UpstreamClients:
        """The clients for ``spec``; the caller closes them with :meth:`UpstreamClients.aclose`."""
        idle = spec.max_concurrency + 4
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(spec.connect_timeout, read=None),
            # Streams are bounded by the budget, requests by the pool's caps; keep-alive by the cap.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=idle),
            trust_env=False,
            verify=self.tls,
        )
        posts = None
        if spec.transport == "streamable-http":
            posts = Http1Pool(spec.url, idle_limit=idle, connect_timeout=spec.connect_timeout, ssl_context=self.tls)
        return UpstreamClients(http=http, posts=posts, streams=StreamBudget(spec.max_streams), processes=self.processes)
