"""When a scene was acquired: instants read from text as archives, GeoTIFF tags, STAC items
and the API give them, kept in UTC.

ISO 8601 (`2024-06-15`, `2024-06-15T10:30:00Z`, `2024-06-15T10:30:00+02:00`) and the TIFF
form (`2024:06:15 10:30:00`, TIFFTAG_DATETIME's) are read; a date is its first moment, a time
without a zone is UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

ACQUIRED_TAGS = ("ACQUISITIONDATETIME", "TIFFTAG_DATETIME")
"""The GeoTIFF metadata items that say when the pixels were taken, the most specific first."""
INSTANT_EXAMPLES = ["2026-12-04", "2026-12-04T10:30:00Z", "2026-12-04T11:30:00+01:00"]


class TimeError(ValueError):
    """A date or time that does not parse."""


def utc(moment: datetime) -> datetime:
    """An instant in UTC; a time without a zone is read as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_instant(value: object) -> datetime:
    """An ISO 8601 (or TIFF `YYYY:MM:DD HH:MM:SS`) date or date and time as an instant in
    UTC; TimeError saying how to write one otherwise."""
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 10 and text[4] == ":" and text[7] == ":":  # TIFF's form
            text = f"{text[:4]}-{text[5:7]}-{text[8:]}"
        try:
            return utc(datetime.fromisoformat(text))
        except ValueError:
            pass
    raise TimeError(
        f"{value!r} is not an ISO 8601 date or date and time; write it as "
        + ", ".join(INSTANT_EXAMPLES)
    )


def acquired_from_tags(tags: dict[str, str]) -> datetime | None:
    """When a GeoTIFF's pixels were taken, from its metadata (`ACQUIRED_TAGS`); None when it
    does not say; TimeError for a value that does not parse."""
    for name in ACQUIRED_TAGS:
        if tags.get(name, "").strip():
            try:
                return parse_instant(tags[name])
            except TimeError as exc:
                raise TimeError(f"{name}: {exc}") from exc
    return None
