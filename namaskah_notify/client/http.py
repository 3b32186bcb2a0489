"""The HTTP API as method calls: :class:`AsyncNotifyClient` and its synchronous twin :class:`NotifyClient`.

Each method describes its request as a :class:`Call` (method, path, body, how to read the answer); the two
clients only differ in how they send it. Both retry 429, 503 and connection failures (see
:class:`~namaskah_notify.client.RetryPolicy`) and turn error answers into the exceptions of ``errors``.
Every publish carries one ``Idempotency-Key`` (a fresh UUID unless given), the same on each of its
retries, so that a server that honours the header stores a retried publish once (``sms_inbound`` with a
``message_id`` is stored once by any server). Imports ``errors`` and ``_retry``; ``httpx``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from ._retry import RETRYABLE_ERRORS, RetryPolicy
from .errors import ConnectionFailed, NotifyClientError, from_answer

T = TypeVar("T")
Item = dict[str, Any]
Items = list[Item]  # an alias: the clients' method ``list`` would shadow the builtin in their annotations


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _object(response: httpx.Response) -> Item:
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object from {response.request.url.path}")
    return body


def _items(response: httpx.Response) -> Items:
    return list(_object(response)["items"])


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API request, independent of how it is sent; ``read`` turns a success answer into the result."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    read: Callable[[httpx.Response], T] = field(default=_json)

    def headers(self) -> dict[str, str]:
        return {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else {}

    def result(self, response: httpx.Response) -> T:
        if response.status_code >= 400:
            raise from_answer(response.status_code, _json(response))
        return self.read(response)


def base_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` from an HTTP or WebSocket URL of the service."""
    url = url.strip().rstrip("/")
    for suffix in ("/ws/notifications", "/ws/stats"):
        url = url.removesuffix(suffix)
    if url.startswith("ws://"):
        return "http://" + url[5:]
    if url.startswith("wss://"):
        return "https://" + url[6:]
    return url


def _key(given: str | None) -> str:
    return given or str(uuid.uuid4())


def _publish_body(audience: dict[str, Any], title: str, message: str, type: str | None, link: str | None,
                  meta: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {**audience, "title": title, "message": message, **fields}
    if type is not None:
        body["type"] = type
    if link is not None:
        body["link"] = link
    if meta is not None:
        body["meta"] = dict(meta)
    return body


# -- the calls, once for both clients ---------------------------------------------------------------------
def publish_call(user_id: str, title: str, message: str, type: str | None, link: str | None,
                 meta: Mapping[str, Any] | None, key: str | None, fields: Mapping[str, Any]) -> Call[Item]:
    body = _publish_body({"user_id": user_id}, title, message, type, link, meta, fields)
    return Call("POST", "/api/notifications", body, idempotency_key=_key(key), read=_object)


def publish_many_call(user_ids: list[str], title: str, message: str, type: str | None, link: str | None,
                      meta: Mapping[str, Any] | None, key: str | None, fields: Mapping[str, Any]) -> Call[Items]:
    body = _publish_body({"user_ids": list(user_ids)}, title, message, type, link, meta, fields)
    return Call("POST", "/api/notifications", body, idempotency_key=_key(key), read=_items)


def broadcast_call(title: str, message: str, type: str | None, link: str | None, meta: Mapping[str, Any] | None,
                   key: str | None, fields: Mapping[str, Any]) -> Call[int]:
    body = _publish_body({"broadcast": True}, title, message, type, link, meta, fields)
    return Call("POST", "/api/notifications", body, idempotency_key=_key(key), read=lambda r: int(r.json()["count"]))


def sms_inbound_call(user_id: str, verification_id: str, service: str, code: str, message_id: str | None,
                     key: str | None) -> Call[Item]:
    body = {"user_id": user_id, "verification_id": verification_id, "service": service, "code": code}
    if message_id is not None:
        body["message_id"] = message_id
    return Call("POST", "/api/sms/inbound", body, idempotency_key=_key(key), read=_object)


def list_call(limit: int, before_seq: int | None, since_seq: int | None) -> Call[Item]:
    params: dict[str, Any] = {"limit": limit}
    if before_seq is not None:
        params["before_seq"] = before_seq
    if since_seq is not None:
        params["since_seq"] = since_seq
    return Call("GET", "/api/notifications", params=params, read=_object)


UNREAD_COUNT: Call[int] = Call("GET", "/api/notifications/unread-count", read=lambda r: int(r.json()["unread_count"]))
READ_ALL: Call[int] = Call("POST", "/api/notifications/read-all", read=lambda r: int(r.json()["unread_count"]))
STATS: Call[Item] = Call("GET", "/ws/stats", read=_object)
METRICS: Call[str] = Call("GET", "/metrics", read=lambda r: r.text)


def mark_read_call(notification_id: str) -> Call[Item]:
    return Call("POST", f"/api/notifications/{_segment(notification_id)}/read", read=_object)


def mark_read_many_call(notification_ids: list[str]) -> Call[Item]:
    return Call("POST", "/api/notifications/read", {"ids": list(notification_ids)}, read=_object)


def mark_unread_call(notification_id: str) -> Call[Item]:
    return Call("POST", f"/api/notifications/{_segment(notification_id)}/unread", read=_object)


def delete_all_call(read_only: bool) -> Call[Item]:
    return Call("DELETE", "/api/notifications", params={"read": "true"} if read_only else None, read=_object)


def erase_user_call(user_id: str) -> Call[dict[str, int]]:
    return Call("DELETE", f"/api/admin/users/{_segment(user_id)}",
                read=lambda r: {table: int(rows) for table, rows in _object(r)["deleted"].items()})


def delete_call(notification_id: str) -> Call[None]:
    return Call("DELETE", f"/api/notifications/{_segment(notification_id)}", read=lambda _r: None)


def preferences_call() -> Call[Item]:
    return Call("GET", "/api/preferences", read=_object)


def set_preferences_call(muted_types: list[str], sound: bool, desktop: bool,
                         quiet_hours: Mapping[str, str] | None) -> Call[Item]:
    body = {"muted_types": list(muted_types), "sound": sound, "desktop": desktop,
            "quiet_hours": dict(quiet_hours) if quiet_hours else None}
    return Call("PUT", "/api/preferences", body, read=_object)


def presence_call(user_ids: list[str]) -> Call[Item]:
    return Call("GET", "/api/presence", params=[("user_id", user) for user in user_ids],  # type: ignore[arg-type]
                read=lambda r: _object(r)["users"])


def _segment(value: str) -> str:
    """One path segment: ids are the server's (letters and digits), but a caller's typo must not become
    another path."""
    return quote(value, safe="")


class _Client:
    """What both clients share: the base URL, the token, the retry policy."""

    def __init__(self, url: str, token: str | None, retry: RetryPolicy | None) -> None:
        self.base_url = base_url(url)
        self.retry = retry or RetryPolicy()
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}

    def _failed(self, call: Call[Any], exc: Exception, attempts: int) -> NotifyClientError:
        what = "refused" if isinstance(exc, httpx.ConnectError) else (str(exc) or type(exc).__name__)
        return ConnectionFailed(f"{call.method} {self.base_url}{call.path}: {what} (after {attempts} attempts)")


