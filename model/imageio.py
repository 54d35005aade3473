"""Reading scene images of every format an archive may hold into 8-bit RGB arrays.

Supported: JPEG, PNG and TIFF; 8- and 16-bit samples; RGB, grayscale (replicated to three
channels), RGBA and LA (alpha dropped), palette images, and multi-band TIFF (a configurable
band triple, by default the first three bands). EXIF orientation is applied.

16-bit (and any non-8-bit) data is mapped to 0..255 by a per-image percentile stretch: each
band is clipped to its own [2nd, 98th] percentile and scaled linearly onto [0, 255]. A band
with no spread (constant) becomes 0. This is the usual display stretch for satellite
products, whose radiometric range varies from scene to scene.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
STRETCH_PERCENTILES = (2.0, 98.0)


class InvalidImageError(ValueError):
    """An image file could not be decoded into a scene."""


@dataclass(frozen=True)
class ReadOptions:
    """How to turn a file into three 8-bit channels."""

    bands: tuple[int, int, int] = (0, 1, 2)
    """Zero-based band indices used as R, G, B for multi-band TIFF."""

    stretch_percentiles: tuple[float, float] = STRETCH_PERCENTILES
    """Per-band clip range for data that is not 8-bit."""


def percentile_stretch(
    bands: np.ndarray, percentiles: tuple[float, float] = STRETCH_PERCENTILES
) -> np.ndarray:
    """Scale an (H, W, C) array of any numeric type to uint8, each band on its own.

    Each band is clipped to its [low, high] percentile and mapped linearly onto 0..255.
    NaNs (no-data) map to 0.
    """
    data = np.asarray(bands, dtype=np.float64)
    if data.ndim == 2:
        data = data[:, :, None]
    out = np.zeros(data.shape, dtype=np.uint8)
    for c in range(data.shape[2]):
        band = data[:, :, c]
        finite = band[np.isfinite(band)]
        if finite.size == 0:
            continue
        low, high = np.percentile(finite, percentiles)
        if high <= low:
            continue
        scaled = (np.nan_to_num(band, nan=low) - low) / (high - low)
        out[:, :, c] = np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)
    return out


def to_rgb(
    array: np.ndarray, options: ReadOptions, source: str, has_alpha: bool = False
) -> np.ndarray:
    """Bring an (H, W) or (H, W, C) array of any dtype to (H, W, 3) uint8. With `has_alpha`
    the last channel is transparency and is dropped; other extra channels are bands."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise InvalidImageError(f"{source}: unsupported array shape {array.shape}")
    if has_alpha:
        array = array[:, :, :-1]
    channels = array.shape[2]
    if channels in (1, 2) and options.bands == (0, 1, 2):
        array = np.repeat(array[:, :, :1], 3, axis=2)
    elif channels != 3 or options.bands != (0, 1, 2):
        if max(options.bands) >= channels:
            raise InvalidImageError(
                f"{source}: has {channels} bands, cannot take bands {options.bands}; "
                "choose three band indices below the band count"
            )
        array = array[:, :, list(options.bands)]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array.astype(np.uint8) * 255)
    return percentile_stretch(array, options.stretch_percentiles)


def _read_tiff(data: bytes, options: ReadOptions, source: str) -> np.ndarray:
    import tifffile  # imported here: only TIFF input needs it

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            array = np.asarray(page.asarray())
            axes = str(page.axes)
            photometric = int(page.photometric)  # type: ignore[union-attr]
            extra = len(page.extrasamples)  # type: ignore[union-attr]
    except Exception as exc:  # tifffile raises many exception types for broken files
        raise InvalidImageError(f"{source}: not a readable TIFF ({exc})") from exc
    # Band-sequential (planar) files come as (bands, H, W): bring the bands last.
    if array.ndim == 3 and axes.endswith("YX"):
        array = np.moveaxis(array, 0, -1)
    rgb_with_alpha = photometric == 2 and extra > 0 and array.ndim == 3 and array.shape[2] == 4
    return to_rgb(array, options, source, has_alpha=rgb_with_alpha)


def _has_exif(data: bytes) -> bool:
    """Whether a JPEG carries an EXIF segment (which may rotate it), read from the marker
    segments before its image data. Unreadable markers count as EXIF: the caller then takes
    the general path, which says what is wrong."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return True
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no more metadata
            return False
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xE1 and data[at + 4 : at + 10] == b"Exif\x00\x00":
            return True
        at += 2 + length
    return True


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG from its header, or None when it is not one libjpeg-turbo
    can read (the general path then decides)."""
    if data[:2] != b"\xff\xd8":
        return None
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return int(width), int(height)


def decode_plain_jpeg(data: bytes) -> np.ndarray | None:
    """The fast path for the common case, a colour JPEG without EXIF: libjpeg-turbo straight
    into an RGB array (the same library and settings as Pillow's wheels, so the same pixels;
    a third of the time). None for everything else: greyscale, CMYK, EXIF (orientation),
    damaged or truncated data (strict decoding raises on any warning), left to Pillow."""
    if data[:2] != b"\xff\xd8":
        return None
    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(data)
        limit = Image.MAX_IMAGE_PIXELS  # Pillow's guard against decompression bombs
        if limit is not None and height * width > limit:
            return None
        if colourspace not in ("YCbCr", "RGB") or _has_exif(data):
            return None
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError:
        return None


def decode_image(
    data: bytes, source: str = "image", options: ReadOptions | None = None
) -> np.ndarray:
    """Decode encoded image bytes into an (H, W, 3) uint8 RGB array."""
    options = options or ReadOptions()
    if not data:
        raise InvalidImageError(f"{source}: the file is empty")
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _read_tiff(data, options, source)
    if options.bands == (0, 1, 2):
        fast = decode_plain_jpeg(data)
        if fast is not None:
            return fast
    return decode_with_pillow(data, source, options)


def decode_with_pillow(data: bytes, source: str, options: ReadOptions) -> np.ndarray:
    """Every format Pillow reads, EXIF orientation applied (the general path)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            oriented = ImageOps.exif_transpose(image)
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"{source}: cannot decode it: not a JPEG, PNG, TIFF or other image format this "
            "service reads"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(
            f"{source}: cannot decode it: the image data is damaged or truncated ({exc})"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"{source}: too many pixels ({exc})") from exc
    mode = oriented.mode
    if mode in ("RGB", "L", "RGBA", "LA"):
        return to_rgb(np.asarray(oriented), options, source, has_alpha=mode in ("RGBA", "LA"))
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return to_rgb(np.asarray(oriented), options, source)
    if mode == "1":
        return to_rgb(np.asarray(oriented.convert("L")), options, source)
    # Palette, CMYK, YCbCr, LAB, ...: let Pillow do the colour conversion.
    return np.ascontiguousarray(np.asarray(oriented.convert("RGB")))


def read_image(path: str | Path, options: ReadOptions | None = None) -> np.ndarray:
    """Read an image file into an (H, W, 3) uint8 RGB array, or raise InvalidImageError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidImageError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    return decode_image(data, str(path), options)
