"""Opening an upstream session: ``initialize`` in the session era, ``server/discover`` in the stateless one.

With ``protocol: auto`` the engine tries ``initialize`` first: a server that
speaks both eras keeps every session-era feature (its tools may ask the
client mid-call on the session). An upstream that refuses it as a
2026-07-28-only server does (``-32022`` naming only stateless versions, or a
4xx) is asked ``server/discover`` and spoken to statelessly from then on.
The verdict holds for the life of the connection; a reconnect asks again.
"""

from __future__ import annotations

import logging

from connectors.eras import MODERN, modern_only
from connectors.errors import UpstreamError, UpstreamProtocolError
from connectors.jsonrpc import Message
from connectors.spec import CLIENT_INFO, LATEST_VERSION, SUPPORTED_VERSIONS, UpstreamSpec

__all__ = ["Handshake"]

logger = logging.getLogger(__name__)


class Handshake:
    """The engine's handshake, as a base of :class:`~connectors.engine.Connector`."""

    spec: UpstreamSpec
    protocol_version: str
    server_info: Message
    server_capabilities: Message
    instructions: str | None
    _capabilities: Message

    async def _call(self, method: str, params: Message | None, hooks: None, deadline: None) -> Message:
        raise NotImplementedError

    async def notify(self, method: str, params: Message | None = None) -> None:
        raise NotImplementedError

    @property
    def modern(self) -> bool:
        """Whether the upstream is spoken to in the stateless era."""
        return self.protocol_version == MODERN

    async def _handshake(self) -> None:
        if self.spec.protocol != MODERN:
            try:
                await self._initialize()
                return
            except UpstreamError as exc:
                if self.spec.protocol == "session" or not modern_only(exc):
                    raise
                logger.info("upstream %s refused initialize (%s); speaking %s", self.spec.name, exc.message, MODERN)
        await self._discover()

    async def _discover(self) -> None:
        self.protocol_version = MODERN  # from here on every request carries the envelope
        try:
            result = await self._call("server/discover", {}, None, None)
            if MODERN not in (result.get("supportedVersions") or ()):
                raise UpstreamProtocolError(self.spec.name, f"server/discover does not offer {MODERN}")
        except BaseException:
            self.protocol_version = ""
            raise
        meta = result.get("_meta")
        info = meta.get("io.modelcontextprotocol/serverInfo") if isinstance(meta, dict) else None
        self._adopt(info, result.get("capabilities"), result.get("instructions"))

    def _adopt(self, info: object, capabilities: object, instructions: object) -> None:
        self.server_info = info if isinstance(info, dict) else {}
        self.server_capabilities = capabilities if isinstance(capabilities, dict) else {}
        self.instructions = instructions if isinstance(instructions, str) else None

    async def _initialize(self) -> None:
        result = await self._call(
            "initialize",
            {"protocolVersion": LATEST_VERSION, "capabilities": self._capabilities, "clientInfo": CLIENT_INFO},
            None,
            None,
        )
        version = result.get("protocolVersion")
        if version not in SUPPORTED_VERSIONS:
            raise UpstreamProtocolError(self.spec.name, f"unsupported protocol version {version!r}")
        self.protocol_version = str(version)
        self._adopt(result.get("serverInfo"), result.get("capabilities"), result.get("instructions"))
        await self.notify("notifications/initialized")
