"""Reloading the config while the hub serves: on SIGHUP, on a change of the file, or when asked.

A reload reads and validates the whole file; a file with problems is refused (each problem
logged and reported with its JSON path) and the hub keeps serving the config it has. A
valid one is applied without dropping sessions (:meth:`hub.runtime.Hub.apply`): upstreams
added, removed (their calls finish within ``hub.drainTimeout``) and changed (reconnected);
tenants, keys and limits at once; sessions whose view changed get ``list_changed``.
Settings that only a restart can apply (where the hub listens, its storage, and what the hub
reads only when it starts: :data:`hub.live_settings.START_ONLY`) are reported and left as they
are. A file that would leave the hub listening beyond loopback with no authentication is refused,
as it is at start. Reloads never overlap. The file is watched by polling its metadata (size,
mtime, inode) every ``hub.reload.interval`` seconds, and a change is applied once the file has
stayed the same for ``hub.reload.debounce`` seconds, so an editor's several writes make one
reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic.alias_generators import to_camel

from connectors.spec import UpstreamSpec
from hub.config import Config, config_from_bytes, exposure_problem
from hub.errors import ConfigError
from hub.live_settings import START_ONLY
from hub.schema import HubSettings

__all__ = ["ReloadOutcome", "Reloadable", "Reloader", "config_digest"]

logger = logging.getLogger(__name__)

# Where the hub listens, keeps its data, and how its sockets take requests (set when they open).
_RESTART_ONLY = (
    "host",
    "port",
    "storage",
    "redis",
    "replica",
    "workspaces",
    "max_header_bytes",
    "max_headers",
    "keep_alive_timeout",
)


@dataclass
class ReloadOutcome:
    ok: bool
    source: str
    problems: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "source": self.source,
            "problems": self.problems,
            "upstreams": {"added": self.added, "removed": self.removed, "changed": self.changed},
            "restartNeeded": self.restart_needed,
        }


def config_digest(config: Config) -> str:
    """A digest of what replicas share of a config: all but where one listens and keeps its data."""
    shared = config.model_dump(mode="json", exclude={"hub": set(_RESTART_ONLY)})
    return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class Reloadable(Protocol):
    """What a reload needs of the hub."""

    @property
    def config(self) -> Config: ...

    def upstream_specs(self) -> list[UpstreamSpec]: ...

    async def apply(self, config: Config) -> None: ...


class Reloader:
    """Reloads one hub from its config file; an async context manager that watches the file."""

    def __init__(self, hub: Reloadable, path: Path | None) -> None:
        self.hub = hub
        self.path = path
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[ReloadOutcome]] = set()
        self.reloads = 0
        self.last: ReloadOutcome | None = None
        self.digest = config_digest(hub.config)
        """The digest of the config served, but for where this process listens and keeps its data."""
        self._document = self.digest
        """The digest of the last document applied as it was written (the served config keeps the
        running values of settings only a restart changes, so it can differ)."""
        self.on_reloaded: Callable[[bytes, str], None] | None = None
        """Told of each document this reloader applied from its file (its bytes and digest), for other replicas."""
        self.listening: str | None = None
        """The address the hub listens on, when it is not ``hub.host`` (told by whoever started it)."""

    async def __aenter__(self) -> Reloader:
        settings = self.hub.config.hub.reload
        if self.path is not None and settings.watch:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="config-watcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def request(self, source: str) -> None:
        """Reload soon, in a task of this reloader (for a signal handler)."""
        task = asyncio.get_running_loop().create_task(self.reload(source))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def reload(self, source: str) -> ReloadOutcome:
        async with self._lock:
            outcome = await self._reload(source)
        self.last = outcome
        return outcome

    async def adopt(self, data: bytes, source: str) -> ReloadOutcome:
        """Apply a config document another replica applied (unless it is the one served already)."""
        async with self._lock:
            outcome = await self._apply(data, source, unless=self._document)
        self.last = outcome
        return outcome

    async def _reload(self, source: str) -> ReloadOutcome:
        if self.path is None:
            return ReloadOutcome(False, source, ["$: the hub was not started from a config file"])
        try:
            data = await asyncio.to_thread(self.path.read_bytes)
        except OSError as exc:
            problem = f"$: cannot read {self.path}: {exc.strerror or exc}"
            logger.error("reload (%s) refused, the hub keeps its config: %s", source, problem)
            return ReloadOutcome(False, source, [problem])
        outcome = await self._apply(data, source)
        if outcome.ok and self.on_reloaded is not None:
            self.on_reloaded(data, self.digest)
        return outcome

    async def _apply(self, data: bytes, source: str, unless: str | None = None) -> ReloadOutcome:
        try:
            config = config_from_bytes(data, self.path or Path.cwd() / "config.json")
            document = config_digest(config)
            if unless is not None and document == unless:
                return ReloadOutcome(True, source)  # the config served already
        except ConfigError as exc:
            for problem in exc.problems:
                logger.error("reload (%s) refused, the hub keeps its config: %s", source, problem)
            return ReloadOutcome(False, source, list(exc.problems))
        old_hub, new_hub = self.hub.config.hub, config.hub
        restart = [name for name in (*_RESTART_ONLY, *START_ONLY) if _get(old_hub, name) != _get(new_hub, name)]
        if restart:
            # Applied without them: they keep their running values until a restart.
            config = config.model_copy(update={"hub": _kept(new_hub, old_hub, restart)})
        exposed = exposure_problem(config, self.listening or old_hub.host)
        if exposed is not None:
            problem = f"$.auth: {exposed}"
            logger.error("reload (%s) refused, the hub keeps its config: %s", source, problem)
            return ReloadOutcome(False, source, [problem])
        if restart:
            if unless is not None:
                # Another replica's document: where it listens and keeps its data are its own, not news.
                restart = [name for name in restart if name not in _RESTART_ONLY]
            if restart:
                names = ", ".join(_key(n) for n in restart)
                logger.warning("reload (%s): %s change only with a restart", source, names)
        old = {spec.name: spec for spec in self.hub.upstream_specs()}
        new = {spec.name: spec for spec in config.upstream_specs()}
        await self.hub.apply(config)
        self.digest, self._document = config_digest(config), document
        self.reloads += 1
        outcome = ReloadOutcome(
            True,
            source,
            added=sorted(set(new) - set(old)),
            removed=sorted(set(old) - set(new)),
            changed=sorted(name for name in set(old) & set(new) if old[name] != new[name]),
            restart_needed=[_key(name) for name in restart],
        )
        logger.info(
            "reloaded (%s): upstreams added %s, removed %s, changed %s",
            source, outcome.added or "-", outcome.removed or "-", outcome.changed or "-",
        )  # fmt: skip
        return outcome

    async def _watch(self) -> None:
        assert self.path is not None
        seen = _stamp(self.path)
        while True:
            await asyncio.sleep(self.hub.config.hub.reload.interval)  # (as the config served says now)
            now = _stamp(self.path)
            if now == seen or now is None:
                continue
            # Changed: wait until it stays the same for the debounce time (an editor writes in steps).
            while True:
                await asyncio.sleep(self.hub.config.hub.reload.debounce)
                settled = _stamp(self.path)
                if settled == now:
                    break
                now = settled
            seen = now
            await self.reload("file")


def _get(settings: HubSettings, name: str) -> Any:
    """A setting of ``hub`` by its dotted name (``events.max_age``)."""
    value: Any = settings
    for part in name.split("."):
        value = getattr(value, part)
    return value


def _kept(new: HubSettings, old: HubSettings, names: list[str]) -> HubSettings:
    """``new`` with the settings ``names`` (dotted: inside a nested one) at their values in ``old``."""
    top: dict[str, Any] = {}
    for name in names:
        head, _, inner = name.partition(".")
        if not inner:
            top[head] = getattr(old, head)
        else:
            nested = top.get(head, getattr(new, head))
            top[head] = nested.model_copy(update={inner: getattr(getattr(old, head), inner)})
    return new.model_copy(update=top)


def _key(name: str) -> str:
    """A setting of ``hub`` as the config document spells it."""
    return "hub." + ".".join(to_camel(part) for part in name.split("."))
