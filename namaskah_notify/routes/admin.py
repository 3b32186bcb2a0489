"""Administration: disconnect a user everywhere, optionally revoking the tokens they hold; erase a user."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, StrictBool

from .. import openapi as api
from .. import retention
from ..brokers import CloseUser, Preferred, Revoked
from ..deps import AdminDep, ServicesDep
from ..preferences import DEFAULTS
from ..schemas import iso

log = logging.getLogger("namaskah_notify.admin")
router = APIRouter(prefix="/api/admin", tags=["admin"])


class DisconnectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revoke_tokens: StrictBool = False


@router.post("/users/{user_id}/disconnect", response_model=api.Disconnected,
             responses=api.errors(400, 401, 403, 413, 422, 503))
async def disconnect_user(
    services: ServicesDep, _admin: AdminDep, user_id: str, body: DisconnectBody | None = None
) -> dict[str, Any]:
    """Close every connection of ``user_id`` on every node; with ``revoke_tokens``, the tokens issued
    before now can no longer connect or call the API (4401 / 401 "token revoked")."""
    revoke = body is not None and body.revoke_tokens
    before = None
    if revoke:
        # Whole seconds, as in iat: a token minted in this same second still works, an older one not.
        before = float(int(time.time()))
        await services.store.revoke(user_id[:128], datetime.fromtimestamp(before, UTC))
        services.revocations.note(user_id, before)
    message = Revoked(user_id, before) if before is not None else CloseUser(user_id, 1008,
                                                                           "disconnected by an administrator")
    services.broker.publish([message])  # this node's connections close now; other nodes' when it arrives
    # Other nodes close revoked connections when they next re-read the revocations (seconds); a plain
    # disconnect cannot reach them while the broker is down.
    others = "notified" if services.broker.up else "pending" if revoke else "unreachable"
    log.warning("admin disconnect: user=%s revoke_tokens=%s other nodes %s", user_id, revoke, others)
    return {"user_id": user_id, "revoked_before": iso(datetime.fromtimestamp(before, UTC)) if before else None,
            "other_nodes": others}


@router.delete("/users/{user_id}", response_model=api.Erased, responses=api.errors(401, 403, 422, 503))
async def erase_user(services: ServicesDep, _admin: AdminDep, user_id: str) -> dict[str, Any]:
    """Erase everything stored for ``user_id`` (notifications, sequence, verifications, revocation,
    idempotency keys, the known-user row) and close the user's connections on every node (1008 "user
    erased"); the user's next notification is ``seq`` 1. Rows deleted per table."""
    # Their tabs close everywhere, and every node forgets their preferences.
    services.broker.publish([CloseUser(user_id, 1008, "user erased"), Preferred(user_id, DEFAULTS.to_wire())])
    services.dispatcher.forget(user_id)
    counts = await retention.erase_user(services.store.engine, user_id)
    log.warning("admin erase: user=%s rows=%d other nodes %s", user_id, sum(counts.values()),
                "notified" if services.broker.up else "unreachable")
    return {"deleted": counts}
