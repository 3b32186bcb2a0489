"""SMS verifications over HTTP: start one (admin), read or cancel it (its owner or an admin), and feed the
fake provider's inbox (admin, only when ``NOTIFY_SMS_FAKE_PROVIDER`` is on). See docs/sms.md."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC
from typing import Any

from fastapi import APIRouter, Response, status

from .. import openapi as api
from ..auth import Identity
from ..deps import AdminDep, ServicesDep, UserDep
from ..errors import Conflict, NotFound
from ..schemas import iso, utcnow
from ..sms import SmsService
from ..sms.schemas import FakeMessageBody, StartVerificationBody, Verification

router = APIRouter(prefix="/api", tags=["sms"])
log = logging.getLogger("namaskah_notify.sms")


def _sms(services: ServicesDep) -> SmsService:
    if services.sms is None:
        raise NotFound("SMS verifications are not available")
    return services.sms


async def _visible(sms: SmsService, verification_id: str, caller: Identity) -> Verification:
    """The verification when the caller owns it or is admin; 404 alike for absent and not-yours."""
    record = await sms.store.get(verification_id[:40])
    if record is None or not (caller.is_admin or caller.user_id == record.user_id):
        raise NotFound("no such verification")
    return record


@router.post("/verifications", status_code=status.HTTP_201_CREATED, response_model=api.Verification,
             responses={201: {"description": "Started: pending.", "links": api.VERIFICATION_LINKS},
                        **api.errors((400, "The body is not JSON, or names a provider not enabled here."), 401, 403,
                                     (409, "No SMS provider is enabled on this server."), 413, 422, 503)})
async def start_verification(services: ServicesDep, _admin: AdminDep, body: StartVerificationBody) -> dict[str, Any]:
    """Start polling a provider for a user's SMS code; pending until received, expired or cancelled."""
    sms = _sms(services)
    provider = sms.choose_provider(body.provider, body.phone_number)
    ttl = body.ttl_s or services.settings.sms_default_ttl_s
    record = await sms.store.create(body.user_id, body.service, body.phone_number, provider, ttl)
    log.info("verification started: id=%s user=%s service=%s provider=%s ttl_s=%d", record.id, record.user_id,
             record.service, provider, ttl)
    return record.to_wire()


@router.get("/verifications/{verification_id}", response_model=api.Verification,
            responses=api.errors(401, (404, "No such verification of the caller's."), 422, 503))
async def get_verification(services: ServicesDep, user: UserDep, verification_id: str) -> dict[str, Any]:
    """The verification, with its code once received; 404 unless the caller owns it or is admin."""
    record = await _visible(_sms(services), verification_id, user)
    return record.to_wire(with_code=True)


@router.post("/verifications/{verification_id}/cancel", response_model=api.Verification,
             responses=api.errors(401, (404, "No such verification of the caller's."),
                                  (409, "The verification is received or expired."), 422, 503))
async def cancel_verification(services: ServicesDep, user: UserDep, verification_id: str) -> dict[str, Any]:
    """Stop waiting for a code: pending → cancelled; 409 when it is no longer pending."""
    sms = _sms(services)
    record = await _visible(sms, verification_id, user)
    if record.status == "cancelled":
        return record.to_wire(with_code=True)
    if not await sms.store.cancel(record.id):
        current = await _visible(sms, record.id, user)
        raise Conflict(f"verification is {current.status}, not pending")
    log.info("verification cancelled: id=%s user=%s", record.id, record.user_id)
    return (await _visible(sms, record.id, user)).to_wire(with_code=True)


@router.post("/fake-provider/messages", status_code=status.HTTP_201_CREATED, response_model=api.FakeMessageAccepted,
             responses={200: {"description": "A repeated `message_id`: the message kept the first time.",
                              "model": api.FakeMessageAccepted},
                        **api.errors(400, 401, 403, (404, "No such verification, or the fake provider is off."),
                                     (409, "The verification is polled at another provider."), 413, 422, 503)})
async def fake_message(
    services: ServicesDep, _admin: AdminDep, body: FakeMessageBody, response: Response
) -> dict[str, Any]:
    """Put an SMS in the fake provider's inbox for a verification; a repeated ``message_id`` is 200."""
    sms = _sms(services)
    if "fake" not in sms.providers:
        raise NotFound("the fake provider is not enabled (NOTIFY_SMS_FAKE_PROVIDER=true)")
    record = await sms.store.get(body.verification_id)
    if record is None:
        raise NotFound("no such verification")
    if record.provider != "fake":
        raise Conflict(f"verification {record.id} is polled at provider {record.provider!r}, not 'fake'")
    message_id = body.message_id or f"fake_{secrets.token_hex(8)}"
    received_at = body.received_at or utcnow()
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    message, created = await sms.store.add_fake_message(record.id, message_id, body.text, received_at)
    if not created:
        response.status_code = status.HTTP_200_OK
    return {"verification_id": record.id, "message_id": message.id,
            "received_at": iso(message.received_at or received_at), "verification_status": record.status}
