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


def _any_encoding(text: str) -> str:
    """A regex for ``text`` however a URL may carry it: each character as itself or percent-encoded (in
    either case of letter and of hex digit, and encoded again any number of times: ``%253D``)."""
    parts = []
    for char in text:
        codes = sorted({f"{ord(char.lower()):02X}", f"{ord(char.upper()):02X}"})
        parts.append(f"(?:{re.escape(char)}|" + "|".join(f"%(?:25)*{code}" for code in codes) + ")")
    return "".join(parts)


# ``token=`` and ``access_token=`` in any encoding: ``token%3D``, ``%74oken=``, ``ToKeN%3d``, ...
_QUERY_TOKEN = re.compile(f"((?:{_any_encoding('access_')})?{_any_encoding('token=')})[^&\\s\"',]+", re.IGNORECASE)
# A JSON field, or a Python dict's repr as an exception may show it.
_JSON_TOKEN = re.compile(r"""(["'](?:access_)?token["']\s*:\s*["'])[^"']*""", re.IGNORECASE)
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
    arguments may be objects (websockets' frames) whose text appears only when formatted. An exception's
    text and traceback, and the stack information, are rendered here too and redacted: an exception may
    quote a URL, a header or a frame."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)  # what every formatter would print
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            return True
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FORMATTER = logging.Formatter()


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
