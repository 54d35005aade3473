"""The model's own endpoints: the labels of uploaded images (`/classify`), and an upload as a
browser can show it (`/preview`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from service.api.deps import (
    BatcherDep,
    CatalogDep,
    RuntimeDep,
    SettingsDep,
    elapsed_ms,
    in_thread,
    request_body,
    upload_schema,
)
from service.api.errors import documented, documented_as
from service.api.schemas.classify import ClassifyResponse, ImageClassification
from service.api.uploads import BatchedModel, decode_all, read_uploads
from service.storage.catalog import Catalog
from service.usecases.classify import classifier_applies, classify_images
from service.usecases.thumbnails import jpeg

if TYPE_CHECKING:
    from model.card import ModelCard

router = APIRouter()  # reads: create_app gives their access (deps.read_access)

UPLOAD_SCHEMA = upload_schema()
CLASSIFY_SCHEMA = upload_schema(many=True)


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    tags=["model"],
    responses=documented(400, 401, 403, 413, 503),
    openapi_extra=request_body(multipart=CLASSIFY_SCHEMA),
)
async def classify(
    request: Request,
    runtime: RuntimeDep,
    batcher: BatcherDep,
    catalog: CatalogDep,
    settings: SettingsDep,
) -> ClassifyResponse:
    """Labels of one or more uploaded images: every label's probability, and the labels
    at or above their thresholds. When the served archive does not carry the model's labels
    (an archive without labels, or with its own), the labels are empty and `note` says
    why."""
    start = time.perf_counter()
    snapshot = runtime.current()
    # past GRN_MAX_MODEL_REQUESTS: 503 now, before the upload is parsed (a refusal stays cheap)
    with request.app.state.model_requests.admit():
        files, _ = await read_uploads(request, max_files=settings.limits.max_images_per_request)
        classified = await classify_images(
            files,
            snapshot.card,
            BatchedModel(settings, batcher, snapshot),
            await archive_labels(catalog),
        )
    results = [ImageClassification.of(image) for image in classified.images]
    return ClassifyResponse(
        labels=results[0].labels,
        predicted=results[0].predicted,
        results=results,
        model_version=snapshot.model_version,
        elapsed_ms=elapsed_ms(start),
        note=classified.note,
    )


async def archive_labels(catalog: Catalog) -> list[str]:
    """The served archive's label names; the arrays are read in a thread the first time
    only."""
    names = catalog.label_names()
    if names is None:
        names = (await in_thread(catalog.table)).label_names
    return names


async def classifier_for(catalog: Catalog, card: ModelCard) -> bool:
    """Whether the model's classifier answers for the served archive (`classifier_applies`)."""
    return classifier_applies(card, await archive_labels(catalog))


@router.post(
    "/preview",
    tags=["model"],
    responses=documented_as("image/jpeg", None, 400, 401, 403, 413, 422),
    openapi_extra=request_body(multipart=UPLOAD_SCHEMA),
)
async def preview(
    request: Request,
    settings: SettingsDep,
    size: Annotated[int | None, Query(ge=16, le=8192)] = None,
) -> Response:
    """An uploaded image as a browser can show it: a JPEG of any format the service reads
    (a TIFF, 16-bit or multi-band file, stretched as for the model), longest side `size`.
    The header X-Image-Size says the upload's own size, WIDTHxHEIGHT pixels (the page
    turns a box drawn on the preview into a `region` of those pixels)."""
    files, _ = await read_uploads(request, max_files=1)
    image = (await decode_all(files, settings))[0]
    own = f"{image.shape[1]}x{image.shape[0]}"
    return Response(
        await in_thread(jpeg, image, size), media_type="image/jpeg", headers={"X-Image-Size": own}
    )
