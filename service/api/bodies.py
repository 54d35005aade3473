"""The one JSON error body of every error answer:
{"status": 404, "error": "scene_not_found", "message": "...", "details": [...]}"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def error_body(status: int, error: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "error": error, "message": message}
    if details is not None:
        body["details"] = details
    return body


def error_response(
    status: int, error: str, message: str, details: Any = None, headers: Any = None
) -> JSONResponse:
    return JSONResponse(error_body(status, error, message, details), status, headers=headers)
