"""Logging: what each level says, and the filter that keeps tokens out of every line.

INFO: one line per WebSocket connect and disconnect (user, close code, counts) and per publish (user,
seq, type, title); uvicorn's handshake and access lines. WARNING: closes forced by the server (full
send queue, rate limit, expired token) and refused connections. ERROR: a failed broker publish or an
unexpected exception, with its traceback. SMS codes are never logged; tokens are redacted from every
record, including uvicorn's, which print the query string of each WebSocket handshake.
Imports nothing of ours.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_QUERY_TOKEN = re.compile(r"((?:access_)?token=)[^&\s\"',]+", re.IGNORECASE)
_JSON_TOKEN = re.compile(r'("(?:access_)?token"\s*:\s*")[^"]*', re.IGNORECASE)
# uvicorn's debug lines shorten long frames with "...", which breaks a JWT's three parts apart.
_ELIDED_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.\.\.[A-Za-z0-9_.-]*")
# A token's dots may come percent-encoded (``%2E``) in a query string, which uvicorn logs as it was sent.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}(?:\.|%2[Ee])[A-Za-z0-9_-]{2,}(?:\.|%2[Ee])[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


def redact(text: str) -> str:
    text = _QUERY_TOKEN.sub(r"\1[redacted]", text)
    text = _JSON_TOKEN.sub(r"\1[redacted]", text)
    text = _ELIDED_JWT.sub("[redacted-jwt]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    return _JWT.sub("[redacted-jwt]", text)


class RedactTokens(logging.Filter):
    """Removes tokens from every record, attached to every handler. Access records keep their
    arguments (uvicorn's access formatter unpacks them); others are rendered, then redacted, since their
    arguments may be objects (websockets' frames) whose text appears only when formatted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            return True
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def logging_config(level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn's ``log_config`` and for the CLI."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactTokens}},
        "formatters": {
            "default": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(asctime)s %(levelname)-7s access: %(client_addr)s "%(request_line)s" %(status_code)s',
                "use_colors": False,
            },
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["redact"],
                        "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "access", "filters": ["redact"],
                       "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
            "namaskah_notify": {"handlers": ["default"], "level": level, "propagate": False},
        },
    }
