"""The user's notifications over HTTP (the polling fallback) and the admin publish endpoints (whose work is
in ``publish.py``, shared with the lean way in that backends' calls take)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.convertors import Convertor, register_url_convertor

from .. import openapi as api
from ..deps import PublisherDep, ServicesDep, UserDep, WebhookDep
from ..errors import ProtocolError
from ..schemas import PublishBody, SmsInboundBody
from . import publish as publish_path

# A publisher's retry of the same request: 1-200 visible ASCII characters, scoped to the token's subject.
IdempotencyKey = Annotated[str | None, Header(
    # HTTP drops the spaces around a header's value, so the description allows them.
    alias="Idempotency-Key", pattern=r"^[ \t]*[\x21-\x7e]{1,200}[ \t]*$",
    description="A retry with the same key and body within NOTIFY_IDEMPOTENCY_TTL_S answers the first "
                "answer again and stores nothing; the same key with another body is 422 "
                "`idempotency_mismatch`.")]


router = APIRouter(prefix="/api")
MAX_SEQ = 2**63 - 1  # the database's integer; larger values would fail in the driver, not as a 422


@router.get("/notifications", tags=["notifications"], response_model=api.NotificationPage,
            responses=api.errors((400, "`before_seq` and `since_seq` together."), 401, 422, 503),
            openapi_extra={"parameters": [api.seq_page_parameter(MAX_SEQ)]})
async def list_notifications(
    services: ServicesDep,
    user: UserDep,
    # Described together, as the one ``page`` object of openapi_extra.
    limit: Annotated[int, Query(ge=1, le=200, include_in_schema=False)] = 50,
    before_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ, include_in_schema=False)] = None,
    since_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ, include_in_schema=False)] = None,
) -> dict[str, Any]:
    """Newest first (``before_seq`` pages back) or oldest first after ``since_seq`` (catching up)."""
    if before_seq is not None and since_seq is not None:
        raise ProtocolError("give before_seq or since_seq, not both", code="bad_request")
    items = await services.store.page(user.user_id, limit=limit + 1, before_seq=before_seq, since_seq=since_seq)
    unread, last_seq = await services.store.state(user.user_id)
    return {
        "items": [n.to_wire() for n in items[:limit]],
        "unread_count": unread,
        "last_seq": last_seq,
        "has_more": len(items) > limit,
    }


@router.get("/notifications/unread-count", tags=["notifications"], response_model=api.UnreadCount,
            responses=api.errors(401, 503))
async def unread_count(services: ServicesDep, user: UserDep) -> dict[str, int]:
    """The bell badge."""
    return {"unread_count": await services.store.unread_count(user.user_id)}


class ReadManyBody(BaseModel):
    """``POST /api/notifications/read``: the notifications to mark read (ids that are not the caller's are
    left alone)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"ids": ["notif_1a2b3c4d5e6f"]}]})

    ids: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(min_length=1, max_length=1000)


@router.post("/notifications/read", tags=["notifications"], response_model=api.Marked,
             responses=api.errors(400, 401, 413, 422, 503))
async def read_many(services: ServicesDep, user: UserDep, body: ReadManyBody) -> dict[str, Any]:
    """Mark several of the caller's notifications read; every tab gets one ``read`` event with those that
    changed."""
    changed, unread = await services.dispatcher.mark_read_many(user.user_id, list(dict.fromkeys(body.ids)))
    return {"notification_ids": changed, "unread_count": unread}


@router.post("/notifications/{notification_id}/unread", tags=["notifications"], response_model=api.Notification,
             responses=api.errors(401, (404, "No such notification of the caller's."), 422, 503))
async def unread_one(services: ServicesDep, user: UserDep, notification_id: str) -> dict[str, Any]:
    """Mark one of the caller's notifications unread again; every tab gets an ``unread`` event."""
    record = await services.dispatcher.mark_unread(user.user_id, notification_id[:128])
    return record.to_wire()


class NotificationIdSegment(Convertor[str]):
    """A notification id as the last path segment: any segment but the concrete paths beside it, which
    OpenAPI matches first, so ``DELETE /api/notifications/read`` is a 405 rather than a delete of an id
    ``read``."""

    regex = "(?!(?:read|read-all|unread-count)$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("notification_id", NotificationIdSegment())


@router.delete("/notifications/{notification_id:notification_id}", tags=["notifications"],
               status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response, responses=api.errors(401, (404, "No such notification of the caller's."),
                                                            422, 503))
