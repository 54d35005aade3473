"""Access control: an API key from settings guards the admin endpoints, and the read
endpoints too when `read_access` is `key`."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from service.settings import Settings

WEAK_KEYS = {"", "change-me", "changeme", "secret", "admin", "password", "grn"}
MIN_KEY_LENGTH = 16


class InsecureSettingsError(RuntimeError):
    """Production settings that would leave the service open."""


def check_production(settings: Settings) -> None:
    """Refuse to start in production with a default, empty or short API key."""
    if settings.access.environment != "production":
        return
    key = settings.access.api_key.get_secret_value()
    write_key = settings.access.write_key.get_secret_value()
    if write_key and (write_key.lower() in WEAK_KEYS or len(write_key) < MIN_KEY_LENGTH):
        raise InsecureSettingsError(
            f"GRN_WRITE_KEY, when set, must be a secret of at least {MIN_KEY_LENGTH} characters"
        )
    if key.lower() in WEAK_KEYS or len(key) < MIN_KEY_LENGTH:
        raise InsecureSettingsError(
            f"GRN_ENVIRONMENT=production needs GRN_API_KEY set to a secret of at least "
            f"{MIN_KEY_LENGTH} characters (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`)"
        )


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials.strip()
    return None


def _check(request: Request, what: str, *, writer: bool = False) -> None:
    settings: Settings = request.app.state.settings
    expected = [settings.access.api_key.get_secret_value()]
    if writer:
        expected.append(settings.access.write_key.get_secret_value())
    expected = [key for key in expected if key]
    given = presented_key(request)
    if given is None:
        raise HTTPException(
            401,
            f"{what} need an API key: send it as `X-API-Key` or `Authorization: Bearer`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not expected:
        keys = "GRN_API_KEY or GRN_WRITE_KEY" if writer else "GRN_API_KEY"
        raise HTTPException(403, f"{what} are disabled: no {keys} is configured")
    # every key compared, so the time taken does not say which one nearly matched
    matches = [hmac.compare_digest(given.encode(), key.encode()) for key in expected]
    if not any(matches):
        raise HTTPException(403, "the API key is not valid")


async def require_admin(request: Request) -> None:
    """Async, like every dependency here: FastAPI runs a plain `def` dependency in a worker
    thread, one hop per dependency per request (service/api/deps.py)."""
    _check(request, "admin endpoints")


async def require_writer(request: Request) -> None:
    """Adding, correcting and removing scenes: the admin key or the write key."""
    _check(request, "scene writes", writer=True)


async def require_reader(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if settings.access.read_access == "key":
        _check(request, "these endpoints")