class AsyncNotifyClient(_Client):
    """The service's HTTP API for asyncio code; ``async with`` closes its connection pool.

    ``token`` is a publisher's (admin) token for the publishing calls, a user's for the others;
    ``transport`` is httpx's (a proxy, a local address, a test transport); so is ``auth``
    (``WebhookSigner(secret)`` signs each call, for a webhook without a token).
    """

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 10.0,
                 retry: RetryPolicy | None = None, headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, auth: httpx.Auth | None = None) -> None:
        super().__init__(base_url, token, retry)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport,
                                       headers={**self._auth, **(headers or {})}, auth=auth)

    async def __aenter__(self) -> AsyncNotifyClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the policy says; its result, or the error answer as an exception."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.json, params=call.params,
                                                    headers=call.headers())
            except RETRYABLE_ERRORS as exc:
                delay = self.retry.delay(attempt)
                if delay is None:
                    raise self._failed(call, exc, attempt + 1) from exc
            else:
                delay = self.retry.delay(attempt, response.status_code, response.headers.get("retry-after"))
                if delay is None:
                    return call.result(response)
            await asyncio.sleep(delay)
            attempt += 1

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: Mapping[str, Any] | None = None) -> Any:
        """Any other route (verifications, admin), with the same retries and errors; the answer's JSON."""
        return await self.call(Call(method, path, json, params))

    async def publish(self, user_id: str, title: str, message: str = "", *, type: str | None = None,
                      link: str | None = None, meta: Mapping[str, Any] | None = None,
                      idempotency_key: str | None = None, **fields: Any) -> Item:
        """Store and push one notification to ``user_id``; the stored notification (``id``, ``seq``, ...)."""
        return await self.call(publish_call(user_id, title, message, type, link, meta, idempotency_key, fields))

    async def publish_many(self, user_ids: list[str], title: str, message: str = "", *, type: str | None = None,
                           link: str | None = None, meta: Mapping[str, Any] | None = None,
                           idempotency_key: str | None = None, **fields: Any) -> Items:
        """The same notification to each user (up to 1,000), each with its own ``seq``; the stored ones."""
        return await self.call(publish_many_call(user_ids, title, message, type, link, meta, idempotency_key, fields))

    async def broadcast(self, title: str, message: str = "", *, type: str | None = None, link: str | None = None,
                        meta: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
                        **fields: Any) -> int:
        """To every user the service knows (``audience="connected"``: those connected now); how many it was
        stored for."""
        return await self.call(broadcast_call(title, message, type, link, meta, idempotency_key, fields))

    async def sms_inbound(self, user_id: str, verification_id: str, service: str, code: str,
                          message_id: str | None = None, *, idempotency_key: str | None = None) -> Item:
        """A provider's SMS webhook; a repeated ``message_id`` answers the first notification, stored once."""
        return await self.call(sms_inbound_call(user_id, verification_id, service, code, message_id,
                                                idempotency_key))

    async def unread_count(self) -> int:
        return await self.call(UNREAD_COUNT)

    async def mark_read(self, notification_id: str) -> Item:
        """The notification, now read; every tab of the user gets a ``read`` event."""
        return await self.call(mark_read_call(notification_id))

    async def read_all(self) -> int:
        """Mark every notification read; the unread count after it (0)."""
        return await self.call(READ_ALL)

    async def delete(self, notification_id: str) -> None:
        """``DELETE /api/notifications/{id}``, on servers that have it (contract section 6); a server
        without that route, or a notification that is not the caller's, raises :class:`NotFound`."""
        await self.call(delete_call(notification_id))

    async def mark_read_many(self, notification_ids: list[str]) -> Item:
        """Mark several read (up to 1,000; others' ids are left alone): ``{"notification_ids"`` (those that
        changed), ``"unread_count"}``; every tab gets one ``read`` event."""
        return await self.call(mark_read_many_call(notification_ids))

    async def mark_unread(self, notification_id: str) -> Item:
        """The notification, unread again; every tab gets an ``unread`` event."""
        return await self.call(mark_unread_call(notification_id))

    async def delete_all(self, *, read_only: bool = False) -> Item:
        """Delete all of the caller's notifications (``read_only``: the read ones): ``{"deleted",
        "unread_count"}``; every tab gets a ``deleted`` event."""
        return await self.call(delete_all_call(read_only))

    async def erase_user(self, user_id: str) -> dict[str, int]:
        """Admin: erase everything stored for ``user_id`` and close their connections; rows per table."""
        return await self.call(erase_user_call(user_id))

    async def preferences(self) -> Item:
        """The caller's preferences: ``muted_types``, ``sound``, ``desktop``, ``quiet_hours``."""
        return await self.call(preferences_call())

    async def set_preferences(self, *, muted_types: Sequence[str] = (), sound: bool = True,
                              desktop: bool = True, quiet_hours: Mapping[str, str] | None = None) -> Item:
        """Replace the caller's preferences (every tab of theirs hears); what was stored."""
        return await self.call(set_preferences_call(list(muted_types), sound, desktop, quiet_hours))

    async def presence(self, *user_ids: str) -> Item:
        """``{user: {"online", "connections", "last_seen"}}`` across the cluster (admin, or a user for itself)."""
        return await self.call(presence_call(list(user_ids)))

    async def stats(self) -> Item:
        """``GET /ws/stats``: connections, users, counters, rates, latency, nodes."""
        return await self.call(STATS)

    async def metrics(self) -> str:
        """``GET /metrics`` in the Prometheus text format."""
        return await self.call(METRICS)

    async def list(self, *, limit: int = 50, before_seq: int | None = None, since_seq: int | None = None) -> Item:
        """A page ``{"items", "unread_count", "last_seq", "has_more"}``: newest first, or oldest first
        after ``since_seq`` (the way to catch up)."""
        return await self.call(list_call(limit, before_seq, since_seq))


