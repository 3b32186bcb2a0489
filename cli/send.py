"""``notify send-test``: inject fake SMS events through ``POST /api/sms/inbound``, or, with
``--via-provider``, through the polling path (a verification plus a message in the fake provider's inbox).

Mints a short-lived admin token from the local secret unless ``--token`` is given (or, with ``--sign``,
signs each call with the webhook secret instead, as a provider would), posts ``--count``
events at ``--rate`` per second with a progress bar through the Python client (``NotifyClient``, which
retries 429, 503 and connection failures a few times), then prints a summary. Failures become one line
that says what to do (:func:`explain`). Imports ``common``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from namaskah_notify.client import (
    Backoff,
    ConnectionFailed,
    NotifyClient,
    NotifyClientError,
    RetryPolicy,
    WebhookSigner,
)

from .common import DEFAULT_URL, CliError, DataDir, Url, err, fail, http_base, local_token, out

# Statuses after which every further request would fail the same way.
_FATAL = {401, 403, 404, 405, 413, 422}
WebhookSecret = Annotated[str | None, typer.Option("--webhook-secret", envvar="NOTIFY_WEBHOOK_SECRET",
                                                  help="The server's webhook secret, for --sign")]


def explain(status: int, body: Any, base: str) -> str:
    """One line for a failed ``POST /api/sms/inbound``: what the server said and what to do."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if status == 401 and isinstance(body, dict) and body.get("code") == "bad_signature":
        return (f"401 bad signature: {detail}; --sign needs the server's NOTIFY_WEBHOOK_SECRET "
                "(--webhook-secret) and a clock within 300 s of the server's")
    if status == 401:
        return (f"401 unauthorized: {detail or 'token rejected'}; use an admin token made with this server's "
                "secret (--data-dir / NOTIFY_DATA_DIR, NOTIFY_JWT_SECRET, or --token)")
    if status == 403:
        return (f"403 forbidden: {detail or 'not allowed'}; mint a webhook token with "
                "`notify token NAME --scope notify:webhook` (or --admin)")
    if status == 422:
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            first = detail[0]
            where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
            return f"422 invalid request: {where}: {first.get('msg')}"
        return f"422 invalid request: {detail}"
    if status == 400 and isinstance(detail, str) and "provider" in detail:
        return f"400: {detail}; start the server with NOTIFY_SMS_FAKE_PROVIDER=true to use --via-provider"
    if status == 404 and isinstance(detail, str) and "fake provider" in detail:
        return f"404: {detail}; start the server with NOTIFY_SMS_FAKE_PROVIDER=true to use --via-provider"
    if status in (404, 405):
        return f"{status}: not found at {base}; is this a namaskah-notify server?"
    return f"HTTP {status}: {detail or 'request failed'}"


def _connection_error(exc: BaseException | None, base: str) -> str:
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {base}: connection refused (is `notify serve` running there?)"
    if isinstance(exc, httpx.TimeoutException):
        return f"{base} did not answer in time"
    return f"request to {base} failed: {exc}"


def _body(user: str, service: str, code: str | None, verification_id: str | None) -> dict[str, str]:
    return {
        "user_id": user,
        "verification_id": verification_id or f"ver_{secrets.token_hex(6)}",
        "service": service,
        "code": code or f"{secrets.randbelow(10**6):06d}",
        "message_id": f"cli_{uuid.uuid4().hex}",  # unique: a provider retry would reuse it, we never do
    }


def _via_provider(client: NotifyClient, user: str, service: str, code: str | None) -> dict[str, Any]:
    """Start a verification with the fake provider and put an SMS with a code in its inbox; the server's
    poller then finds it and notifies. Returns the inbox's answer."""
    started = client.request("POST", "/api/verifications", json={"user_id": user, "service": service,
                                                                 "provider": "fake"})
    text = f"Your {service} verification code is {code or f'{secrets.randbelow(10**6):06d}'}"
    message = {"verification_id": started["id"], "text": text, "message_id": f"cli_{uuid.uuid4().hex}"}
    return client.request("POST", "/api/fake-provider/messages", json=message)


