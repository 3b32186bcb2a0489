"""Web Push subscriptions: the server's VAPID public key, and a user's own subscriptions (``/api/push``)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import openapi as api
from ..deps import Services, ServicesDep, UserDep
from ..errors import Conflict, Unavailable
from ..push import MAX_PER_USER, WebPush, auth_secret, client_key

log = logging.getLogger("namaskah_notify.push")
router = APIRouter(prefix="/api/push", tags=["push"])
_ENDPOINT = Field(min_length=1, max_length=2048, json_schema_extra={"format": "uri", "pattern": "^https?://[!-~]+$"},
                  description="The push service's URL for this browser: `https:`, a public host (see the README's "
                              "Web Push section); otherwise `422 bad_endpoint`.")


class SubscriptionKeys(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # 0x04 (uncompressed) then 64 bytes: "B", one of A-P, 85 more characters.
    p256dh: str = Field(pattern=r"^B[A-P][A-Za-z0-9_-]{85}=?$", description="The browser's public key: an uncompressed "
                        "P-256 point (65 bytes), base64url. It must be a point on the curve.")
    auth: str = Field(pattern=r"^[A-Za-z0-9_-]{22}(==)?$", description="The auth secret: 16 bytes, base64url.")

    @field_validator("p256dh")
    @classmethod
    def _point(cls, value: str) -> str:
        client_key(value)
        return value

    @field_validator("auth")
    @classmethod
    def _secret(cls, value: str) -> str:
        auth_secret(value)
        return value


class SubscriptionBody(BaseModel):
    """A browser's ``PushSubscription.toJSON()``."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{
        "endpoint": "https://push.example.net/wpush/v2/dXJm0Rk6bJE",
        "expirationTime": None,
        "keys": {"p256dh": "BLyCx9YpPLKVwpn9kRmhxoXMUumY30d2vc2Y8qVU_D-w4fYvh5bs02u2m81dTPMeYdJcKqa4fvale2all659p1Y",
                 "auth": "zBPABPmnRsMSUX4YnJPX8A"}}]})

    endpoint: str = _ENDPOINT
    keys: SubscriptionKeys
    expirationTime: float | None = Field(default=None, strict=True)  # the browser's name for it


class UnsubscribeBody(BaseModel):
    endpoint: str = Field(min_length=1, max_length=2048)


class VapidPublicKey(BaseModel):
    key: str = Field(description="The server's VAPID public key (an uncompressed P-256 point, base64url): the "
                                 "`applicationServerKey` of `pushManager.subscribe()`.")


class Subscribed(BaseModel):
    endpoint: str
    subscriptions: int = Field(ge=1, le=MAX_PER_USER, description="How many the caller has now.")


def _answers(*statuses: int, subscribing: bool = False) -> dict[int | str, dict[str, Any]]:
    answers = api.errors(*statuses)
    if subscribing:
        answers[409] = {**answers[409], "description": f"The caller has {MAX_PER_USER} subscriptions already "
                        "(`too_many_subscriptions`): delete one first."}
        answers[422] = {"description": "The body does not validate (a key of the wrong length, or one that is not a "
                        "point on P-256), or `bad_endpoint`: an endpoint this server does not send to.",
                        "content": {"application/json": {"schema": {"anyOf": [
                            {"$ref": "#/components/schemas/ValidationFailed"},
                            {"$ref": "#/components/schemas/Error"}]}}}}
    return answers


def _channel(services: Services) -> WebPush:
    if services.push is None:
        raise Unavailable("Web Push is not running")
    return services.push


@router.get("/vapid-public-key", response_model=VapidPublicKey, responses=_answers())
async def vapid_public_key(services: ServicesDep) -> dict[str, str]:
    """The key browsers subscribe with; pushes from this server are signed by its private half."""
    return {"key": _channel(services).key.public_key}


@router.post("/subscriptions", status_code=201, response_model=Subscribed,
             responses=_answers(400, 401, 409, 413, 422, 503, subscribing=True))
async def subscribe_push(services: ServicesDep, user: UserDep, body: SubscriptionBody) -> dict[str, Any]:
    """Store the caller's browser subscription (again: its keys are renewed). Notifications stored while the
    caller has no connection anywhere are then pushed to it, unless their preferences silence them."""
    push = _channel(services)
    origin = push.policy.check(body.endpoint)
    count = await push.store.put(user.user_id, body.endpoint, body.keys.p256dh, body.keys.auth)
    if count is None:
        raise Conflict(f"at most {MAX_PER_USER} push subscriptions per user: delete one first",
                       code="too_many_subscriptions")
    push.subscribed(user.user_id)
    log.info("push subscribed: user=%s origin=%s subscriptions=%d", user.user_id, origin, count)
    return {"endpoint": body.endpoint, "subscriptions": count}


@router.delete("/subscriptions", status_code=204, response_class=Response,
               responses=_answers(400, 401, 413, 422, 503))
async def unsubscribe_push(services: ServicesDep, user: UserDep, body: UnsubscribeBody) -> Response:
    """Delete the caller's subscription at this endpoint (204 whether or not there was one)."""
    if await _channel(services).store.remove(user.user_id, body.endpoint):
        log.info("push unsubscribed: user=%s", user.user_id)
    return Response(status_code=204)
