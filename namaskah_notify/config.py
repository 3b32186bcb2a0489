"""Every setting of the service, read once from ``NOTIFY_*`` variables.

Build a :class:`Settings` in ``create_app()`` or the CLI, never at import time. Imports nothing of ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Configuration; every field can be set as ``NOTIFY_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore")

    data_dir: Path = Path(".notify")
    database_url: str | None = None
    broker_url: str = "memory://"
    node_id: str | None = None
    node_ttl_s: float = Field(default=10.0, ge=1)  # a node without a heartbeat this long drops out
    reconcile_interval_s: float = Field(default=2.0, gt=0)  # how often a node catches connections up
    auto_migrate: bool = True  # bring the schema to the latest migration on start

    # Identity (contract section 1).
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None  # PEM text, or a path to a PEM file
    jwt_algorithms: CommaList = ["HS256"]
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_s: float = Field(default=10.0, ge=0, le=300)

    # WebSocket limits (contract section 2).
    allowed_origins: CommaList = []
    max_connections_per_user: int = Field(default=20, ge=1)
    max_message_bytes: int = Field(default=65536, ge=256)
    send_queue_size: int = Field(default=1024, ge=8)
    auth_timeout_s: float = Field(default=5.0, gt=0)
    client_rate_per_s: float = Field(default=20.0, gt=0)
    client_rate_burst: int = Field(default=40, ge=1)
    replay_limit: int = Field(default=1000, ge=1)
    token_expiry_warning_s: float = Field(default=60.0, ge=0)
    ws_ping_interval_s: float = Field(default=20.0, gt=0)
    ws_ping_timeout_s: float = Field(default=20.0, gt=0)

    # HTTP.
    max_body_bytes: int = Field(default=262144, ge=1024)
    stats_require_admin: bool = False
    metrics_require_admin: bool = False

    # Storage.
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"

    log_level: str = "info"
    # The browser client and demo dashboard; by default the repository's ``static/`` folder.
    static_dir: Path | None = None

    @field_validator("jwt_algorithms", "allowed_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def resolved_static_dir(self) -> Path:
        return self.static_dir or Path(__file__).resolve().parents[1] / "static"

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file in the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'notify.db').resolve()}"
