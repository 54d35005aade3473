"""Fixtures for the service: a tiny model and index over the UCM subset, a database on SQLite
and on the real PostgreSQL at 127.0.0.1:5432 (each run in its own schema), and real uvicorn
server processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import (
    AXE_VERSION,
    CHROMIUM,
    LiveServer,
    Served,
    postgres_schema,
    prepared_database,
    server_env,
    train_tiny,
)

from index.job import ReindexSettings, reindex


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
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'grn.db'}"
        return
    with postgres_schema() as url:
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
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'grn.db'}"
    else:
        schema = postgres_schema()
        url = schema.__enter__()
    try:
        prepared_database(url, ucm_root, ucm_subset)
        with LiveServer(server_env(served, url, workdir), workdir / "server.log") as server:
            yield server
    finally:
        if schema is not None:
            schema.__exit__()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium (tests that use it skip where it is not installed)."""
    from playwright.sync_api import sync_playwright

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