def send_test(
    user: Annotated[str, typer.Argument(help="User id to receive the SMS notification")],
    service: Annotated[str, typer.Option(help="Service named in the message")] = "Google",
    code: Annotated[str | None, typer.Option(help="SMS code (default: random 6 digits)")] = None,
    verification_id: Annotated[str | None, typer.Option(help="Verification id (default: random)")] = None,
    count: Annotated[int, typer.Option(min=1, help="How many events to send")] = 1,
    rate: Annotated[float, typer.Option(min=0, help="Events per second (0: as fast as possible)")] = 0.0,
    url: Url = DEFAULT_URL,
    token: Annotated[str | None, typer.Option(envvar="NOTIFY_ADMIN_TOKEN",
                                              help="Admin token (default: minted from the local secret)")] = None,
    via_provider: Annotated[bool, typer.Option("--via-provider", help="Go through the SMS polling path: a "
                                               "verification and a message in the fake provider's inbox")] = False,
    sign: Annotated[bool, typer.Option("--sign", help="Sign each call with the webhook secret "
                                       "(X-Notify-Signature), as a provider does, instead of using a token")] = False,
    webhook_secret: WebhookSecret = None,
    data_dir: DataDir = None,
) -> None:
    """Inject fake SMS events (POST /api/sms/inbound) as a provider's webhook would, or with
    --via-provider through a verification the server's SMS poller watches (needs NOTIFY_SMS_FAKE_PROVIDER).

    Exit codes:
      0  all sent
      1  any failed, or the server cannot be reached

    Examples:

      notify send-test alice

      notify send-test alice --service GitHub --code 424242

      notify send-test alice --count 200 --rate 50

      notify send-test alice --via-provider

      NOTIFY_WEBHOOK_SECRET=... notify send-test alice --sign
    """
    signer = None
    try:
        base = http_base(url)
        lifetime = 300 + int(count / (rate or 50))
        if sign:
            if via_provider:
                raise CliError("--sign signs the webhook (POST /api/sms/inbound); --via-provider uses the admin API")
            if not webhook_secret:
                raise CliError("--sign needs the server's webhook secret: NOTIFY_WEBHOOK_SECRET or --webhook-secret")
            signer = WebhookSigner(webhook_secret)
        admin = token if sign else token or local_token(data_dir, "notify-cli", admin=True, ttl_s=lifetime)
    except CliError as exc:
        raise fail(exc.message, exc.exit_code) from None
    sent = failed = 0
    last_error = ""
    started = time.monotonic()
    progress = Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True, disable=count == 1)
    retry = RetryPolicy(attempts=3, backoff=Backoff(0.2, 1.0))
    with NotifyClient(base, admin, retry=retry, auth=signer) as client, progress:
        task = progress.add_task("send", total=count)
        for index in range(count):
            if rate > 0:
                time.sleep(max(0.0, started + index / rate - time.monotonic()))
            try:
                if via_provider:
                    record = _via_provider(client, user, service, code)
                else:
                    record = client.sms_inbound(**_body(user, service, code, verification_id))
            except ConnectionFailed as exc:
                progress.stop()
                raise fail(_connection_error(exc.__cause__, base)) from None
            except NotifyClientError as exc:
                failed += 1
                last_error = explain(exc.status, {"detail": exc.detail, "code": exc.code}, base)
                if exc.status in _FATAL or count == 1:
                    progress.stop()
                    raise fail(last_error) from None
            else:
                sent += 1
                if count == 1 and via_provider:
                    out.print(f"[green]sent[/] an SMS for {escape(service)} to the fake inbox of verification "
                              f"{record.get('verification_id')}; the poller notifies {escape(user)} shortly")
                elif count == 1:
                    out.print(f"[green]sent[/] {escape(str(record.get('title')))} to {escape(user)} "
                              f"(id {record.get('id')}, seq {record.get('seq')})")
            progress.advance(task)
    if count > 1:
        elapsed = time.monotonic() - started
        out.print(f"sent {sent}, failed {failed} in {elapsed:.2f} s ({sent / elapsed if elapsed else 0:.1f}/s)")
    if failed:
        raise fail(f"{failed} of {count} failed; last: {last_error}")
