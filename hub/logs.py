"""The hub's log format: readable lines by default, one JSON object per line with ``MANIFOLD_LOG_FORMAT=json``.

A JSON line carries ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``event`` (the message),
and the ``request``, ``session``, ``tenant`` and ``upstream`` it is about when there are
(:mod:`connectors.log_context`), and ``error`` with the traceback of an exception. Bearer
credentials are masked in every line, whatever the format, should a message ever carry one.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from typing import Any, Final

from connectors.log_context import FIELDS

__all__ = ["JsonFormatter", "configure"]

_BEARER: Final = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{4,}")
_TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_UVICORN: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")


def _masked(text: str) -> str:
    return _BEARER.sub(r"\1***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _masked(record.getMessage()),
        }
        for name, variable in FIELDS:
            value = variable.get()
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["error"] = _masked(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class _MaskedFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _masked(super().format(record))


def configure(level: str, form: str) -> dict[str, Any]:
    """Set up the root logger; returns the log config uvicorn should use so its lines match."""
    formatter: logging.Formatter = JsonFormatter() if form == "json" else _MaskedFormatter(_TEXT)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream request is noise
    # uvicorn's loggers go through the root's handler (and so its format).
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
