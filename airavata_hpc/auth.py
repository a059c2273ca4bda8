"""Who is calling: HS256 bearer tokens and ``X-API-Key`` keys.

The JWT secret comes from ``AIRAVATA_JWT_SECRET``, else the configuration, else a secret the
service generates on first start and keeps in the database, so tokens made by
``airavata-hpc token create`` against the same database are accepted by the server.
API keys are stored as SHA-256 digests; the key itself is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from airavata_hpc.errors import ApiError
from airavata_hpc.models import ApiKey, Setting, User

log = logging.getLogger(__name__)

JWT_ALGORITHM = "HS256"
JWT_SECRET_SETTING = "jwt_secret"
API_KEY_PREFIX = "ahk_"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller; ``username`` is what ``owner_id`` holds."""

    username: str
    is_admin: bool = False


ANONYMOUS_ADMIN = Principal("anonymous", is_admin=True)

# Tokens already verified, with their expiry: a gateway sends the same token with every call,
# and checking its signature again costs more than the lookup it guards. Keyed by the secret
# too, so a changed secret invalidates everything; bounded by clearing when full.
_verified: dict[tuple[str, str], tuple[Principal, float]] = {}
_VERIFIED_MAX = 10_000


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


def jwt_secret(configured: str | None = None) -> str:
    """The secret in force: environment, configuration, or the one kept in the database."""
    secret = os.environ.get("AIRAVATA_JWT_SECRET") or configured
    if secret:
        return secret
    row = Setting.get_or_none(Setting.key == JWT_SECRET_SETTING)
    if row:
        return row.value
    Setting.insert(
        key=JWT_SECRET_SETTING, value=secrets.token_urlsafe(48)
    ).on_conflict_ignore().execute()
    log.info("generated a JWT secret and stored it in the database")
    return Setting.get(Setting.key == JWT_SECRET_SETTING).value


def ensure_user(username: str, is_admin: bool = False) -> User:
    """Create the user if needed; an existing user is promoted when ``is_admin`` is asked."""
    user, created = User.get_or_create(username=username, defaults={"is_admin": is_admin})
    if not created and is_admin and not user.is_admin:
        user.is_admin = True
        user.save()
    return user


def create_token(secret: str, username: str, is_admin: bool, ttl: timedelta) -> str:
    now = datetime.now(UTC)
    claims = {"sub": username, "admin": is_admin, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def create_api_key(username: str) -> str:
    """Make a key for ``username`` (created if missing) and return it; only its hash is kept."""
    user = ensure_user(username)
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    ApiKey.create(user=user, key_hash=_digest(key), prefix=key[:12])
    return key


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def authenticate(secret: str, authorization: str | None, api_key: str | None) -> Principal:
    """Resolve the request's credentials; raise a 401 :class:`ApiError` when they fail."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("Authorization header must be 'Bearer <token>'")
        cached = _verified.get((secret, token))
        if cached is not None and cached[1] > time.time():
            return cached[0]
        try:
            claims = jwt.decode(
                token.strip(),
                secret,
                algorithms=[JWT_ALGORITHM],
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthorized("token has expired; create a new one") from exc
        except jwt.InvalidTokenError as exc:
            raise unauthorized(f"invalid token: {exc}") from exc
        principal = Principal(str(claims["sub"]), bool(claims.get("admin", False)))
        if len(_verified) >= _VERIFIED_MAX:
            _verified.clear()
        _verified[(secret, token)] = (principal, float(claims["exp"]))
        return principal

    if api_key:
        row = (
            ApiKey.select(ApiKey, User)
            .join(User)
            .where(ApiKey.key_hash == _digest(api_key), ApiKey.revoked == False)  # noqa: E712
            .first()
        )
        if row is None:
            raise unauthorized("unknown or revoked API key")
        return Principal(row.user.username, row.user.is_admin)

    raise unauthorized(
        "credentials required: send 'Authorization: Bearer <token>' or 'X-API-Key: <key>'"
    )


def parse_ttl(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``1h``, ``7d`` (a bare number is seconds)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    unit = text[-1] if text and text[-1] in units else "s"
    number = text[:-1] if text and text[-1] in units else text
    try:
        value = float(number)
    except ValueError as exc:
        raise ValueError(f"bad duration {text!r}: use e.g. 30m, 1h or 7d") from exc
    if value <= 0:
        raise ValueError("duration must be positive")
    return timedelta(seconds=value * units[unit])
