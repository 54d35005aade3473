from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from model.imageio import (
    InvalidImageError,
    ReadOptions,
    decode_image,
    decode_plain_jpeg,
    percentile_stretch,
    read_image,
)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _tiff(array: np.ndarray, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def test_rgb_jpeg_round_trips_closely() -> None:
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(smooth).save(buffer, format="JPEG", quality=95, subsampling=0)
    decoded = decode_image(buffer.getvalue())
    assert decoded.shape == (64, 64, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - smooth).mean() < 6


def test_grayscale_is_replicated() -> None:
    gray = np.arange(100, dtype=np.uint8).reshape(10, 10)
    decoded = decode_image(_png(gray))
    assert decoded.shape == (10, 10, 3)
    for c in range(3):
        np.testing.assert_array_equal(decoded[:, :, c], gray)


def test_rgba_drops_alpha() -> None:
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0
    decoded = decode_image(_png(rgba))
    np.testing.assert_array_equal(decoded[0, 0], [10, 20, 30])


def test_palette_png_converts_to_rgb() -> None:
    image = Image.new("P", (6, 6))
    image.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    np.testing.assert_array_equal(decode_image(buffer.getvalue())[0, 0], [255, 0, 0])


def test_16bit_png_is_stretched_per_image() -> None:
    ramp = np.linspace(1000, 3000, 100 * 100).reshape(100, 100).astype(np.uint16)
    decoded = decode_image(_png(ramp))
    assert decoded.dtype == np.uint8
    assert decoded[..., 0].min() == 0 and decoded[..., 0].max() == 255
    assert (np.diff(decoded[0, :, 0].astype(int)) >= 0).all()  # order is kept


def test_percentile_stretch_clips_outliers_and_handles_flat_bands() -> None:
    band = np.full((50, 50), 100.0)
    band[0, 0] = 1e6  # one hot pixel must not crush the rest of the band
    band[1:, :] = np.linspace(0, 200, 49 * 50).reshape(49, 50)
    out = percentile_stretch(np.dstack([band, np.full((50, 50), 7.0)]))
    assert out[..., 0].std() > 50
    assert (out[..., 1] == 0).all()


def test_16bit_rgb_tiff() -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4096, (20, 30, 3)).astype(np.uint16)
    decoded = decode_image(_tiff(data, photometric="rgb"))
    assert decoded.shape == (20, 30, 3)
    # each band is stretched on its own and keeps its ordering
    c = 1
    flat, src = decoded[..., c].ravel().astype(int), data[..., c].ravel()
    order = np.argsort(src, kind="stable")
    assert (np.diff(flat[order]) >= 0).all()


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_multiband_tiff_band_selection(planar: str) -> None:
    bands = np.stack([np.full((8, 9), 100 * (b + 1), np.uint16) for b in range(5)])
    bands[:, 0, 0] = 0  # give every band a spread so the stretch maps it onto 0..255
    data = bands if planar == "separate" else np.moveaxis(bands, 0, -1)
    encoded = _tiff(data, photometric="minisblack", planarconfig=planar)
    assert decode_image(encoded).shape == (8, 9, 3)
    chosen = decode_image(encoded, options=ReadOptions(bands=(4, 2, 0)))
    assert chosen.shape == (8, 9, 3)
    with pytest.raises(InvalidImageError, match="5 bands"):
        decode_image(encoded, options=ReadOptions(bands=(0, 1, 7)))


def test_8bit_multiband_tiff_keeps_values() -> None:
    data = np.stack([np.full((4, 4), 10 * (b + 1), np.uint8) for b in range(4)], axis=-1)
    decoded = decode_image(
        _tiff(data, photometric="minisblack", planarconfig="contig"),
        options=ReadOptions(bands=(3, 1, 0)),
    )
    np.testing.assert_array_equal(decoded[0, 0], [40, 20, 10])


def test_exif_orientation_is_applied() -> None:
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :10] = 255  # left half white
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was rotated: display rotated 90 degrees clockwise
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    decoded = decode_image(buffer.getvalue())
    assert decoded.shape == (20, 10, 3)
    assert decoded[:10].mean() > 200 and decoded[10:].mean() < 50  # white half now on top


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"", "empty"), (b"not an image at all", "cannot decode"), (b"II*\x00garbage", "TIFF")],
)
def test_broken_bytes_raise_a_clear_error(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message):
        decode_image(payload, source="scene.jpg")


def test_truncated_jpeg_names_the_file(tmp_path: Path, ucm_root: Path) -> None:
    data = (ucm_root / "images" / "beach" / "beach00.jpg").read_bytes()
    broken = tmp_path / "beach00.jpg"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(InvalidImageError, match=r"beach00\.jpg"):
        read_image(broken)


def test_missing_file_is_an_invalid_image(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="cannot read"):
        read_image(tmp_path / "nope.png")


def test_ucm_tiff_samples_match_their_jpegs(ucm_root: Path) -> None:
    samples = sorted((ucm_root / "tif-samples").glob("*.tif"))
    assert len(samples) == 21
    for tif in samples:
        original = read_image(tif)
        scene = tif.stem.rstrip("0123456789")
        jpeg = read_image(ucm_root / "images" / scene / f"{tif.stem}.jpg")
        assert original.shape == jpeg.shape and original.dtype == np.uint8
        assert np.abs(original.astype(int) - jpeg).mean() < 4, tif.name


def _jpeg(image: Image.Image, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


def test_the_jpeg_fast_path_gives_pillows_pixels(ucm_root: Path) -> None:
    """Colour JPEGs without EXIF skip Pillow (`decode_plain_jpeg`); what comes out is the array
    Pillow gives, pixel for pixel, for real scenes and for 4:2:0 and progressive files."""
    paths = sorted((ucm_root / "images").glob("*/*00.jpg"))
    assert len(paths) >= 10
    rng = np.random.default_rng(3)
    made = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
    payloads = [p.read_bytes() for p in paths]
    payloads += [_jpeg(made, quality=80), _jpeg(made, quality=90, progressive=True)]
    for data in payloads:
        assert decode_plain_jpeg(data) is not None
        want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        np.testing.assert_array_equal(decode_image(data), want)


def test_jpegs_the_fast_path_leaves_to_pillow(ucm_root: Path) -> None:
    """Greyscale, CMYK, EXIF, truncated, and over Pillow's pixel guard: Pillow decides."""
    rng = np.random.default_rng(4)
    colour = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    grey = _jpeg(Image.fromarray(colour[..., 0]), quality=95)
    cmyk = _jpeg(Image.fromarray(colour).convert("CMYK"), quality=95)
    exif = Image.Exif()
    exif[0x0112] = 1
    tagged = _jpeg(Image.fromarray(colour), exif=exif)
    for data in (grey, cmyk, tagged):
        assert decode_plain_jpeg(data) is None
        assert decode_image(data).shape == (16, 16, 3)
    scene = (ucm_root / "images" / "beach" / "beach00.jpg").read_bytes()
    assert decode_plain_jpeg(scene[: len(scene) // 2]) is None
    with pytest.raises(InvalidImageError, match="truncated"):
        decode_image(scene[: len(scene) // 2])
    guard = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 100
        assert decode_plain_jpeg(scene) is None
    finally:
        Image.MAX_IMAGE_PIXELS = guard
