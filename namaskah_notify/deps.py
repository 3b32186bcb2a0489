"""The app's parts as FastAPI dependencies, in one place: ``ServicesDep``, ``UserDep`` (any valid token,
acting for its ``sub``), and the privileged callers: ``PublisherDep`` (``notify:publish``), ``WebhookDep``
(``notify:webhook``, or a signed request when ``NOTIFY_WEBHOOK_SECRET`` is set) and ``AdminDep``
(``notify:admin``, or ``role: "admin"``). A missing scope is 403 ``insufficient_scope`` naming it.

Imports ``auth``, ``brokers``, ``config``, ``dispatcher``, ``errors``, ``hub``, ``push``, ``sms``, ``stats``,
``store`` and ``webhooks``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from . import webhooks
from .auth import ADMIN, PUBLISH, WEBHOOK, Identity, TokenVerifier, bearer_token
from .brokers import Broker
from .config import Settings
from .dispatcher import Dispatcher
from .errors import AuthError, InsufficientScope
from .hub import Hub
from .limits import HandshakeLimiter
from .node import Node
from .push import WebPush
from .revocations import Revocations
from .sms import SmsService
from .stats import Stats
from .store import Store


@dataclass(slots=True)
class Services:
    """What one running app is made of; built in the lifespan, kept on ``app.state.services``."""

    settings: Settings
    verifier: TokenVerifier
    store: Store
    broker: Broker
    hub: Hub
    dispatcher: Dispatcher
    stats: Stats
    node: Node
    revocations: Revocations
    sms: SmsService | None = None  # verifications and the SMS poller
    handshakes: HandshakeLimiter | None = None  # new connections per client address
    push: WebPush | None = None  # Web Push: subscriptions and delivery

    def identify(self, token: str | None) -> Identity:
        """Verify a token and refuse one an administrator revoked: every way in goes through here."""
        identity = self.verifier.verify(token)
        if self.revocations.refuses(identity):
            raise AuthError("token revoked")
        return identity


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
_bearer = HTTPBearer(auto_error=False)


async def current_user(
    services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Identity:
    if credentials is None:
        raise AuthError("token missing: send Authorization: Bearer <JWT>")
    return services.identify(credentials.credentials)


UserDep = Annotated[Identity, Depends(current_user)]


def require_scope(identity: Identity, scope: str) -> Identity:
    """``identity`` when it may call a route that needs ``scope``; else 403 ``insufficient_scope``."""
    if not identity.allows(scope):
        extra = " (or role admin)" if scope == ADMIN else ""
        raise InsufficientScope(f"this endpoint needs a token with the {scope} scope{extra}")
    return identity


def _needs(scope: str) -> Callable[[Identity], Awaitable[Identity]]:
    async def scoped(identity: UserDep) -> Identity:
        return require_scope(identity, scope)

    return scoped


PublisherDep = Annotated[Identity, Depends(_needs(PUBLISH))]
AdminDep = Annotated[Identity, Depends(_needs(ADMIN))]
# Who a signed webhook call acts as: no user, and the webhook scope only.
SIGNED_WEBHOOK = Identity(user_id="signed-webhook", is_admin=False, expires_at=math.inf,
                          scopes=frozenset({WEBHOOK}))


def webhook_caller_of(services: Services, token: str | None, signature: str | None, body: bytes) -> Identity:
    """The webhook's caller: with ``NOTIFY_WEBHOOK_SECRET`` set, a request that carries a signature, or no
    token, is judged by its signature alone; any other needs a token with ``notify:webhook``."""
    secret = services.settings.webhook_secret
    if secret is not None and (signature is not None or token is None):
        webhooks.verify(secret.get_secret_value().encode(), signature, body)
        return SIGNED_WEBHOOK
    return require_scope(services.identify(token), WEBHOOK)


async def webhook_caller(
    services: ServicesDep, request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    if credentials is None and services.settings.webhook_secret is None:
        raise AuthError("token missing: send Authorization: Bearer <JWT>")
    signature = request.headers.get(webhooks.HEADER)
    body = await request.body() if services.settings.webhook_secret is not None else b""
    return webhook_caller_of(services, credentials.credentials if credentials else None, signature, body)


WebhookDep = Annotated[Identity, Depends(webhook_caller)]


def optional_admin(services: ServicesDep, request: Request, enabled: bool) -> None:
    """For endpoints that are public unless configured otherwise (stats, metrics)."""
    if not enabled:
        return
    require_scope(services.identify(bearer_token(request.headers.get("authorization"))), ADMIN)
