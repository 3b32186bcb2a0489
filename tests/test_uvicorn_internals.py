"""``server.py`` builds on private uvicorn code (its sans-I/O WebSocket protocol, the httptools protocol it
hands accepted connections to, the proxy allow-list, the server's shutdown). pyproject.toml bounds uvicorn
to the versions this was written against; these tests fail loudly, naming what moved, when an upgrade
changes any of it, so the override is re-read against the new code before the bound is raised."""

from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import version

import pytest
import uvicorn
from uvicorn.middleware.proxy_headers import _TrustedHosts
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from namaskah_notify.server import ConnectionGate, NotifyServer, WebSocketProtocol

# The first 16 hex digits of sha256 over the source of each uvicorn function we override or call into,
# as of uvicorn 0.54.0.
OVERRIDDEN = {
    "__init__": "631dcd744eab875f",
    "connection_made": "f533ec93747c2cbf",
    "data_received": "c89d394077d8841d",
    "handle_connect": "fc648c2161ff8e13",
    "send_receive_event_to_app": "a2b10de91477dc1d",
    "handle_parser_exception": "ff5cf13c764fb332",
    "send": "d4919ed760ce9f7b",
}
USED = {
    "HttpToolsProtocol.__init__": (HttpToolsProtocol.__init__, "4f08999410347141"),
    "_TrustedHosts": (_TrustedHosts, "3debe2af4a662daf"),
    "Server.shutdown": (uvicorn.Server.shutdown, "9b33c50562992b1e"),
    # The lingering close relies on run_asgi leaving the socket to a set close_timer.
    "WebSocketsSansIOProtocol.run_asgi": (WebSocketsSansIOProtocol.run_asgi, "662375aa38d9044c"),
}


def _digest(obj: object) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def _moved(name: str) -> str:
    return (f"uvicorn {version('uvicorn')} changed {name}, which namaskah_notify/server.py overrides or calls: "
            "re-read the override against the new code, then update the digest here and the bound in pyproject.toml")


def test_every_override_is_recorded():
    """Each method ``server.WebSocketProtocol`` overrides has a recorded digest (a new override needs one);
    ``send_text_now``, its own, reads the state that uvicorn's ``send`` reads, so that digest covers it."""
    overrides = {name for name, value in vars(WebSocketProtocol).items()
                 if callable(value) and hasattr(WebSocketsSansIOProtocol, name)}
    assert overrides == set(OVERRIDDEN), f"record the uvicorn source digest of {overrides ^ set(OVERRIDDEN)}"


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_overridden_websocket_methods_are_unchanged(name):
    """The uvicorn WebSocket protocol method behind each override is the code it was written against."""
    assert _digest(getattr(WebSocketsSansIOProtocol, name)) == OVERRIDDEN[name], _moved(
        f"WebSocketsSansIOProtocol.{name}")


@pytest.mark.parametrize("name", sorted(USED))
def test_private_uvicorn_code_we_call_is_unchanged(name):
    """The private uvicorn code the connection gate and the shutdown call into is unchanged."""
    obj, digest = USED[name]
    assert _digest(obj) == digest, _moved(name)


def test_overrides_still_subclass_uvicorn():
    """The classes still extend the uvicorn classes whose internals they use."""
    assert issubclass(WebSocketProtocol, WebSocketsSansIOProtocol)
    assert issubclass(NotifyServer, uvicorn.Server)
    assert ConnectionGate.__init__.__module__ == "namaskah_notify.server"
