"""Fixtures for the service: a tiny model and index over the UCM subset, a database on SQLite
and on the real PostgreSQL at 127.0.0.1:5432 (each run in its own schema), and real uvicorn
server processes."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dates import dated_server
from geodata import ORIGIN, PIXEL_M
from pyproj import Transformer
from servers import (
    AXE_VERSION,
    CHROMIUM,
    LiveServer,
    Served,
    dated_database,
    empty_database,
    live_server,
    server_env,
    train_tiny,
)
from shapely.geometry import Polygon

from index.stores.faiss_build import ReindexSettings, reindex
from model.archive import Archive, load_archive
from model.geo import GEO_COLUMNS, SceneGeo


@pytest.fixture(scope="session")
def served(
    tiny_config: Callable[..., object],
    ucm_root: Path,
    ucm_subset: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Served:
    base = tmp_path_factory.mktemp("served")
    model = train_tiny(tiny_config, base / "run")
    reindex(
        model,
        ucm_root,
        base / "index",
        labels_csv=ucm_subset,
        settings=ReindexSettings(factory="Flat"),
        device="cpu",
        progress=False,
    )
    return Served(model, base / "index")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh schema of the real PostgreSQL."""
    with empty_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest,
    served: Served,
    ucm_root: Path,
    ucm_subset: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    """A server over the UCM subset, on each database."""
    workdir = tmp_path_factory.mktemp(f"live-{request.param}")
    with live_server(request.param, served, ucm_root, ucm_subset, workdir) as (server, _):
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dated(
    request: pytest.FixtureRequest, served: Served, ucm_root: Path, geo_labels: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, Archive]]:  # fmt: skip
    """A server over the UCM subset laid on the grid of `geo_labels` and dated
    (`dates.GIVEN`), writes allowed with `dates.WRITE_KEY`, on each database, and its
    archive as read from the dated labels: one per test module."""
    workdir = tmp_path_factory.mktemp(f"dated-{request.param}")
    with dated_server(request.param, served, ucm_root, geo_labels, workdir) as found:
        yield found


@pytest.fixture(scope="module")
def page_server(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The server the web page tests drive: the UCM subset, entered the archive at three
    times (`servers.dated_database`), on SQLite; one per test module."""
    workdir = tmp_path_factory.mktemp("web")
    url = f"sqlite:///{workdir / 'grn.db'}"
    dated_database(url, ucm_root, ucm_subset)
    with LiveServer(server_env(served, url, workdir), workdir / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def subset(ucm_root: Path, ucm_subset: Path) -> Archive:
    return load_archive(ucm_root, ucm_subset)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium (tests that use it skip where it is not installed). What a person
    waits for may take 15 s, not Playwright's 5: CI's two cores run two test workers beside
    the server, the browser and the model."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def axe_script(tmp_path_factory: pytest.TempPathFactory) -> str:
    """axe-core from the npm registry (cached)."""
    cache = Path.home() / ".cache" / "grn" / f"axe-core-{AXE_VERSION}.min.js"
    if not cache.is_file():
        npm = shutil.which("npm")
        if npm is None:
            if os.environ.get("CI"):
                raise RuntimeError("npm is needed to fetch axe-core")
            pytest.skip("npm is not installed")
        folder = tmp_path_factory.mktemp("axe")
        subprocess.run(
            [npm, "pack", f"axe-core@{AXE_VERSION}", "--pack-destination", str(folder)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        with tarfile.open(next(folder.glob("axe-core-*.tgz"))) as archive:
            member = archive.extractfile("package/axe.min.js")
            assert member is not None
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(member.read())
    return cache.read_text()


SIDE_M = 256 * PIXEL_M  # UCM's 0.3 m pixels; ORIGIN lies in UTM zone 11N (EPSG:32611)
COLUMNS = 14


def utm_footprint(row: int, col: int) -> Polygon:
    """Scene (row, col) of a grid of 76.8 m squares laid from ORIGIN southwards, in WGS84."""
    to_wgs84 = Transformer.from_crs("EPSG:32611", "EPSG:4326", always_xy=True)
    west, north = ORIGIN[0] + col * SIDE_M, ORIGIN[1] - row * SIDE_M
    corners = [(west, north), (west + SIDE_M, north), (west + SIDE_M, north - SIDE_M)]
    corners += [(west, north - SIDE_M), (west, north)]
    return Polygon([to_wgs84.transform(x, y) for x, y in corners])


@pytest.fixture(scope="session")
def geo_labels(ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 126 scenes of `ucm_subset`, laid on a 14 x 9 grid of UTM squares (footprints in
    labels.csv's geo columns), except the last six, which have no footprint."""
    with ucm_subset.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    target = tmp_path_factory.mktemp("geo") / "labels.csv"
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header[:3], *GEO_COLUMNS, *header[3:]])
        for number, row in enumerate(body):
            cells = {k: "" for k in GEO_COLUMNS}
            if number < len(body) - 6:
                r, c = divmod(number, COLUMNS)
                cells = SceneGeo(utm_footprint(r, c), "EPSG:32611", "grid.tif").cells()
                cells["window"] = f"{c * 256},{r * 256},256,256"
            writer.writerow([*row[:3], *(cells[k] for k in GEO_COLUMNS), *row[3:]])
    return target
