"""The web service: `create_app(settings)` builds the FastAPI application.

The model, index and database engine are loaded in the lifespan and kept on `app.state`;
routes reach them through dependencies. Model work runs in the batcher's thread, SQL and
image decoding in worker threads: the event loop only routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import faiss
import numpy as np
from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from index.backends import MilvusSearcher, VectorFilter
from model.imageio import decode_image
from service import errors
from service.catalog import Catalog, SceneFilter
from service.db import Scene, make_engine
from service.errors import BadRequestError, error_response
from service.jobs import JobRunner, NoSuchJobError
from service.migrate import current_revision, head_revision
from service.observability import Metrics, RequestLog, configure_logging
from service.runtime import Batcher, Runtime, Snapshot, tune_allocator
from service.schemas import (
    MAX_SCENE_ID,
    ClassifyResponse,
    ErrorBody,
    Health,
    Hit,
    ImageClassification,
    JobOut,
    LabelCount,
    LabelScore,
    LabelsResponse,
    Readiness,
    ReloadResponse,
    SceneOut,
    ScenePage,
    SearchRequest,
    SearchResponse,
)
from service.security import check_production, require_admin, require_reader
from service.settings import Settings, get_settings
from service.uploads import UploadTooLargeError, decode_upload

log = logging.getLogger("grn.app")
STATIC = Path(__file__).resolve().parent / "static"
REPO_ROOT = Path(__file__).resolve().parents[1]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Bad input: an unreadable image, an unknown label, an impossible search"),
        (404, "No such scene"),
        (401, "An API key is needed"),
        (403, "The API key is not valid"),
        (413, "Upload over the size or pixel limit"),
        (422, "Invalid parameters"),
        (503, "Model, index or database not ready"),
    )
}


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether or not the client sent a
    Content-Length, before the multipart parser spools them anywhere."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise UploadTooLargeError(f"the request body is over {self.limit} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except UploadTooLargeError:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            errors.error_body(
                413, "too_large", f"the request body is over the limit of {self.limit} bytes"
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_production(settings)
    configure_logging(settings.log_format, settings.log_level)
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    if settings.tune_allocator:
        tune_allocator()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        runtime = Runtime(settings)
        batcher = Batcher(
            enabled=settings.batching,
            max_batch_size=settings.max_batch_size,
            wait_ms=settings.batch_wait_ms,
            observer=metrics.observe_batch,
        )
        app.state.settings = settings
        app.state.metrics = metrics
        app.state.jobs = JobRunner(REPO_ROOT)
        app.state.engine = engine
        app.state.catalog = Catalog(engine)
        runtime.run_torch = batcher.call  # models load on the model thread
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(
                max_workers=settings.io_threads,
                thread_name_prefix="grn-io",
                initializer=_single_threaded_faiss,
            )
        )
        app.state.runtime = runtime
        app.state.batcher = batcher
        batcher.start()
        await asyncio.to_thread(runtime.refresh)
        await asyncio.to_thread(_register, app)
        poller = asyncio.create_task(_poll(app)) if settings.index_poll_seconds > 0 else None
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
            await app.state.jobs.stop()
            await batcher.stop()
            engine.dispose()

    app = FastAPI(
        title="GRN scene retrieval",
        version="0.1.0",
        description=(
            "Multi-label classification and content-based retrieval of remote-sensing scenes "
            "with the Graph Relation Network. Every error answers with the same JSON body "
            "(`status`, `error`, `message`, optional `details`)."
        ),
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    errors.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key", "Authorization", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(RequestLog, metrics=metrics)  # outermost: sees every response
    _routes(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _single_threaded_faiss() -> None:
    """FAISS answers single queries; its OpenMP team, spinning after each search, took the
    cores from the model (a search by image cost 27 ms against 14 ms for its classify)."""
    faiss.omp_set_num_threads(1)


async def _poll(app: FastAPI) -> None:
    runtime: Runtime = app.state.runtime
    while True:
        await asyncio.sleep(app.state.settings.index_poll_seconds)
        try:
            if await asyncio.to_thread(runtime.refresh):
                await asyncio.to_thread(_register, app)
        except Exception:  # the poller must outlive any one failure
            log.exception("index poll failed")


def _register(app: FastAPI) -> None:
    """Record the model and index in service in SQL (best effort: the database may be down)."""
    snapshot = app.state.runtime.snapshot
    if snapshot is None:
        return
    searcher = snapshot.searcher
    try:
        count = searcher.count
        app.state.metrics.served(snapshot.model_version, snapshot.index_version, count)
        app.state.catalog.register(
            snapshot.card.version,
            snapshot.card.backbone,
            str(snapshot.model_file),
            snapshot.card.to_json(),
            searcher.version,
            searcher.factory,
            count,
            app.state.runtime.index_location,
            searcher.created,
        )
    except Exception as exc:  # registering is bookkeeping, never a reason to fail
        log.warning("could not record the model and index versions in SQL: %s", exc)


def get_catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_batcher(request: Request) -> Batcher:
    batcher: Batcher = request.app.state.batcher
    return batcher


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


CatalogDep = Annotated[Catalog, Depends(get_catalog)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SceneId = Annotated[int, PathParam(ge=0, le=MAX_SCENE_ID, description="A scene id.")]


async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


def _elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _scene_urls(request: Request, scene_id: int) -> tuple[str, str]:
    return (
        str(request.url_for("scene_image", scene_id=scene_id)),
        str(request.url_for("scene_thumbnail", scene_id=scene_id)),
    )


def _scene_out(request: Request, scene: Scene) -> SceneOut:
    image_url, thumbnail_url = _scene_urls(request, scene.id)
    return SceneOut(
        id=scene.id,
        image=scene.name,
        scene=scene.scene,
        split=scene.split,
        labels=[label.name for label in scene.labels],
        width=scene.width,
        height=scene.height,
        image_url=image_url,
        thumbnail_url=thumbnail_url,
    )


async def _read_uploads(
    request: Request, settings: Settings, *, max_files: int
) -> tuple[list[tuple[str, bytes]], dict[str, list[str]]]:
    """The files (field `file`, possibly repeated) and the other form fields of a multipart
    request."""
    try:
        form = await request.form(max_files=max_files, max_fields=100)
    except UploadTooLargeError:
        raise
    except Exception as exc:  # the multipart parser's errors: malformed body, too many parts
        raise BadRequestError(f"cannot read the multipart body: {exc}", "bad_multipart") from exc
    files: list[tuple[str, bytes]] = []
    fields: dict[str, list[str]] = {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "file":
                    raise BadRequestError(f"unexpected file field {key!r}; use 'file'")
                files.append((value.filename or "upload", await value.read()))
            else:
                fields.setdefault(key, []).append(value)
    finally:
        await form.close()
    if not files:
        raise BadRequestError("no image: send it as the multipart field 'file'", "missing_file")
    if len(files) > max_files:
        raise BadRequestError(f"at most {max_files} images per request, got {len(files)}")
    return files, fields


async def _decode_all(files: list[tuple[str, bytes]], settings: Settings) -> list[np.ndarray]:
    def decode(item: tuple[str, bytes]) -> np.ndarray:
        name, data = item
        return decode_upload(
            data,
            name,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
        )

    return list(await asyncio.gather(*(asyncio.to_thread(decode, f) for f in files)))


def _label_scores(
    snapshot: Snapshot, probabilities: np.ndarray
) -> tuple[list[LabelScore], list[str]]:
    card = snapshot.card
    scores = [
        LabelScore(label=name, probability=round(float(p), 6), present=bool(p >= t))
        for name, p, t in zip(card.label_names, probabilities, card.thresholds, strict=True)
    ]
    return scores, [s.label for s in scores if s.present]


FORM_LISTS = ("labels_all", "labels_any", "exclude_ids")


def _search_form(fields: dict[str, list[str]]) -> dict[str, Any]:
    """Form fields -> SearchRequest fields: lists may repeat a field or separate by commas."""
    out: dict[str, Any] = {}
    for key, values in fields.items():
        if key in FORM_LISTS:
            out[key] = [v.strip() for value in values for v in value.split(",") if v.strip()]
        elif len(values) > 1:
            raise BadRequestError(f"the form field {key!r} is given {len(values)} times")
        elif values[0] != "":
            out[key] = values[0]
    return out


READER = [Depends(require_reader)]
ADMIN = [Depends(require_admin)]


def _routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The web page."""
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get(
        "/metrics",
        tags=["operations"],
        dependencies=READER,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def metrics(request: Request) -> Response:
        """Prometheus metrics of this process."""
        registry = request.app.state.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> Health:
        """The process answers."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Readiness, tags=["operations"])
    async def readyz(runtime: RuntimeDep, catalog: CatalogDep) -> Any:
        """Model, index and database ready (503 with the reasons otherwise)."""
        reasons = []
        snapshot = runtime.snapshot
        if snapshot is None:
            reasons.append(f"model and index: {runtime.problem}")

        def database() -> tuple[str | None, int]:
            revision = current_revision(catalog.engine)
            return revision, catalog.scene_count() if revision else 0

        revision, scenes = None, 0
        try:
            revision, scenes = await in_thread(database)
        except Exception as exc:
            reasons.append(f"database: not answering ({type(exc).__name__})")
        else:
            head = head_revision()
            if revision != head:
                reasons.append(
                    f"database: schema at {revision or 'nothing'}, needs {head}; "
                    "run `grn db upgrade`"
                )
        if reasons or snapshot is None:
            return error_response(503, "not_ready", "; ".join(reasons), reasons)
        return Readiness(
            status="ready",
            model_version=snapshot.model_version,
            index_version=snapshot.index_version,
            index_count=snapshot.searcher.count,
            schema_revision=revision or "",
            scenes=scenes,
            warning=runtime.problem,
        )

    @app.post("/admin/reload", response_model=ReloadResponse, tags=["admin"], dependencies=ADMIN)
    async def reload(runtime: RuntimeDep, request: Request) -> ReloadResponse:
        """Load the newest model and index now (the service also polls for them)."""
        swapped = await in_thread(runtime.refresh)
        if swapped:
            await in_thread(_register, request.app)
        snapshot = runtime.snapshot
        return ReloadResponse(
            swapped=swapped,
            model_version=snapshot.model_version if snapshot else None,
            index_version=snapshot.index_version if snapshot else None,
            problem=runtime.problem,
        )

    @app.post(
        "/admin/reindex",
        status_code=202,
        response_model=JobOut,
        tags=["admin"],
        dependencies=ADMIN,
    )
    async def admin_reindex(
        request: Request,
        settings: SettingsDep,
        incremental: Annotated[bool, Body(embed=True)] = False,
    ) -> JobOut:
        """Start `grn reindex` over GRN_ARCHIVE_DIR with the served model (a child process);
        the new index is taken up when it completes."""
        archive = _admin_archive(settings, None)
        args = [
            "reindex",
            "--model",
            str(settings.model_path),
            "--archive",
            str(archive),
            "--index-root",
            str(settings.index_root),
            "--quiet",
            *(["--incremental"] if incremental else []),
        ]
        if settings.vector_store == "milvus":
            if not settings.milvus_uri.startswith(("http://", "https://", "tcp://")):
                raise BadRequestError(
                    f"the Milvus Lite file {settings.milvus_uri} is open in this service and "
                    "Milvus Lite lets one process open it: stop the service and run "
                    "`grn reindex --milvus`, or use a Milvus server",
                    "milvus_lite_busy",
                )
            args += ["--milvus", settings.milvus_uri, "--collection", settings.milvus_collection]
            if not incremental:
                args.append("--replace")

        async def take_up() -> None:
            if await in_thread(request.app.state.runtime.refresh):
                await in_thread(_register, request.app)

        job = request.app.state.jobs.start("reindex", args, {}, on_success=take_up)
        return JobOut(**job.describe())

    @app.post(
        "/admin/import",
        status_code=202,
        response_model=JobOut,
        tags=["admin"],
        dependencies=ADMIN,
    )
    async def admin_import(
        request: Request,
        settings: SettingsDep,
        archive: Annotated[str | None, Body(embed=True)] = None,
    ) -> JobOut:
        """Start `grn import` of an archive folder (default GRN_ARCHIVE_DIR) into SQL."""
        folder = _admin_archive(settings, archive)
        args = ["import", str(folder), "--database-url", settings.database_url, "--quiet"]
        job = request.app.state.jobs.start("import", args, {})
        return JobOut(**job.describe())

    @app.get("/admin/jobs", response_model=list[JobOut], tags=["admin"], dependencies=ADMIN)
    async def admin_jobs(request: Request) -> list[JobOut]:
        """Admin jobs started by this process, newest first."""
        jobs = sorted(request.app.state.jobs.jobs.values(), key=lambda j: -j.id)
        return [JobOut(**job.describe()) for job in jobs]

    @app.get("/admin/jobs/{job_id}", response_model=JobOut, tags=["admin"], dependencies=ADMIN)
    async def admin_job(request: Request, job_id: int) -> JobOut:
        """One admin job: status, return code and the last lines of its output."""
        job = request.app.state.jobs.jobs.get(job_id)
        if job is None:
            raise NoSuchJobError(f"no job {job_id}")
        return JobOut(**job.describe())

    @app.post(
        "/classify",
        dependencies=READER,
        response_model=ClassifyResponse,
        tags=["model"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "binary"},
                                    "description": "One or more images (repeat the field).",
                                }
                            },
                        }
                    }
                },
            }
        },
    )
    async def classify(
        request: Request, runtime: RuntimeDep, batcher: BatcherDep, settings: SettingsDep
    ) -> ClassifyResponse:
        """Labels of one or more uploaded images: every label's probability, and the labels
        at or above their thresholds."""
        start = time.perf_counter()
        snapshot = runtime.current()
        files, _ = await _read_uploads(request, settings, max_files=settings.max_images_per_request)
        images = await _decode_all(files, settings)
        outputs = await batcher.infer(snapshot, images)
        results = []
        for (name, _), out in zip(files, outputs, strict=True):
            scores, predicted = _label_scores(snapshot, out.probabilities)
            results.append(ImageClassification(filename=name, labels=scores, predicted=predicted))
        return ClassifyResponse(
            labels=results[0].labels,
            predicted=results[0].predicted,
            results=results,
            model_version=snapshot.model_version,
            elapsed_ms=_elapsed_ms(start),
        )

    search_schema = SearchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    upload_schema: dict[str, Any] = {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            **{
                key: value
                for key, value in search_schema["properties"].items()
                if key not in ("scene_id", "include_query")
            },
        },
    }

    @app.post(
        "/search",
        dependencies=READER,
        response_model=SearchResponse,
        tags=["search"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": search_schema},
                    "multipart/form-data": {"schema": upload_schema},
                },
            }
        },
    )
    async def search(
        request: Request,
        runtime: RuntimeDep,
        batcher: BatcherDep,
        catalog: CatalogDep,
        settings: SettingsDep,
    ) -> SearchResponse:
        """The archive scenes most similar to an uploaded image (multipart, field `file`, the
        other fields as form fields) or to an archive scene (JSON with `scene_id`), best
        first, with optional label, scene-folder and id filters, a minimum score and paging."""
        start = time.perf_counter()
        snapshot = runtime.current()
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            files, fields = await _read_uploads(request, settings, max_files=1)
            form = _search_form(fields)
            form.pop("include_query", None)
            try:
                params = SearchRequest.model_validate({**form, "scene_id": 0})
            except ValidationError as exc:
                raise _invalid(exc) from exc
            image = (await _decode_all(files, settings))[0]
            query = (await batcher.infer(snapshot, [image]))[0].embedding
            query_id = None
        elif content_type.startswith("application/json") or not content_type:
            try:
                params = SearchRequest.model_validate_json(await request.body())
            except ValidationError as exc:
                raise _invalid(exc) from exc
            query_id = params.scene_id
            query = (await in_thread(snapshot.searcher.vectors, [query_id]))[0]
        else:
            raise BadRequestError(
                f"unsupported content type {content_type!r}: send multipart/form-data with "
                "an image, or application/json with a scene_id",
                "unsupported_media_type",
            )
        exclude = list(params.exclude_ids)
        if query_id is not None and not params.include_query:
            exclude.append(query_id)
        scene_filter = SceneFilter(
            labels_all=params.labels_all,
            labels_any=params.labels_any,
            scene=params.scene,
            exclude_ids=exclude,
        )
        hits = await in_thread(
            _ranked_hits, snapshot, catalog, query, params.k, scene_filter, params.min_score
        )
        limit = params.limit or params.k
        page = hits[params.offset : params.offset + limit]
        end = params.offset + len(page)
        return SearchResponse(
            hits=[_hit(request, scene, score) for scene, score in page],
            total=len(hits),
            offset=params.offset,
            limit=limit,
            next_offset=end if end < len(hits) else None,
            query_id=query_id,
            model_version=snapshot.model_version,
            index_version=snapshot.index_version,
            elapsed_ms=_elapsed_ms(start),
        )

    @app.get("/scenes", response_model=ScenePage, tags=["archive"], dependencies=READER)
    async def scenes(
        request: Request,
        catalog: CatalogDep,
        labels_all: Annotated[
            list[str], Query(description="Labels that must all be present.")
        ] = [],  # noqa: B006
        labels_any: Annotated[list[str], Query(description="Labels of which one is present.")] = [],  # noqa: B006
        scene: Annotated[str | None, Query(max_length=200)] = None,
        split: Annotated[str | None, Query(pattern="^(train|val|test)$")] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> ScenePage:
        """The archive's scenes, filtered by labels, scene folder and split, by id, paged."""
        scene_filter = SceneFilter(
            labels_all=_split_commas(labels_all or []),
            labels_any=_split_commas(labels_any or []),
            scene=scene,
            split=split,
        )
        rows, total = await in_thread(catalog.page, scene_filter, offset, limit)
        end = offset + len(rows)
        return ScenePage(
            scenes=[_scene_out(request, row) for row in rows],
            total=total,
            offset=offset,
            limit=limit,
            next_offset=end if end < total else None,
        )

    @app.get("/scenes/{scene_id}", response_model=SceneOut, tags=["archive"], dependencies=READER)
    async def scene_detail(request: Request, catalog: CatalogDep, scene_id: SceneId) -> SceneOut:
        """One scene's metadata."""
        return _scene_out(request, await in_thread(catalog.scene, scene_id))

    @app.get(
        "/scenes/{scene_id}/image",
        dependencies=READER,
        name="scene_image",
        tags=["archive"],
        response_class=FileResponse,
        responses={200: {"content": {"image/*": {}}}, 304: {"description": "Not modified"}},
    )
    async def scene_image(
        request: Request, catalog: CatalogDep, settings: SettingsDep, scene_id: SceneId
    ) -> Response:
        """The scene's original image file (cacheable; ETag is its SHA-256)."""
        scene = await in_thread(catalog.scene, scene_id)
        path = await in_thread(catalog.image_path, scene)
        headers = _cache_headers(scene.checksum, settings)
        if _not_modified(request, headers["ETag"]):
            return Response(status_code=304, headers=headers)
        return FileResponse(path, media_type=scene.media_type, headers=headers)

    @app.get(
        "/scenes/{scene_id}/thumbnail",
        dependencies=READER,
        name="scene_thumbnail",
        tags=["archive"],
        responses={200: {"content": {"image/jpeg": {}}}, 304: {"description": "Not modified"}},
    )
    async def scene_thumbnail(
        request: Request, catalog: CatalogDep, settings: SettingsDep, scene_id: SceneId
    ) -> Response:
        """A JPEG thumbnail of the scene (longest side `thumbnail_size`), cached on disk."""
        scene = await in_thread(catalog.scene, scene_id)
        headers = _cache_headers(f"{scene.checksum[:32]}-{settings.thumbnail_size}", settings)
        if _not_modified(request, headers["ETag"]):
            return Response(status_code=304, headers=headers)
        data = await in_thread(_thumbnail, catalog, scene, settings)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/labels", response_model=LabelsResponse, tags=["archive"], dependencies=READER)
    async def labels(catalog: CatalogDep) -> LabelsResponse:
        """Label names and how many archive scenes carry each."""
        counts = await in_thread(catalog.label_counts)
        return LabelsResponse(labels=[LabelCount(name=n, count=c) for n, c in counts])


def _admin_archive(settings: Settings, given: str | None) -> Path:
    folder = Path(given) if given else settings.archive_dir
    if folder is None:
        raise BadRequestError("no archive given and GRN_ARCHIVE_DIR is not set", "no_archive")
    if not (folder / "labels.csv").is_file():
        raise BadRequestError(f"{folder} is not an archive: it has no labels.csv", "no_archive")
    return folder


def _invalid(exc: ValidationError) -> Exception:
    from fastapi.exceptions import RequestValidationError

    return RequestValidationError(exc.errors())


def _split_commas(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _ranked_hits(
    snapshot: Snapshot,
    catalog: Catalog,
    query: np.ndarray,
    k: int,
    scene_filter: SceneFilter,
    min_score: float | None,
) -> list[tuple[Scene, float]]:
    """The top k scenes for a query vector, filters applied in SQL, metadata joined."""
    searcher = snapshot.searcher
    if isinstance(searcher, MilvusSearcher):
        # Milvus filters by the labels and folder stored with each vector
        catalog.check_labels([*scene_filter.labels_all, *scene_filter.labels_any])
        result = searcher.search(
            query[None],
            k,
            where=VectorFilter(
                labels_all=scene_filter.labels_all,
                labels_any=scene_filter.labels_any,
                scene=scene_filter.scene,
                exclude_ids=scene_filter.exclude_ids,
            ),
        )
    elif scene_filter.restricts:
        allowed = np.asarray(catalog.allowed_ids(scene_filter), dtype=np.int64)
        result = searcher.search(query[None], k, allow_ids=allowed)
    else:
        # a few excluded ids: ask for that many more and drop them
        fetch = min(k + len(scene_filter.exclude_ids), max(searcher.count, 1))
        result = searcher.search(query[None], max(1, fetch))
    excluded = set(scene_filter.exclude_ids)
    ranked = [
        (int(i), float(s))
        for i, s in zip(result.ids[0], result.scores[0], strict=True)
        if i >= 0 and int(i) not in excluded and (min_score is None or s >= min_score)
    ][:k]
    scenes = catalog.scenes([i for i, _ in ranked])
    missing = [i for i, _ in ranked if i not in scenes]
    if missing:
        log.warning("index %s holds %d ids unknown to SQL", searcher.version, len(missing))
    return [(scenes[i], s) for i, s in ranked if i in scenes]


def _hit(request: Request, scene: Scene, score: float) -> Hit:
    image_url, thumbnail_url = _scene_urls(request, scene.id)
    return Hit(
        id=scene.id,
        image=scene.name,
        score=score,
        labels=[label.name for label in scene.labels],
        scene=scene.scene,
        image_url=image_url,
        thumbnail_url=thumbnail_url,
    )


def _cache_headers(tag: str, settings: Settings) -> dict[str, str]:
    return {
        "ETag": f'"{tag}"',
        "Cache-Control": f"public, max-age={settings.cache_max_age}",
    }


def _not_modified(request: Request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match", "")
    return etag in [t.strip() for t in wanted.split(",")] or wanted.strip() == "*"


def _thumbnail(catalog: Catalog, scene: Scene, settings: Settings) -> bytes:
    size = settings.thumbnail_size
    cache = Path(settings.thumbnail_dir) / f"{scene.checksum}-{size}.jpg"
    with contextlib.suppress(OSError):
        return cache.read_bytes()
    path = catalog.image_path(scene)
    pixels = decode_image(path.read_bytes(), path.name)
    image = Image.fromarray(pixels)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    data = buffer.getvalue()
    with contextlib.suppress(OSError):  # a read-only cache folder only costs speed
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{hashlib.sha1(data).hexdigest()[:8]}")
        tmp.write_bytes(data)
        tmp.replace(cache)
    return data


__all__ = ["create_app"]
