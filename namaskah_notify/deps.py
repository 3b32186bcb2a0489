"""The app's parts as FastAPI dependencies, in one place: ``ServicesDep``, ``UserDep``, ``AdminDep``.

Imports ``auth``, ``brokers``, ``config``, ``dispatcher``, ``errors``, ``hub``, ``sms``, ``stats`` and ``store``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .auth import Identity, TokenVerifier, bearer_token
from .brokers import Broker
from .config import Settings
from .dispatcher import Dispatcher
from .errors import AuthError, Forbidden
from .hub import Hub
from .limits import HandshakeLimiter
from .node import Node
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


async def admin_user(identity: UserDep) -> Identity:
    if not identity.is_admin:
        raise Forbidden("this endpoint needs a token with role admin")
    return identity


AdminDep = Annotated[Identity, Depends(admin_user)]


def optional_admin(services: ServicesDep, request: Request, enabled: bool) -> None:
    """For endpoints that are public unless configured otherwise (stats, metrics)."""
    if not enabled:
        return
    identity = services.identify(bearer_token(request.headers.get("authorization")))
    if not identity.is_admin:
        raise Forbidden("this endpoint needs a token with role admin")
