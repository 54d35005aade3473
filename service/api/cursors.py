"""The opaque cursors of `GET /scenes`: where the next page starts (the last scene's sort
key and id, `service.storage.listing.Seek`), its position and the total counted on the
walk's first page, and a digest of the filters it was made for, as base64url JSON.

A cursor that this module did not make, or one made for another order or other filters, is
refused with a 400 (`bad_cursor`) that says which and what to do.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.errors import BadRequestError
from service.storage.listing import BY_TIME, ORDERS, Order, Seek

VERSION = 1
MAX_ID = 2**63 - 1
MAX_NAME = 512
"""The longest image name SQL holds (`scenes.name`)."""
RESTART = "start again without a cursor"


class BadCursorError(BadRequestError):
    """A cursor that is malformed, or made for another order or other filters."""

    def __init__(self, message: str) -> None:
        super().__init__(f"cursor: {message}", code="bad_cursor")


@dataclass(frozen=True)
class Cursor:
    seek: Seek
    position: int
    """Scenes listed before the page it starts."""
    total: int
    """The scenes that passed the filters when the walk's first page was counted."""
    filters: str
    """`SceneSelection.fingerprint()` of the listing it was made for."""

    def encode(self) -> str:
        body = {
            "v": VERSION,
            "o": self.seek.order,
            "k": _key_text(self.seek.key),
            "i": str(self.seek.scene_id),
            "p": self.position,
            "t": self.total,
            "f": self.filters,
        }
        text = json.dumps(body, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(text).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, *, order: Order, filters: str) -> Cursor:
        """The cursor `text` for a listing in `order` with filters of digest `filters`."""
        body = _body(text)
        made_for = body["o"]
        if made_for != order:
            raise BadCursorError(
                f"it was made for order={made_for}, and this request asks order={order}; "
                f"send order={made_for} with it, or {RESTART}"
            )
        if body["f"] != filters:
            raise BadCursorError(
                "it was made for other filters (or another q) than this request's; send "
                f"the filters of the page that gave it, or {RESTART}"
            )
        scene_id = _integer(body["i"], "scene id")
        key: int | str | datetime | None = body["k"]
        if order == "id":
            key = _integer(body["k"], "id")
        elif order in BY_TIME:
            key = _instant(body["k"])
        elif len(body["k"]) > MAX_NAME:
            raise BadCursorError(f"its name is longer than {MAX_NAME} characters; {RESTART}")
        return cls(Seek(order, key, scene_id), body["p"], body["t"], filters)


def _key_text(key: int | str | datetime | None) -> str:
    """A sort key as the cursor carries it: an acquisition time in ISO 8601 (UTC), an empty
    text for a time not known."""
    if key is None:
        return ""
    return key.isoformat() if isinstance(key, datetime) else str(key)


def _instant(text: str) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadCursorError(f"its time is not an ISO 8601 instant; {RESTART}") from exc
    if when.tzinfo is None:
        raise BadCursorError(f"its time has no zone; {RESTART}")
    return when


def _body(text: str) -> dict[str, Any]:
    """The cursor's fields, checked for their types; a BadCursorError otherwise."""
    malformed = BadCursorError(
        "not a cursor of this service: send a page's next_cursor as it came, or " + RESTART
    )
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        body = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise malformed from exc
    fields = {"v": int, "o": str, "k": str, "i": str, "p": int, "t": int, "f": str}
    if not isinstance(body, dict) or set(body) != set(fields):
        raise malformed
    if any(type(body[name]) is not kind for name, kind in fields.items()):
        raise malformed
    if body["v"] != VERSION:
        raise BadCursorError(f"made by another version of the service (v{body['v']}); {RESTART}")
    if body["o"] not in ORDERS or not 0 <= body["p"] <= MAX_ID or not 0 <= body["t"] <= MAX_ID:
        raise malformed
    return body


def _integer(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_ID:
        raise BadCursorError(f"its {what} is not a 63-bit scene id; {RESTART}")
    return int(text)
