"""Uploaded images: size and pixel limits, then the model module's decoder."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from model.imageio import InvalidImageError, decode_image


class UploadTooLargeError(ValueError):
    """The request or an image in it is over a configured limit (HTTP 413)."""


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


__all__ = ["InvalidImageError", "UploadTooLargeError", "decode_upload"]
