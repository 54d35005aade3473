"""Scene images for browsers: JPEG thumbnails cached on disk, and the cache headers (ETag,
Cache-Control, 304 on If-None-Match) of images and thumbnails."""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

from fastapi import Request
from PIL import Image

from model.imageio import decode_image
from service.catalog import Catalog
from service.db import Scene
from service.settings import Settings


def cache_headers(tag: str, settings: Settings) -> dict[str, str]:
    return {
        "ETag": f'"{tag}"',
        "Cache-Control": f"public, max-age={settings.cache_max_age}",
    }


def not_modified(request: Request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match", "")
    return etag in [t.strip() for t in wanted.split(",")] or wanted.strip() == "*"


def thumbnail(catalog: Catalog, scene: Scene, settings: Settings) -> bytes:
    """A JPEG of the scene, longest side `thumbnail_size`, from the disk cache when there."""
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
