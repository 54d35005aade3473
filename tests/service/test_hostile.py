"""Hostile input against a real server process: a corpus of bad files generated here, odd
identifiers and paths, and the API fuzzed from its own OpenAPI document (Schemathesis). The
server must answer each with its expected status, stay ready, and keep its memory level."""

from __future__ import annotations

import io
import sqlite3
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image
from servers import LiveServer, Served, copy_served, prepared_database, server_env

from model.archive import load_archive

WRITE_KEY = "write-key-0123456789abcdef"
"""The hostile server's write key: the fuzz sends it, so the scene writes are fuzzed past
their key check."""


@pytest.fixture(scope="module")
def hostile(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, Path]]:
    workdir = tmp_path_factory.mktemp("hostile")
    database = workdir / "grn.db"
    prepared_database(f"sqlite:///{database}", ucm_root, ucm_subset)
    env = server_env(
        copy_served(served, workdir),  # the fuzz's writes reach the index: its own copy
        f"sqlite:///{database}",
        workdir,
        GRN_MAX_UPLOAD_BYTES=str(20 * 2**20),
        GRN_MAX_IMAGE_PIXELS=str(40_000_000),
        GRN_WRITE_KEY=WRITE_KEY,
        GRN_STORE_DIR=str(workdir / "store"),
    )
    with LiveServer(env, workdir / "server.log") as server:
        yield server, database


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def corpus(scene_jpeg: bytes) -> list[tuple[str, bytes, str, int, str | None]]:
    """(name, bytes, content type, expected status, expected error code)."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    png = encoded(rgb, "PNG")
    tiff16 = io.BytesIO()
    tifffile.imwrite(tiff16, rng.integers(0, 65535, (64, 64, 3), dtype=np.uint16))
    tiff5 = io.BytesIO()
    tifffile.imwrite(
        tiff5,
        rng.integers(0, 4000, (5, 64, 64), dtype=np.uint16),
        photometric="minisblack",
        planarconfig="separate",
    )
    frames = [Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)) for _ in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("a.txt", "not an image")
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: a 60 kB EXIF block
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'
    return [
        ("empty.jpg", b"", "image/jpeg", 400, "invalid_image"),
        ("cut.jpg", scene_jpeg[: len(scene_jpeg) // 2], "image/jpeg", 400, "invalid_image"),
        ("cut.png", png[: len(png) // 2], "image/png", 400, "invalid_image"),
        ("cut.tif", tiff16.getvalue()[:300], "image/tiff", 400, "invalid_image"),
        ("bomb.png", png_declaring(100_000, 100_000), "image/png", 413, "too_large"),
        ("16bit.tif", tiff16.getvalue(), "image/tiff", 200, None),
        ("5band.tif", tiff5.getvalue(), "image/tiff", 200, None),
        ("cmyk.jpg", encoded(rgb.convert("CMYK"), "JPEG"), "image/jpeg", 200, None),
        ("animated.gif", gif.getvalue(), "image/gif", 200, None),
        ("drawing.svg", svg, "image/svg+xml", 400, "invalid_image"),
        ("archive.jpg", zipped.getvalue(), "image/jpeg", 400, "invalid_image"),
        ("exif.jpg", encoded(rgb, "JPEG", exif=exif.tobytes()), "image/jpeg", 200, None),
        ("scene.jpg", scene_jpeg, "text/plain", 200, None),  # the bytes decide, not the label
    ]


def test_bad_files_get_their_status_and_the_server_keeps_its_memory(
    hostile: tuple[LiveServer, Path], ucm_root: Path, ucm_subset: Path
) -> None:
    server, _ = hostile
    scene = load_archive(ucm_root, ucm_subset).scenes[0]
    files = corpus(scene.path.read_bytes())
    with server.client() as client:
        for _ in range(3):  # warm-up: every code path once
            for name, data, kind, _, _ in files:
                client.post("/classify", files={"file": (name, data, kind)})
        warm = rss_kib(server.process.pid)
        for _ in range(5):
            for name, data, kind, status, code in files:
                response = client.post("/classify", files={"file": (name, data, kind)})
                assert response.status_code == status, (name, response.text)
                body = response.json()
                if code is None:
                    assert len(body["labels"]) == 17, name
                else:
                    assert body["error"] == code and body["message"], (name, body)
            assert client.get("/readyz").status_code == 200
        after = rss_kib(server.process.pid)
    assert after <= warm * 1.10, f"RSS grew from {warm} to {after} KiB"


def test_oversized_and_malformed_requests(hostile: tuple[LiveServer, Path]) -> None:
    server, _ = hostile
    hundred_mb = b"\x00" * (100 * 2**20)
    with server.client() as client:
        declared = client.post("/classify", files={"file": ("big.jpg", hundred_mb)})
        assert declared.status_code == 413 and declared.json()["error"] == "too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts the bytes
            yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
            for _ in range(100):
                yield b"\x00" * 2**20

        streamed = client.post(
            "/classify",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert streamed.status_code == 413
        field = client.post("/search", data={"k": "5", "labels_all": "a" * (100 * 2**20)})
        assert field.status_code == 413
        no_file = client.post(
            "/classify",
            content=b'--x\r\nContent-Disposition: form-data; name="k"\r\n\r\n3\r\n--x--\r\n',
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert no_file.status_code == 400 and no_file.json()["error"] == "missing_file"
        broken = client.post(
            "/classify",
            content=b"--x\r\nnonsense",
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert broken.status_code == 400
        assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/scenes/-1",
        "/scenes/99999999999999999999999999",
        "/scenes/abc",
        "/scenes/1e3",
        "/scenes/..%2F..%2F..%2Fetc%2Fpasswd",
        "/scenes/%2e%2e/image",
        "/scenes/1/..%2F..%2Fpyproject.toml",
        "/static/../pyproject.toml",
        "/static/..%2F..%2Fpyproject.toml",
        "/static/%2e%2e/%2e%2e/etc/passwd",
    ],
)
def test_odd_ids_and_paths_never_reach_a_file(hostile: tuple[LiveServer, Path], path: str) -> None:
    server, _ = hostile
    response = httpx.get(server.url + path)
    assert response.status_code in (404, 422), response.text
    assert "root:" not in response.text and "[project]" not in response.text
    assert response.json()["status"] == response.status_code


def test_a_stored_path_outside_the_archive_is_refused(hostile: tuple[LiveServer, Path]) -> None:
    server, database = hostile
    with server.client() as client:
        victim = client.get("/scenes", params={"limit": 1}).json()["scenes"][0]["id"]
    with sqlite3.connect(database) as connection:  # as if the database were tampered with
        connection.execute(
            "UPDATE scenes SET path = '../../../../../../etc/passwd' WHERE id = ?", (int(victim),)
        )
    with server.client() as client:
        response = client.get(f"/scenes/{victim}/image")
        thumb = client.get(f"/scenes/{victim}/thumbnail")
        preview = client.get(f"/scenes/{victim}/preview")
    assert response.status_code == 404 and "outside its archive" in response.json()["message"]
    assert thumb.status_code == 404 and "root:" not in response.text
    assert preview.status_code == 404 and "root:" not in preview.text


def test_the_api_against_its_own_openapi_document(hostile: tuple[LiveServer, Path]) -> None:
    """Schemathesis generates requests for every operation: no 5xx, and every response
    (errors included) matches the schema the document gives for it. It sends the write key
    through the security scheme the document declares, so the keyed operations are fuzzed
    past the key check, and checks that they refuse requests without it or with a wrong one
    (`ignored_auth`)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )
    from schemathesis.config import SchemathesisConfig
    from schemathesis.specs.openapi.checks import ignored_auth

    server, _ = hostile
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {"ApiKey": {"api_key": WRITE_KEY}}}})
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)
    checks = (
        not_a_server_error,
        status_code_conformance,
        response_schema_conformance,
        ignored_auth,
    )
    statuses: dict[str, list[int]] = {}

    def checker(strategy: object, label: str) -> object:
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(strategy)
        def check(case: object) -> None:
            response = case.call()  # type: ignore[attr-defined]
            statuses.setdefault(label, []).append(response.status_code)
            case.validate_response(response, checks=checks)  # type: ignore[attr-defined]

        return check

    failures = []
    keyed = set()
    for operation in schema.get_all_operations():
        op = operation.ok()
        if op.path.startswith("/admin"):
            continue  # admin only, and starting jobs: covered by test_operations.py
        label = f"{op.method.upper()} {op.path}"
        if op.definition.raw.get("security"):
            keyed.add(label)
        try:
            checker(op.as_strategy(), label)()  # type: ignore[operator]
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{label}: {exc}")
    every = [status for answers in statuses.values() for status in answers]
    assert len(statuses) >= 10 and len(every) >= 100, (len(statuses), len(every))
    assert {200, 422} <= set(every)  # both valid and invalid requests were generated
    assert not failures, "\n\n".join(failures)
    # the scene writes were fuzzed with the key: answers past its check, not only 401s
    assert keyed == {
        "POST /scenes", "PATCH /scenes/{scene_id}", "DELETE /scenes/{scene_id}", "POST /concepts",
        "PATCH /concepts/{name}", "DELETE /concepts/{name}",
    }  # fmt: skip
    for label in keyed:
        assert set(statuses[label]) - {401, 403}, (label, statuses[label])
    assert httpx.get(server.url + "/readyz").status_code == 200
