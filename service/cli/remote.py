"""`grn search --url`, `grn classify --url`, `grn same-place --url` and `grn concept --url`:
the same questions asked of a running service over HTTP (sending GRN_API_KEY when set)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _client(url: str) -> Any:
    import httpx

    from service.settings import get_settings

    key = get_settings().access.api_key.get_secret_value()
    return httpx.Client(
        base_url=url.rstrip("/"), timeout=120, headers={"X-API-Key": key} if key else {}
    )


def _answer(response: Any) -> dict[str, Any]:
    """A service's JSON answer, or its error message as a one-line failure."""
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400:
        raise ValueError(
            f"the service answered {response.status_code}: {body.get('message', response.text)}"
        )
    return body


def remote_search(
    url: str, image: Path | None, scene: int | None, request: dict[str, Any]
) -> dict[str, Any]:
    """POST /search's answer from the service at `url` to POST /search's fields."""
    import httpx

    try:
        with _client(url) as client:
            if image is not None:
                form = {
                    key: ",".join(map(str, value))
                    if isinstance(value, list)
                    else json.dumps(value)
                    if isinstance(value, dict)
                    else str(value)
                    for key, value in request.items()
                    if key != "include_query"
                }
                response = client.post(
                    "/search", files={"file": (image.name, image.read_bytes())}, data=form
                )
            else:
                query = {} if scene is None else {"scene_id": str(scene)}
                response = client.post("/search", json={**query, **request})
    except httpx.HTTPError as exc:
        raise OSError(f"the service at {url} cannot be reached: {exc}") from exc
    return _answer(response)


def remote_post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The answer of the service at `url` to a JSON POST of `body` to `path`."""
    return _asked(url, lambda client: client.post(path, json=body))


def remote_get(url: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """The answer of the service at `url` to a GET of `path` with these query parameters."""
    return _asked(url, lambda client: client.get(path, params=params))


def remote_send(
    url: str, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The answer of the service at `url` to `method` on `path` with the JSON `body` (an
    empty answer, as a 204's, is {})."""
    return _asked(url, lambda client: client.request(method, path, json=body))


def _asked(url: str, ask: Callable[[Any], Any]) -> dict[str, Any]:
    """The JSON answer to the request `ask` sends through a client of the service at `url`;
    a service out of reach is an `OSError`."""
    import httpx

    try:
        with _client(url) as client:
            response = ask(client)
    except httpx.HTTPError as exc:
        raise OSError(f"the service at {url} cannot be reached: {exc}") from exc
    return _answer(response)


def remote_classify(url: str, images: list[Path]) -> list[dict[str, Any]]:
    """POST /classify's results from the service at `url`."""
    import httpx

    try:
        with _client(url) as client:
            files = [("file", (path.name, path.read_bytes())) for path in images]
            body = _answer(client.post("/classify", files=files))
    except httpx.HTTPError as exc:
        raise OSError(f"the service at {url} cannot be reached: {exc}") from exc
    results: list[dict[str, Any]] = body["results"]
    return results
