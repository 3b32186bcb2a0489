"""Every setting of the service, read once from ``NOTIFY_*`` variables.

Build a :class:`Settings` in ``create_app()`` or the CLI, never at import time. Imports nothing of ours.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Configuration; every field can be set as ``NOTIFY_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore")

    data_dir: Path = Path(".notify")
    database_url: str | None = None
    broker_url: str = "memory://"
    node_id: str | None = None
    # A node heartbeats every half of this; one that missed two heartbeats drops out of the cluster.
    node_ttl_s: float = Field(default=3.0, ge=1)
    reconcile_interval_s: float = Field(default=2.0, gt=0)  # how often a node catches connections up
    auto_migrate: bool = True  # bring the schema to the latest migration on start

    # Identity (contract section 1).
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None  # PEM text, or a path to a PEM file
    jwt_algorithms: CommaList = ["HS256"]
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_s: float = Field(default=10.0, ge=0, le=300)
    # POST /api/sms/inbound also accepts X-Notify-Signature made with this (webhooks.py).
    webhook_secret: SecretStr | None = Field(default=None, min_length=16)

    # WebSocket limits (contract section 2).
    allowed_origins: CommaList = []
    max_connections_per_user: int = Field(default=20, ge=1)
    max_message_bytes: int = Field(default=65536, ge=256)
    send_queue_size: int = Field(default=1024, ge=8)
    auth_timeout_s: float = Field(default=5.0, gt=0)
    client_rate_per_s: float = Field(default=20.0, gt=0)
    client_rate_burst: int = Field(default=40, ge=1)
    # New connections per client address, refused right after accept; 0 = no limit (or limit at the proxy).
    handshake_rate_per_ip: float = Field(default=0.0, ge=0)
    handshake_burst_per_ip: int = Field(default=20, ge=1)
    replay_limit: int = Field(default=1000, ge=1)
    token_expiry_warning_s: float = Field(default=60.0, ge=0)
    ws_ping_interval_s: float = Field(default=20.0, gt=0)
    ws_ping_timeout_s: float = Field(default=20.0, gt=0)
    # The kernel's send buffer per WebSocket (SO_SNDBUF); 0 = the kernel's own autotuning (up to ~4 MiB).
    ws_send_buffer_bytes: int = Field(default=262144, ge=0)

    # HTTP.
    max_body_bytes: int = Field(default=262144, ge=1024)
    stats_public: bool = True  # false: /ws/stats needs an admin token
    stats_require_admin: bool = False  # the older name for stats_public=false; still honoured
    metrics_require_admin: bool = False
    docs: bool = True  # false: no /docs, /redoc or /openapi.json

    # Storage.
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    # How long a publisher's Idempotency-Key answers a repeat; then the key may be used afresh.
    idempotency_ttl_s: float = Field(default=86400.0, gt=0)

    # SMS verifications polled at providers (``sms/``, docs/sms.md).
    sms_poll_interval_s: float = Field(default=2.0, gt=0, le=300)
    sms_poll_concurrency: int = Field(default=8, ge=1, le=256)  # polls in flight per provider
    sms_lease_s: float = Field(default=15.0, gt=0)  # a dead node's verifications move on after this
    sms_max_leases: int = Field(default=1000, ge=1)  # verifications one node polls at once
    sms_backoff_max_s: float = Field(default=60.0, gt=0)  # longest pause of a failing provider
    sms_default_ttl_s: int = Field(default=600, ge=1, le=86400)
    sms_default_provider: str | None = None  # else fake when enabled, else http when configured
    sms_code_pattern: str | None = None  # a regex; group 1 (or the match) is the code; default 4-8 digits
    sms_fake_provider: bool = False  # the built-in inbox and POST /api/fake-provider/messages
    sms_http_base_url: str | None = None  # enables the generic JSON polling adapter
    sms_http_path: str = "/verifications/{id}/messages"  # {id} {phone_number} {service} {user_id}
    sms_http_auth_header: str = "Authorization"
    sms_http_auth_value: SecretStr | None = None  # e.g. "Bearer <api key>"
    sms_http_messages_field: str = "messages"  # dotted path to the list; empty: the body is the list
    sms_http_id_field: str = "id"
    sms_http_text_field: str = "text"
    sms_http_received_field: str = "received_at"  # ISO-8601 or epoch seconds; optional in each message
    sms_http_timeout_s: float = Field(default=5.0, gt=0, le=120)

    # Retention (``retention.py``): what the pruner keeps, and how it deletes the rest.
    retention_days: float = Field(default=90.0, ge=0)  # 0: no age limit
    max_per_user: int = Field(default=1000, ge=0)  # the newest kept per user; 0: no limit
    prune_interval_s: float = Field(default=3600.0, ge=0)  # 0: no background pruning (``notify prune`` only)
    prune_batch: int = Field(default=500, ge=1, le=10000)  # rows per transaction
    prune_pause_s: float = Field(default=0.02, ge=0)  # between transactions, so writers get their turn

    # Web Push (``push/``): the VAPID key and contact, which endpoints may be sent to, and delivery.
    vapid_private_key: SecretStr | None = None  # PEM text or a path; else generated into the data folder
    vapid_subject: str | None = None  # a mailto: or https: contact for push services, the VAPID JWT's sub
    push_insecure_hosts: CommaList = []  # hosts whose endpoints may be http: and local (tests, local services)
    push_queue_size: int = Field(default=10000, ge=1)  # notifications waiting to be pushed; then dropped
    push_concurrency: int = Field(default=8, ge=1, le=256)  # pushes in flight at once
    push_ttl_s: int = Field(default=86400, ge=0, le=2419200)  # how long a push service keeps an undelivered one
    push_max_attempts: int = Field(default=5, ge=1, le=20)  # per push, when the service answers 429 or 5xx
    push_retry_max_s: float = Field(default=300.0, gt=0)  # longest wait before a retry (Retry-After longer: give up)
    push_timeout_s: float = Field(default=10.0, gt=0, le=120)

    log_level: str = "info"
    # The browser client and demo dashboard; by default the repository's ``static/`` folder.
    static_dir: Path | None = None

    @field_validator("jwt_algorithms", "allowed_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("push_insecure_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        # Compared with an endpoint's host as URLs give it: lower case, IPv6 without brackets.
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            return [str(host).strip().lower().strip("[]").rstrip(".") for host in value if str(host).strip()]
        return value

    @field_validator("vapid_subject")
    @classmethod
    def _contact(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if re.fullmatch(r"mailto:[^@\s]+@[^@\s]+", value) or re.fullmatch(r"https://[^/?#@\s]+(/\S*)?", value):
            return value
        raise ValueError("NOTIFY_VAPID_SUBJECT must be a mailto: address or an https: URL")

    @model_validator(mode="after")
    def _sms_lease_outlives_a_poll(self) -> Settings:
        # A node renews its leases once a round; a lease shorter than a round plus a slow poll would
        # let a second node start polling a verification the first is still polling.
        if self.sms_lease_s < 2 * self.sms_poll_interval_s + self.sms_http_timeout_s:
            raise ValueError("NOTIFY_SMS_LEASE_S must be at least twice NOTIFY_SMS_POLL_INTERVAL_S "
                             "plus NOTIFY_SMS_HTTP_TIMEOUT_S")
        return self

    @property
    def resolved_static_dir(self) -> Path:
        return self.static_dir or Path(__file__).resolve().parents[1] / "static"

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file in the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'notify.db').resolve()}"
