"""Scene images for browsers: JPEG renderings of any stored format (TIFF, 16-bit, multi-band
go through the same decoder and stretch as the model's input) as thumbnails and previews,
cached on disk within a budget (`service.storage.render_cache`), and the cache headers (ETag,
Cache-Control, 304 on If-None-Match).

A preview's size is snapped to one of `PREVIEW_SIZES` (the smallest at least as large as asked;
full resolution past the largest, or where the scene is no larger than the step), so that
requests of any size make at most a handful of renderings per scene."""

from __future__ import annotations

import io

import numpy as np
from fastapi import Request
from PIL import Image

from model.imageio import decode_image
from service.settings import Settings
from service.storage.catalog import Catalog
from service.storage.db import Scene
from service.storage.render_cache import RenderCache

PREVIEW_SIZES = (128, 256, 512, 1024)
"""The longest sides a preview is rendered at, besides full resolution."""
PREVIEW_FOLDER = "previews"
"""Where in the render cache previews lie (thumbnails lie at its top)."""


def cache_headers(tag: str, settings: Settings) -> dict[str, str]:
    return {
        "ETag": f'"{tag}"',
        "Cache-Control": f"public, max-age={settings.files.cache_max_age}",
    }


def not_modified(request: Request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match", "")
    return etag in [t.strip() for t in wanted.split(",")] or wanted.strip() == "*"


def jpeg(pixels: np.ndarray, size: int | None) -> bytes:
    """(H, W, 3) uint8 -> JPEG bytes, longest side at most `size` (None: as it is)."""
    image = Image.fromarray(pixels)
    if size is not None:
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85 if size and size <= 256 else 90)
    return buffer.getvalue()


def preview_size(requested: int | None, scene: Scene) -> int | None:
    """The size a preview of `requested` pixels is rendered at: the smallest of
    `PREVIEW_SIZES` at least as large, or None (full resolution) past the largest, when
    nothing is asked, or when the scene is no larger than that step."""
    if requested is None:
        return None
    step = next((size for size in PREVIEW_SIZES if size >= requested), None)
    if step is None or step >= max(scene.width, scene.height):
        return None
    return step


def rendering(
    catalog: Catalog, scene: Scene, size: int | None, cache: RenderCache, folder: str = ""
) -> bytes:
    """A JPEG of the scene, longest side `size` (None: full resolution), from the disk
    cache (under `folder` there) when there."""
    name = f"{scene.checksum}-{size or 'full'}.jpg"
    name = f"{folder}/{name}" if folder else name
    cached = cache.get(name)
    if cached is not None:
        return cached
    path = catalog.image_path(scene)
    data = jpeg(decode_image(path.read_bytes(), path.name), size)
    cache.put(name, data)
    return data


def preview(catalog: Catalog, scene: Scene, size: int | None, cache: RenderCache) -> bytes:
    """A JPEG of the scene at `size` as `preview_size` snapped it."""
    return rendering(catalog, scene, size, cache, PREVIEW_FOLDER)


def thumbnail(catalog: Catalog, scene: Scene, settings: Settings, cache: RenderCache) -> bytes:
    """A JPEG of the scene, longest side `thumbnail_size`, from the disk cache when there."""
    return rendering(catalog, scene, settings.files.thumbnail_size, cache)
