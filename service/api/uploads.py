"""Uploads: the request-body limit (an ASGI middleware), multipart reading, and uploaded
images through their size and pixel limits to the model module's decoder."""

from __future__ import annotations

import asyncio
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from fastapi import Request
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model.imageio import InvalidImageError, decode_image, jpeg_size
from service.api.asgi import Headers, HttpMiddleware
from service.api.bodies import error_body
from service.errors import BadRequestError
from service.runtime import Batcher, Inference, Snapshot
from service.settings import Settings


class UploadTooLargeError(ValueError):
    """The request or an image in it is over a configured limit (HTTP 413)."""


class BodyLimit(HttpMiddleware):
    """Refuse request bodies over `limit` bytes with 413, whether or not the client sent a
    Content-Length, before the multipart parser spools them anywhere."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def handle(self, scope: Scope, headers: Headers, receive: Receive, send: Send) -> None:
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
            error_body(
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


async def read_uploads(
    request: Request, *, max_files: int
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


async def decode_all(files: list[tuple[str, bytes]], settings: Settings) -> list[np.ndarray]:
    """Uploaded files -> (H, W, 3) uint8 images, decoded side by side in worker threads."""
    decode = partial(_decode_file, settings=settings)
    return list(await asyncio.gather(*(asyncio.to_thread(decode, f) for f in files)))


async def infer_uploads(
    files: list[tuple[str, bytes]], settings: Settings, batcher: Batcher, snapshot: Snapshot
) -> list[Inference]:
    """Uploaded files decoded and through the network, in the files' order. A lone upload on
    an idle model is decoded on the model's thread (`Batcher.infer_when_idle`)."""
    if len(files) == 1:
        lone = await batcher.infer_when_idle(snapshot, partial(_decode_file, files[0], settings))
        if lone is not None:
            return [lone]
    return await batcher.infer(snapshot, await decode_all(files, settings))


@dataclass(frozen=True)
class BatchedModel:
    """The model in service run on uploaded files through the app's batcher: the network a
    use case runs on uploads (`service.usecases.classify.ImageModel`)."""

    settings: Settings
    batcher: Batcher
    snapshot: Snapshot

    async def probabilities(self, files: Sequence[tuple[str, bytes]]) -> list[np.ndarray]:
        outputs = await infer_uploads(list(files), self.settings, self.batcher, self.snapshot)
        return [out.probabilities for out in outputs]

    async def decode(self, files: Sequence[tuple[str, bytes]]) -> None:
        await decode_all(list(files), self.settings)


def _decode_file(item: tuple[str, bytes], settings: Settings) -> np.ndarray:
    name, data = item
    return decode_upload(
        data,
        name,
        max_bytes=settings.limits.max_upload_bytes,
        max_pixels=settings.limits.max_image_pixels,
    )


def declared_pixels(data: bytes) -> int | None:
    """Width x height from the file's header, without decoding the pixels (None when the
    header cannot be read: the decoder then says what is wrong). Raises UploadTooLargeError
    where Pillow's own guard refuses the header."""
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        try:
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                page = tif.pages[0]
                return int(page.imagewidth) * int(page.imagelength)  # type: ignore[union-attr]
        except Exception:  # tifffile raises many types for broken files
            return None
    size = jpeg_size(data)
    if size is not None:
        return size[0] * size[1]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        raise UploadTooLargeError(f"too many pixels: {exc}") from exc
    except Exception:  # Pillow raises many types for broken headers; decode_image reports
        return None
    return width * height


def decode_upload(data: bytes, name: str, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """An uploaded file -> (H, W, 3) uint8, or UploadTooLargeError / InvalidImageError."""
    if len(data) > max_bytes:
        raise UploadTooLargeError(
            f"{name}: {len(data)} bytes is over the limit of {max_bytes} bytes per request"
        )
    pixels = declared_pixels(data)
    if pixels is not None and pixels > max_pixels:
        raise UploadTooLargeError(
            f"{name}: {pixels} pixels is over the limit of {max_pixels} pixels per image"
        )
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that: make it an error
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return decode_image(data, name)
        except Image.DecompressionBombWarning as exc:
            raise UploadTooLargeError(f"{name}: too many pixels ({exc})") from exc


__all__ = [
    "BatchedModel",
    "BodyLimit",
    "InvalidImageError",
    "UploadTooLargeError",
    "decode_all",
    "decode_upload",
    "infer_uploads",
    "read_uploads",
]
