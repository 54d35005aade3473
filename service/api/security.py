"""Access control: an API key from settings guards the admin endpoints and the scene writes
(which a write key may make too), and the read endpoints when `read_access` is `key`. The key
comes through FastAPI's security classes, so the OpenAPI document declares where it is
needed."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

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


API_KEY = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    description="The API key (GRN_API_KEY, or GRN_WRITE_KEY for scene writes) in a header.",
    auto_error=False,
)
BEARER = HTTPBearer(
    scheme_name="Bearer",
    description="The same key as `Authorization: Bearer KEY`.",
    auto_error=False,
)
"""The two ways of sending the key, declared so that the OpenAPI document lists them as
security schemes (the /docs page's Authorize) and each keyed operation as needing one. Both
answer None when absent: `_check` decides, with this service's messages and statuses."""

HeaderKey = Annotated[str | None, Security(API_KEY)]
BearerKey = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def presented_key(header: str | None, bearer: HTTPAuthorizationCredentials | None) -> str | None:
    """The key sent as `X-API-Key`, else as `Authorization: Bearer` (any case), else None."""
    if header:
        return header
    return bearer.credentials if bearer else None


def _check(request: Request, given: str | None, what: str, *, writer: bool = False) -> None:
    settings: Settings = request.app.state.settings
    expected = [settings.access.api_key.get_secret_value()]
    if writer:
        expected.append(settings.access.write_key.get_secret_value())
    expected = [key for key in expected if key]
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


async def require_admin(request: Request, header: HeaderKey, bearer: BearerKey) -> None:
    """Async, like every dependency here: FastAPI runs a plain `def` dependency in a worker
    thread, one hop per dependency per request (service/api/deps.py)."""
    _check(request, presented_key(header, bearer), "admin endpoints")


async def require_writer(request: Request, header: HeaderKey, bearer: BearerKey) -> None:
    """Adding, correcting and removing scenes: the admin key or the write key."""
    _check(request, presented_key(header, bearer), "scene writes", writer=True)


async def require_reader(request: Request, header: HeaderKey, bearer: BearerKey) -> None:
    """The read endpoints under GRN_READ_ACCESS=key; `create_app` gives it to them only
    then, so that with open reads they neither check nor declare a key."""
    _check(request, presented_key(header, bearer), "these endpoints")
