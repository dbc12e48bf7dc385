"""Process-wide logging set-up, called once per process from a node's ``__main__``."""

from __future__ import annotations

import json
import logging
import sys
import time

from pixelfox.config import LogSettings


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class ClientFaultFilter(logging.Filter):
    """Turns aiohttp's ``ERROR`` + traceback for a request it could not parse (a client's fault: a
    request line or header over its limit, a NUL in a header; aiohttp answers those with a 400) into
    one ``INFO`` line, so log-based alerts on ERROR see only our faults. Other records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _is_client_fault(exc):
            first = str(getattr(exc, "message", "") or exc).strip().splitlines()[0][:200]
            record.msg = f"{record.getMessage()}: malformed HTTP request ({type(exc).__name__}: {first})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _is_client_fault(exc: BaseException) -> bool:
    """aiohttp's parse errors with a 4xx code (``BadHttpMessage``, ``LineTooLong``, ...)."""
    try:
        from aiohttp.http_exceptions import HttpProcessingError
    except ImportError:  # a process without aiohttp has no such records
        return False
    return isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500


def configure(settings: LogSettings, node_id: str = "") -> None:
    """Log to stderr as text (default) or JSON lines (``PIXELFOX_LOG__FORMAT=json``); aiohttp's
    reports of unparseable requests are one INFO line each (:class:`ClientFaultFilter`)."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        prefix = f"{node_id} " if node_id else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientFaultFilter) for f in server.filters):
        server.addFilter(ClientFaultFilter())