class NotifyClient(_Client):
    """The synchronous twin of :class:`AsyncNotifyClient`: the same methods, blocking; ``with`` closes it."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 10.0,
                 retry: RetryPolicy | None = None, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None, auth: httpx.Auth | None = None) -> None:
        super().__init__(base_url, token, retry)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  headers={**self._auth, **(headers or {})}, auth=auth)

    def __enter__(self) -> NotifyClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the policy says; its result, or the error answer as an exception."""
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.json, params=call.params,
                                              headers=call.headers())
            except RETRYABLE_ERRORS as exc:
                delay = self.retry.delay(attempt)
                if delay is None:
                    raise self._failed(call, exc, attempt + 1) from exc
            else:
                delay = self.retry.delay(attempt, response.status_code, response.headers.get("retry-after"))
                if delay is None:
                    return call.result(response)
            time.sleep(delay)
            attempt += 1

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """Any other route (verifications, admin), with the same retries and errors; the answer's JSON."""
        return self.call(Call(method, path, json, params))

    def publish(self, user_id: str, title: str, message: str = "", *, type: str | None = None,
                link: str | None = None, meta: Mapping[str, Any] | None = None,
                idempotency_key: str | None = None, **fields: Any) -> Item:
        """Store and push one notification to ``user_id``; the stored notification (``id``, ``seq``, ...)."""
        return self.call(publish_call(user_id, title, message, type, link, meta, idempotency_key, fields))

    def publish_many(self, user_ids: list[str], title: str, message: str = "", *, type: str | None = None,
                     link: str | None = None, meta: Mapping[str, Any] | None = None,
                     idempotency_key: str | None = None, **fields: Any) -> Items:
        """The same notification to each user (up to 1,000), each with its own ``seq``; the stored ones."""
        return self.call(publish_many_call(user_ids, title, message, type, link, meta, idempotency_key, fields))

    def broadcast(self, title: str, message: str = "", *, type: str | None = None, link: str | None = None,
                  meta: Mapping[str, Any] | None = None, idempotency_key: str | None = None, **fields: Any) -> int:
        """To every user the service knows (``audience="connected"``: those connected now); how many it was
        stored for."""
        return self.call(broadcast_call(title, message, type, link, meta, idempotency_key, fields))

    def sms_inbound(self, user_id: str, verification_id: str, service: str, code: str,
                    message_id: str | None = None, *, idempotency_key: str | None = None) -> Item:
        """A provider's SMS webhook; a repeated ``message_id`` answers the first notification, stored once."""
        return self.call(sms_inbound_call(user_id, verification_id, service, code, message_id, idempotency_key))

    def unread_count(self) -> int:
        return self.call(UNREAD_COUNT)

    def mark_read(self, notification_id: str) -> Item:
        """The notification, now read; every tab of the user gets a ``read`` event."""
        return self.call(mark_read_call(notification_id))

    def read_all(self) -> int:
        """Mark every notification read; the unread count after it (0)."""
        return self.call(READ_ALL)

    def delete(self, notification_id: str) -> None:
        """``DELETE /api/notifications/{id}``, on servers that have it (contract section 6); a server
        without that route, or a notification that is not the caller's, raises :class:`NotFound`."""
        self.call(delete_call(notification_id))

    def mark_read_many(self, notification_ids: list[str]) -> Item:
        """Mark several read (up to 1,000; others' ids are left alone): ``{"notification_ids"`` (those that
        changed), ``"unread_count"}``; every tab gets one ``read`` event."""
        return self.call(mark_read_many_call(notification_ids))

    def mark_unread(self, notification_id: str) -> Item:
        """The notification, unread again; every tab gets an ``unread`` event."""
        return self.call(mark_unread_call(notification_id))

    def delete_all(self, *, read_only: bool = False) -> Item:
        """Delete all of the caller's notifications (``read_only``: the read ones): ``{"deleted",
        "unread_count"}``; every tab gets a ``deleted`` event."""
        return self.call(delete_all_call(read_only))

    def erase_user(self, user_id: str) -> dict[str, int]:
        """Admin: erase everything stored for ``user_id`` and close their connections; rows per table."""
        return self.call(erase_user_call(user_id))

    def preferences(self) -> Item:
        """The caller's preferences: ``muted_types``, ``sound``, ``desktop``, ``quiet_hours``."""
        return self.call(preferences_call())

    def set_preferences(self, *, muted_types: Sequence[str] = (), sound: bool = True,
                        desktop: bool = True, quiet_hours: Mapping[str, str] | None = None) -> Item:
        """Replace the caller's preferences (every tab of theirs hears); what was stored."""
        return self.call(set_preferences_call(list(muted_types), sound, desktop, quiet_hours))

    def presence(self, *user_ids: str) -> Item:
        """``{user: {"online", "connections", "last_seen"}}`` across the cluster (admin, or a user for itself)."""
        return self.call(presence_call(list(user_ids)))

    def stats(self) -> Item:
        """``GET /ws/stats``: connections, users, counters, rates, latency, nodes."""
        return self.call(STATS)

    def metrics(self) -> str:
        """``GET /metrics`` in the Prometheus text format."""
        return self.call(METRICS)

    def list(self, *, limit: int = 50, before_seq: int | None = None, since_seq: int | None = None) -> Item:
        """A page ``{"items", "unread_count", "last_seq", "has_more"}``: newest first, or oldest first
        after ``since_seq`` (the way to catch up)."""
        return self.call(list_call(limit, before_seq, since_seq))