async def delete_one(services: ServicesDep, user: UserDep, notification_id: str) -> Response:
    """Delete one of the caller's notifications (its ``seq`` is not reused); every tab gets a ``deleted``
    event. 404 when it is not the caller's."""
    await services.dispatcher.delete(user.user_id, notification_id[:128])
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/notifications", tags=["notifications"], response_model=api.Deleted,
               responses=api.errors(401, 422, 503))
async def delete_all(
    services: ServicesDep, user: UserDep,
    read: Annotated[Literal["true", "false"] | None, Query(
        description="`true`: only the read ones; absent (or `false`): all of them.")] = None,
) -> dict[str, int]:
    """Delete all of the caller's notifications, or only the read ones; every tab gets a ``deleted`` event
    (``all`` true when everything went)."""
    deleted, unread = await services.dispatcher.delete_all(user.user_id, only_read=read == "true")
    return {"deleted": deleted, "unread_count": unread}


@router.post("/notifications/read-all", tags=["notifications"], response_model=api.UnreadCount,
             responses=api.errors(401, 503))
async def read_all(services: ServicesDep, user: UserDep) -> dict[str, int]:
    """Mark every notification of the caller read; every tab gets a ``read`` event."""
    await services.dispatcher.mark_all_read(user.user_id)
    return {"unread_count": 0}


@router.post("/notifications/{notification_id}/read", tags=["notifications"], response_model=api.Notification,
             responses=api.errors(401, (404, "No such notification of the caller's."), 422, 503))
async def read_one(services: ServicesDep, user: UserDep, notification_id: str) -> dict[str, Any]:
    """Mark one of the caller's notifications read; 404 when it is not the caller's."""
    record = await services.dispatcher.mark_read(user.user_id, notification_id[:128])
    return record.to_wire()


@router.post("/notifications", status_code=status.HTTP_201_CREATED, response_model=None, tags=["publishing"],
             responses={201: {"description": "Stored and pushed: the notification; for `user_ids` "
                                             "`{count, items}`; for a broadcast `{count}`.",
                              "model": api.Notification | api.Published | api.Broadcast},
                        **api.errors(400, 401, 403, 413, 422, 503, unstorable=True)})
async def publish(services: ServicesDep, publisher: PublisherDep, body: PublishBody,
                  idempotency_key: IdempotencyKey = None) -> Response:
    """Store and push a notification to one user, several, or every user the service knows: 201 with the
    notification; for ``user_ids`` ``{"count","items"}``; for a broadcast ``{"count"}``. A repeat with the
    same ``Idempotency-Key`` and body answers the first answer again and stores nothing."""
    key = _key(publisher.user_id, idempotency_key, body)
    return _json(await publish_path.publish(services, body, key))


@router.post("/sms/inbound", status_code=status.HTTP_201_CREATED, response_model=None, tags=["sms"],
             responses={201: {"description": "Stored and pushed: the SMS notification.", "model": api.Notification},
                        200: {"description": "A repeated `message_id`: the first notification; nothing is pushed "
                                             "again.", "model": api.Notification},
                        **api.errors(400, 401, 403, 413, 422, 503, unstorable=True)},
             openapi_extra={"parameters": [{
                 "name": "X-Notify-Signature", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "With NOTIFY_WEBHOOK_SECRET on the server, instead of a token: `t=<unix seconds>,"
                                "v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`, within 300 s."}]})
async def sms_inbound(services: ServicesDep, caller: WebhookDep, body: SmsInboundBody,
                      idempotency_key: IdempotencyKey = None) -> Response:
    """A provider's webhook: an SMS code arrived for a verification; a retried ``message_id`` is 200. Needs
    ``notify:webhook``, or with ``NOTIFY_WEBHOOK_SECRET`` a valid ``X-Notify-Signature`` instead."""
    key = _key(caller.user_id, idempotency_key, body)
    return _json(await publish_path.sms_inbound(services, body, key))


def _key(publisher: str, header: str | None, body: PublishBody | SmsInboundBody) -> publish_path.Key | None:
    try:
        return publish_path.idempotency_key(publisher, header, body)
    except ValueError as exc:
        raise ProtocolError(str(exc), code="bad_request") from None


def _json(answer: publish_path.Answer) -> Response:
    status_code, text = answer
    return Response(text, status_code=status_code, media_type="application/json")
