"""What travels from publishers to every node's hub: six typed messages, and their one encoding between
nodes (``encode`` / ``decode``). Imports nothing of ours.

The hub acts on each by type: a ``Push`` is a stored notification's frame (ordered by ``seq``, and a
gap before it is filled from the store), a ``Frame`` any other frame for every tab of a user, ``Preferred``
a user's new preferences (every node notes them, every tab gets them), a
``CatchUp`` asks each tab to fill from the store up to ``seq``, ``CloseUser`` closes every tab of the
user, and ``Revoked`` also refuses the user's tokens issued before ``before`` from now on.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Push:
    user_id: str
    seq: int
    created: float  # epoch seconds of created_at, for the push latency figure
    frame: str


@dataclass(frozen=True, slots=True)
class Frame:
    user_id: str
    frame: str


@dataclass(frozen=True, slots=True)
class Preferred:
    user_id: str
    preferences: dict  # the user's new preferences, as the API shows them; every tab gets the frame


@dataclass(frozen=True, slots=True)
class CatchUp:
    user_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class CloseUser:
    user_id: str
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Revoked:
    user_id: str
    before: float  # epoch seconds: tokens issued earlier are refused; every tab closes 4401


Message = Push | Frame | Preferred | CatchUp | CloseUser | Revoked

# The encoding between nodes: {"n": sender node, "m": [[tag, *fields], ...]}, fields in declaration order.
_TAGS: dict[type, str] = {Push: "p", Frame: "f", Preferred: "s", CatchUp: "c", CloseUser: "x", Revoked: "r"}
_TYPES = {tag: kind for kind, tag in _TAGS.items()}
_FIELDS = {kind: kind.__slots__ for kind in _TAGS}


def encode(node_id: str, messages: list[Message]) -> bytes:
    return orjson.dumps({"n": node_id, "m": [
        [_TAGS[type(m)], *(getattr(m, name) for name in _FIELDS[type(m)])] for m in messages
    ]})


def decode(data: bytes) -> tuple[str, list[Message]]:
    """``(sender node, messages)``; raises ``ValueError`` on anything malformed."""
    try:
        body = orjson.loads(data)
        return body["n"], [_TYPES[item[0]](*item[1:]) for item in body["m"]]
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"malformed broker message: {type(exc).__name__}") from None
