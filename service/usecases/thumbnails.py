"""Scene images for browsers: JPEG renderings of any stored format (TIFF, 16-bit, multi-band
go through the same decoder and stretch as the model's input) as thumbnails and previews,
cached on disk, and the cache headers (ETag, Cache-Control, 304 on If-None-Match)."""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import numpy as np
from fastapi import Request
from PIL import Image

from model.imageio import decode_image
from service.settings import Settings
from service.storage.catalog import Catalog
from service.storage.db import Scene


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


def rendering(catalog: Catalog, scene: Scene, size: int | None, cache_dir: Path) -> bytes:
    """A JPEG of the scene, longest side `size` (None: full resolution), from the disk
    cache when there."""
    cache = cache_dir / f"{scene.checksum}-{size or 'full'}.jpg"
    with contextlib.suppress(OSError):
        return cache.read_bytes()
    path = catalog.image_path(scene)
    data = jpeg(decode_image(path.read_bytes(), path.name), size)
    with contextlib.suppress(OSError):  # a read-only cache folder only costs speed
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{hashlib.sha1(data).hexdigest()[:8]}")
        tmp.write_bytes(data)
        tmp.replace(cache)
    return data


def thumbnail(catalog: Catalog, scene: Scene, settings: Settings) -> bytes:
    """A JPEG of the scene, longest side `thumbnail_size`, from the disk cache when there."""
    return rendering(
        catalog, scene, settings.files.thumbnail_size, Path(settings.files.thumbnail_dir)
    )
