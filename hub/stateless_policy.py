"""How the hub answers stateless (2026-07-28) clients where the answer depends on the upstreams:
how long a list may be cached, whether a shared cache may keep it, how many calls may wait for input,
whether a principal's calls may spread over several upstream sessions."""

from __future__ import annotations

from collections.abc import Callable

from connectors.pool import ConnectorPool
from connectors.spec import MODERN_VERSIONS
from connectors.status import UpstreamState
from hub.catalog import ListKind
from hub.config import Config
from hub.views import CatalogView

__all__ = ["StatelessPolicy"]


class StatelessPolicy:
    """Reads the config served now and the pool's upstreams."""

    def __init__(self, config: Callable[[], Config], pool: ConnectorPool) -> None:
        self.config = config
        self.pool = pool

    def list_ttl_ms(self, view: CatalogView, kind: ListKind) -> int:
        """How long a stateless client may cache a list: the hub's ``listTtl`` when every upstream behind
        the view announces changes of that list (and the hub passes them on), else 0."""
        capability = "resources" if kind == "resourceTemplates" else kind
        ttl = int(self.config().hub.list_ttl * 1000)
        names = self.config().enabled()
        for name in names:
            if view.rule.upstreams is not None and name not in view.rule.upstreams:
                continue
            upstream = self.pool.upstream(name)
            declared = upstream.status.capabilities.get(capability) if upstream is not None else None
            if upstream is None or upstream.status.state is not UpstreamState.UP:
                return 0  # it may come back with other items at any moment
            if isinstance(declared, dict) and not declared.get("listChanged"):
                return 0
            if upstream.listing is not None and upstream.listing.ttl_ms is not None:
                ttl = min(ttl, upstream.listing.ttl_ms)  # never fresher than its own word
        return ttl

    def parked_cap(self, name: str) -> int:
        """Stateless calls that may wait for input on one upstream: a quarter of its ``maxConcurrency``."""
        upstream = self.pool.upstream(name)
        return max(1, (upstream.spec.max_concurrency if upstream is not None else 4) // 4)

    def spreads(self, name: str) -> bool:
        """Whether one principal's concurrent calls to upstream ``name`` may go over several upstream
        sessions of its own: a Streamable HTTP upstream of isolated sessions in the session era (a
        local upstream's session is a process, a legacy one's a stream, a shared one is one for
        all, and a 2026-07-28 one has none)."""
        upstream = self.pool.upstream(name)
        if upstream is None:
            return False
        spec, era = upstream.spec, upstream.status.protocol
        return spec.transport == "streamable-http" and not spec.shared and era not in MODERN_VERSIONS

    def public(self, view: CatalogView) -> bool:
        """Whether a view's lists are the same for anyone, so a shared cache may keep them."""
        return not self.config().auth_enabled and view.rule.everything and not self.config().tenants
