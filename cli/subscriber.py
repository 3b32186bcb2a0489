"""``notify listen``'s loop: the client's :class:`~namaskah_notify.client.Subscriber`, its events turned
into calls to the renderer and its errors into :class:`CliError` with the documented exit codes.

Reconnecting, resuming, catching up over HTTP, acks, pings and token refresh are the client's; this module
decides what each event means on a terminal, when to stop (``count``) and how each failure reads. Exit 2
for a refused token (close 4401, or 401 at the handshake), 1 when the server cannot be reached after the
retries or anything else goes wrong. Imports ``common``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from namaskah_notify.client import (
    Backoff,
    Connected,
    ConnectionFailed,
    Deleted,
    Disconnected,
    ErrorReported,
    NotFound,
    NotificationReceived,
    NotifyClientError,
    Resumed,
    Resynced,
    Resyncing,
    SequenceError,
    Subscriber,
    TokenExpiring,
    TokenRefreshed,
    Unauthorized,
)

from .common import CliError

OnNotification = Callable[[dict[str, Any], bool], None]  # (data, replayed)
OnStatus = Callable[[str, str], None]  # (kind, text)


class AuthRejected(CliError):
    """Close 4401 (or HTTP 401 at the handshake): a new token is needed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"token expired / invalid: {reason or 'rejected by the server'} "
                         "(mint a new one with `notify token USER`)", exit_code=2)


async def listen_until(base: str, token: str | Callable[[], str], *, on_notification: OnNotification,
                       on_status: OnStatus, since_seq: int | None = None, count: int | None = None,
                       mark_read: bool = False, retries: int = 10, backoff: Backoff = Backoff(),
                       ping_interval: float = 20.0) -> None:
    """Show notifications until ``count`` were shown (None: until the server closes with 1000)."""
    subscriber = Subscriber(base, token, since_seq, backoff=backoff, max_retries=None if retries < 0 else retries,
                            ping_interval=ping_interval, user_agent="notify-cli")
    limit = "∞" if retries < 0 else str(retries)
    shown = 0
    fetched: int | None = None  # counting the missed ones that come over HTTP after resync_required
    try:
        async with contextlib.aclosing(subscriber.events()) as events:
            async for event in events:
                if isinstance(event, NotificationReceived):
                    on_notification(event.data, event.replayed)
                    if mark_read and not event.data.get("is_read"):
                        await subscriber.mark_read(event.id)
                    shown += 1
                    if fetched is not None:
                        fetched += 1
                    if count is not None and shown >= count:
                        if fetched is not None:
                            on_status("resumed", f"resynced over HTTP: {fetched} missed")
                        return
                elif isinstance(event, Resyncing):
                    fetched = 0
                else:
                    if isinstance(event, Resynced):
                        fetched = None
                    _status(event, on_status, limit, refreshable=callable(token))
        on_status("closed", "the server closed the connection (1000)")
    except Unauthorized as exc:
        raise AuthRejected(exc.message.removeprefix("closed 4401: ")) from None
    except ConnectionFailed as exc:
        raise CliError(exc.message) from None
    except NotFound:
        raise CliError(f"{subscriber.ws_url} answered 404: is this a namaskah-notify server?") from None
    except SequenceError as exc:
        raise CliError(f"notifications were lost and could not be fetched: {exc.message}") from None
    except NotifyClientError as exc:
        raise CliError(exc.message) from None
    finally:
        await subscriber.aclose()


def _status(event: object, on_status: OnStatus, limit: str, *, refreshable: bool) -> None:
    match event:
        case Connected(user_id=user, unread_count=unread, last_seq=last):
            on_status("connected", f"connected as {user} (unread {unread}, last seq {last})")
        case Resumed(replayed=replayed):
            on_status("resumed", f"resumed: {replayed} missed")
        case Resynced(fetched=fetched):
            on_status("resumed", f"resynced over HTTP: {fetched} missed")
        case Disconnected(reason=reason, retry_in=delay, attempt=attempt):
            on_status("reconnecting", f"reconnecting in {delay:.1f}s (retry {attempt}/{limit}): {reason}")
        case TokenExpiring(expires_in=left) if not refreshable:
            on_status("expiring", f"token expires in {left:g}s; the server will then close the connection (4401)")
        case TokenRefreshed():
            on_status("refreshed", "token refreshed")
        case Deleted(notification_ids=ids, all=everything, unread_count=unread):
            which = "all notifications" if everything else ", ".join(ids[:5]) + (f" and {len(ids) - 5} more"
                                                                               if len(ids) > 5 else "")
            on_status("deleted", f"deleted {which} (unread {unread})")
        case ErrorReported(code=code, message=message):
            on_status("error", f"server: {code}: {message}")
