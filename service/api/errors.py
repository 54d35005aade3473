"""The map from domain exceptions to HTTP statuses and the one error body
(`service.api.bodies`); installed on the app by `install`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from index.results import IndexSearchError
from index.stores import (
    IndexModelMismatchError,
    IndexNotReadyError,
    StoreBusyError,
    UnknownSceneError,
    VectorStoreUnavailableError,
)
from model.imageio import InvalidImageError
from service.api.bodies import error_response
from service.api.schemas.common import ErrorBody
from service.api.uploads import UploadTooLargeError
from service.errors import BadRequestError, SceneNotFoundError
from service.jobs.queue import JobConflictError, NoSuchJobError
from service.runtime import OverloadedError, ServiceNotReadyError
from service.storage.concepts import ConceptExistsError, ConceptNotFoundError
from service.usecases.concept import ConceptError
from service.usecases.regions import RegionError
from service.usecases.saved_concepts import ConceptNameError, ConceptStaleError
from service.usecases.text import TextNotUnderstoodError, TextSearchUnavailableError
from service.usecases.writes import ArchiveStoreError, DuplicateScenesError, SceneConflictError

log = logging.getLogger("grn.errors")


def error_table() -> list[tuple[type[BaseException], int, str]]:
    """Domain exceptions -> (HTTP status, error code), the first match wins."""

    return [
        (UploadTooLargeError, 413, "too_large"),
        (InvalidImageError, 400, "invalid_image"),
        (RegionError, 422, "invalid_request"),  # the region does not fit the image
        (SceneNotFoundError, 404, "scene_not_found"),
        (NoSuchJobError, 404, "job_not_found"),
        (ConceptNotFoundError, 404, "concept_not_found"),
        (ConceptExistsError, 409, "concept_exists"),
        (ConceptStaleError, 409, "concept_stale"),
        (ConceptNameError, 400, "bad_concept_name"),
        (JobConflictError, 409, "job_running"),
        (SceneConflictError, 409, "scene_conflict"),
        (DuplicateScenesError, 409, "duplicate"),
        (UnknownSceneError, 404, "scene_not_indexed"),
        (IndexSearchError, 400, "bad_search"),
        (ConceptError, 400, "bad_concept"),
        (OverloadedError, 503, "overloaded"),
        (ArchiveStoreError, 503, "archive_store_unavailable"),
        (ServiceNotReadyError, 503, "not_ready"),
        (TextSearchUnavailableError, 503, "text_search_unavailable"),
        (IndexNotReadyError, 503, "index_not_ready"),
        (IndexModelMismatchError, 503, "index_model_mismatch"),
        (VectorStoreUnavailableError, 503, "vector_store_unavailable"),
        (OperationalError, 503, "database_unavailable"),
        (DBAPIError, 503, "database_unavailable"),
    ]


ERROR_DESCRIPTIONS = {
    400: "Bad input: an unreadable image, an unknown label, an impossible search",
    401: "An API key is needed (admin endpoints; reads too with GRN_READ_ACCESS=key)",
    403: "The API key is not valid",
    404: "No such scene (job, saved concept), or the scene is not in the index",
    409: "A job of this kind is still running, a scene (or saved concept) has that name, the "
    "image is one, or a saved concept is stale",
    413: "The request or an image in it is over the size or pixel limit",
    422: "Invalid parameters: `details` lists each field",
    503: "Model, index, vector store or database not ready, or the service is full "
    "(`overloaded`, with a Retry-After header)",
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the errors an endpoint can return, each with the one error
    body."""

    return {
        status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


def documented_as(
    media_type: str, description: str | None, *statuses: int
) -> dict[int | str, dict[str, Any]]:
    """`documented(*statuses)` for an endpoint whose answer (200) comes as `media_type` (an
    image, text, CSV or GeoJSON: besides JSON, or instead), said in `description` when given
    (else FastAPI's "Successful Response")."""
    answer: dict[str, Any] = {"content": {media_type: {}}}
    if description is not None:
        answer["description"] = description
    return {200: answer, **documented(*statuses)}


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, DBAPIError):
        return "the database is not answering; try again shortly"
    return str(exc)


def install(app: FastAPI) -> None:
    errors = error_table()

    async def domain(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DBAPIError):
            metrics = getattr(request.app.state, "metrics", None)
            if metrics is not None:
                metrics.database_errors.inc()
        if isinstance(exc, BadRequestError | StoreBusyError | TextNotUnderstoodError):
            return error_response(400, exc.code, str(exc))
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:  # OverloadedError: refused at once, not queued
            metrics = getattr(request.app.state, "metrics", None)
            if metrics is not None:
                metrics.rejected.labels(getattr(exc, "kind", "")).inc()
            headers = {"Retry-After": str(retry_after)}
            return error_response(503, "overloaded", str(exc), headers=headers)
        for kind, status, code in errors:
            if isinstance(exc, kind):
                if status >= 500:
                    log.warning("%s: %s", code, exc)
                details = getattr(exc, "details", None)
                return error_response(status, code, _message(exc), details)
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "an unexpected error occurred")

    async def validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"]) or "body"  # the whole body: bad JSON
        # a validator's own sentence, without pydantic's "Value error, " before it
        said = str(first["msg"]).removeprefix("Value error, ")
        return error_response(422, "invalid_request", f"{where}: {said}", details)

    async def http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
        }.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http)  # type: ignore[arg-type]
    # each kind on its own: a handler for Exception alone would run in Starlette's outermost
    # middleware, which logs the exception as a crash
    kinds: list[type[BaseException]] = [
        BadRequestError,
        StoreBusyError,
        TextNotUnderstoodError,
        *(k for k, _, _ in errors),
        Exception,
    ]
    for kind in kinds:
        app.add_exception_handler(kind, domain)  # type: ignore[arg-type]
