"""The one JSON error body of every error answer:
{"status": 404, "error": "scene_not_found", "message": "...", "details": [...]}"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse


class ErrorResponse(JSONResponse):
    """JSON in ASCII: an error may quote what the request sent, and a lone surrogate
    (valid in a JSON string, `"\\ud800"`) cannot be written as UTF-8; escaped, it goes back as
    it came instead of failing the error answer itself with a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_body(status: int, error: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "error": error, "message": message}
    if details is not None:
        body["details"] = details
    return body


def error_response(
    status: int, error: str, message: str, details: Any = None, headers: Any = None
) -> JSONResponse:
    return ErrorResponse(error_body(status, error, message, details), status, headers=headers)
