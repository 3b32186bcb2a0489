"""Which push endpoints this server sends to: the check of a subscription's URL and of the addresses its
host resolves to. No I/O: the sender resolves, this decides. Imports ``errors``.

A subscription's endpoint is a URL the browser got from its vendor's push service, but the server takes it
from a request body, so it must never become a way to make the server send requests into its own network.
An endpoint is accepted when it is an absolute ``https:`` URL of at most 2,048 printable ASCII characters,
with no user name or password and no fragment, whose host is a DNS name of at least two labels that does not
end in a name of the local network (:data:`LOCAL_SUFFIXES`). An IP address as host is accepted only when it
is public (:func:`public_address`). Hosts listed in ``NOTIFY_PUSH_INSECURE_HOSTS`` are the operator's own
choice: their endpoints may be ``http:`` too, and are sent to whatever address they name or resolve to.
Everything else is refused with 422 ``bad_endpoint``. When sending, every address the host resolves to must
be public too (:meth:`EndpointPolicy.addresses`), so a name that resolves into a private network is never
connected to.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from ..errors import BadEndpoint

MAX_ENDPOINT = 2048
# Names that only mean something on a local network (RFC 6761, RFC 6762, RFC 8375, ICANN's .internal, and the
# .lan of many home routers).
LOCAL_SUFFIXES = ("localhost", "local", "internal", "home.arpa", "lan")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def public_address(address: str) -> bool:
    """True for a globally reachable unicast IP address; False for loopback, private, link-local, shared,
    reserved, multicast and unspecified ones (an IPv4 address inside IPv6 is judged as IPv4)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        mapped = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if mapped is not None:
            ip = mapped
    return ip.is_global and not ip.is_multicast


def literal_address(host: str) -> str | None:
    """The IP address ``host`` names, in any form a resolver reads as one (``127.1``, ``2130706433`` and
    ``0x7f.0.0.1`` are all 127.0.0.1), or None when it is a name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return None
    return None


class EndpointPolicy:
    """``NOTIFY_PUSH_INSECURE_HOSTS`` and the rules above."""

    def __init__(self, insecure_hosts: Iterable[str] = ()) -> None:
        self.insecure_hosts = frozenset(insecure_hosts)

    def check(self, endpoint: str) -> str:
        """The endpoint's origin (``https://host[:port]``, the VAPID audience); :class:`BadEndpoint` when this
        server will not send to it."""
        if len(endpoint) > MAX_ENDPOINT or not _PRINTABLE.fullmatch(endpoint):
            raise BadEndpoint(f"an endpoint is a URL of at most {MAX_ENDPOINT} printable ASCII characters")
        if not endpoint.startswith(("https://", "http://")):
            raise BadEndpoint("the endpoint must be an https: URL")
        try:
            parts = urlsplit(endpoint)
            port = parts.port
        except ValueError:
            raise BadEndpoint("the endpoint is not a URL") from None
        host = (parts.hostname or "").rstrip(".")
        if parts.scheme not in ("https", "http") or not host or "[" in host or "]" in host:
            raise BadEndpoint("the endpoint must be an https: URL")
        if parts.username is not None or parts.password is not None or parts.fragment or "#" in endpoint:
            raise BadEndpoint("the endpoint may carry no user name, password or fragment")
        if port == 0:
            raise BadEndpoint("the endpoint's port must be 1-65535")
        if host not in self.insecure_hosts:
            if parts.scheme != "https":
                raise BadEndpoint(f"the endpoint must be an https: URL ({host} is not allowed plain http:)")
            self._check_host(host)
        netloc = f"[{host}]" if ":" in host else host
        if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
            netloc += f":{port}"
        return f"{parts.scheme}://{netloc}"

    def trusted(self, host: str) -> bool:
        """The operator listed this host: send to whatever address it has."""
        return host.lower().strip("[]").rstrip(".") in self.insecure_hosts

    def addresses(self, host: str, resolved: Iterable[str]) -> list[str]:
        """The addresses of ``host`` this server may connect to: all of them for a listed host, else all of
        them when every one is public, else none (a name that also points inside is not trusted at all)."""
        found = list(dict.fromkeys(resolved))
        if self.trusted(host):
            return found
        return found if found and all(public_address(a) for a in found) else []

    @staticmethod
    def _check_host(host: str) -> None:
        address = literal_address(host)
        if address is not None or ":" in host:
            if address is None or not public_address(address):
                raise BadEndpoint(f"the endpoint's host {host} is not a public address")
            return
        labels = host.split(".")
        if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
            raise BadEndpoint(f"the endpoint's host {host} is not a public DNS name")
        if any(host == suffix or host.endswith("." + suffix) for suffix in LOCAL_SUFFIXES):
            raise BadEndpoint(f"the endpoint's host {host} names the local network")
