"""JSON Web Tokens: the signing key, verification for the server, minting for the CLI and tests.

All use of PyJWT lives here, and its errors become :class:`AuthError` with a reason a client can show.
A token's ``scope`` claim (space-separated, OAuth style) says which privileged routes it may call:
:data:`PUBLISH`, :data:`WEBHOOK`, :data:`ADMIN` (everything; what ``role: "admin"`` means). Every token
acts for its own user (``sub``) whatever its scopes. Imports ``config``, ``errors`` and ``secretfile``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jwt

from .config import Settings
from .errors import AuthError
from .secretfile import read_or_create

SECRET_FILE = "jwt_secret"
MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 8192
_HMAC = {"HS256", "HS384", "HS512"}
_ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
PUBLISH = "notify:publish"  # publish to users, and broadcast
WEBHOOK = "notify:webhook"  # POST /api/sms/inbound only
ADMIN = "notify:admin"  # everything
SCOPES = (PUBLISH, WEBHOOK, ADMIN)
MAX_SCOPES = 32


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for."""

    user_id: str
    is_admin: bool  # role admin, or the notify:admin scope
    expires_at: float
    issued_at: float | None = None  # the iat claim, for revocation
    scopes: frozenset[str] = field(default_factory=frozenset)

    def allows(self, scope: str) -> bool:
        """May this token call a route that needs ``scope``? An admin may call every route."""
        return self.is_admin or scope in self.scopes


def load_or_create_secret(data_dir: Path) -> str:
    """The embedded default's HMAC secret: made once, kept in the data folder with mode 0600; a secret
    file that group or others may read is refused (``secretfile.UnsafeSecretFile``)."""
    made = read_or_create(data_dir / SECRET_FILE, lambda: (secrets.token_urlsafe(48) + "\n").encode())
    return made.decode().strip()


def require_audience(settings: Settings) -> None:
    """Public-key tokens come from another service, whose key may sign tokens for others too: without an
    audience to check, any of them would be accepted here. Refuse to start instead."""
    if set(settings.jwt_algorithms) & _ASYMMETRIC and not settings.jwt_audience:
        raise ValueError("NOTIFY_JWT_AUDIENCE is required with public-key algorithms "
                         f"({','.join(settings.jwt_algorithms)}): set it to the aud your tokens carry for this service")


def _verification_key(settings: Settings) -> str | bytes:
    algorithms = set(settings.jwt_algorithms)
    if not algorithms or not algorithms <= _HMAC | _ASYMMETRIC:
        raise ValueError(f"NOTIFY_JWT_ALGORITHMS must name only {sorted(_HMAC | _ASYMMETRIC)}")
    if algorithms <= _HMAC:
        secret = signing_secret(settings)
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"NOTIFY_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        return secret
    if algorithms & _HMAC:
        # One key for both families is exactly the algorithm-confusion hole; refuse to start.
        raise ValueError("NOTIFY_JWT_ALGORITHMS may not mix HMAC and public-key algorithms")
    if not settings.jwt_public_key:
        raise ValueError("NOTIFY_JWT_PUBLIC_KEY is required for public-key algorithms")
    key = settings.jwt_public_key.strip()
    if not key.startswith("-----BEGIN"):
        try:
            key = Path(key).read_text()
        except OSError as exc:
            raise ValueError(f"NOTIFY_JWT_PUBLIC_KEY: cannot read {key}: {exc.strerror}") from None
    # A key PyJWT cannot use would refuse every token at runtime; refuse to start instead.
    for name in algorithms:
        try:
            jwt.get_algorithm_by_name(name).prepare_key(key)
        except jwt.PyJWTError:
            raise ValueError(f"NOTIFY_JWT_PUBLIC_KEY is not a usable {name} public key") from None
    return key


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value; None for anything else."""
    scheme, _, token = (header or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def signing_secret(settings: Settings) -> str:
    """The HMAC secret: ``NOTIFY_JWT_SECRET`` if set, else the data folder's."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    return load_or_create_secret(settings.data_dir)


class TokenVerifier:
    """Verifies tokens exactly as contract section 1 says; built once per app.

    A backend publishes with the same token many times a second, and checking a signature costs more than
    the rest of a publish's routing: a verified token's identity is kept (at most ``MAX_CACHED``, keyed by
    the whole token) and served until its ``exp`` plus the leeway. Revocation is checked on every use,
    after this (``Services.identify``), so a revoked token stops working at once, cached or not."""

    MAX_CACHED = 10_000

    def __init__(self, settings: Settings) -> None:
        self._key = _verification_key(settings)
        self._algorithms = list(settings.jwt_algorithms)
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_s
        self._verified: dict[str, Identity] = {}

    def verify(self, token: str | None) -> Identity:
        if not token:
            raise AuthError("token missing")
        identity = self._verified.get(token)
        if identity is not None:
            if time.time() <= identity.expires_at + self._leeway:
                return identity
            del self._verified[token]
        identity = self._decode(token)
        if len(self._verified) >= self.MAX_CACHED:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = identity
        return identity

    def _decode(self, token: str) -> Identity:
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("token too long")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token not yet valid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim} claim") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token issuer not accepted") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("token algorithm not accepted") from None
        except jwt.InvalidSignatureError:
            raise AuthError("token signature invalid") from None
        except jwt.PyJWTError:
            raise AuthError("token invalid") from None
        return _identity(claims)


def _identity(claims: dict) -> Identity:
    user = claims.get("sub")
    if user is None:
        user = claims.get("user_id")  # the origin document's tokens
    if isinstance(user, int) and not isinstance(user, bool):
        user = str(user)
    if not isinstance(user, str) or not user or len(user) > 128:
        raise AuthError("token has no usable sub or user_id claim")
    exp = claims["exp"]
    if not isinstance(exp, int | float):
        raise AuthError("token exp invalid")
    iat = claims.get("iat")
    issued = float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None
    scopes = _scopes(claims.get("scope"))
    admin = claims.get("role") == "admin" or ADMIN in scopes
    if admin:
        scopes |= {ADMIN}
    return Identity(user_id=user, is_admin=admin, expires_at=float(exp), issued_at=issued, scopes=frozenset(scopes))


def _scopes(claim: object) -> set[str]:
    """The ``scope`` claim: space-separated (RFC 8693), or a list of strings as some issuers send."""
    if claim is None:
        return set()
    names = claim.split() if isinstance(claim, str) else claim if isinstance(claim, list) else None
    if names is None or len(names) > MAX_SCOPES or not all(isinstance(name, str) for name in names):
        raise AuthError("token scope invalid")
    return set(names)


def mint_token(
    settings: Settings,
    user_id: str,
    *,
    admin: bool = False,
    ttl_s: float = 3600,
    scopes: Sequence[str] = (),
    extra: dict | None = None,
) -> str:
    """Sign an HS256-family token with the service's own secret (for the CLI, demos and tests)."""
    algorithm = settings.jwt_algorithms[0]
    if algorithm not in _HMAC:
        raise ValueError("minting needs an HMAC algorithm; the web app mints public-key tokens")
    now = int(time.time())
    claims: dict = {"sub": user_id, "iat": now, "exp": now + int(ttl_s)}
    if admin:
        claims["role"] = "admin"
    if scopes:
        claims["scope"] = " ".join(scopes)
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    claims.update(extra or {})
    return jwt.encode(claims, signing_secret(settings), algorithm=algorithm)
