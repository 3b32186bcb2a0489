"""The HTTP side of Web Push: one connection pool (``httpcore``, HTTP/1.1, TLS verified) whose every
connection goes only to an address :class:`EndpointPolicy` allows. The host is resolved here, the addresses
checked, and the connection made to a checked address (TLS still names the host), so a name that resolves
into a private network, or changes its answer between the subscription's check and the push, is never
reached. Imports ``push.endpoints``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import httpcore
import httpx

from .endpoints import EndpointPolicy


class RefusedAddress(httpcore.ConnectError):
    """The endpoint's host resolves to an address this server does not send to."""


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: EndpointPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        host = host.strip("[]")
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve the endpoint's host: {exc}") from None
        addresses = self._policy.addresses(host, [str(info[4][0]) for info in infos])
        if not addresses:
            raise RefusedAddress(f"{host} resolves to an address that is not public")
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("push endpoints are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: str | None


class Sender:
    """POSTs encrypted pushes; :meth:`post` raises ``httpcore`` errors (:class:`RefusedAddress` among them)."""

    def __init__(self, policy: EndpointPolicy, *, timeout_s: float, max_connections: int) -> None:
        self._timeout = {"connect": min(timeout_s, 5.0), "read": timeout_s, "write": timeout_s, "pool": timeout_s}
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=max_connections, keepalive_expiry=30.0,
            network_backend=_GuardedBackend(policy))

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        async with self._pool.stream("POST", url, headers={**headers, "Content-Length": str(len(body))},
                                     content=body, extensions={"timeout": self._timeout}) as response:
            read = 0
            async for chunk in response.aiter_stream():  # a push service's answer is small; stop at 64 KiB
                read += len(chunk)
                if read > 65536:
                    break
        retry_after = next((value.decode("latin-1") for name, value in response.headers
                            if name.lower() == b"retry-after"), None)
        return Answer(response.status, retry_after)

    async def close(self) -> None:
        await self._pool.aclose()
