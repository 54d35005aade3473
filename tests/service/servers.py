"""Test helpers for the service: real server processes and private PostgreSQL schemas."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, text, update

from model.train import fit
from service.storage.db import Scene, make_engine
from service.storage.migrate import upgrade
from service.usecases.importer import import_archive

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
"""Debian's chromium, which the page tests drive through Playwright (when installed)."""
AXE_VERSION = "4.14.1"
"""axe-core, the accessibility checker the page tests run in it (from the npm registry)."""
POSTGRES_URL = os.environ.get(
    "GRN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@dataclass(frozen=True)
class Served:
    """A model and an index built from it."""

    model: Path
    index_root: Path


def train_tiny(tiny_config: Callable[..., object], out: Path, seed: int = 0) -> Path:
    config = tiny_config(out, epochs=1, seed=seed)
    return fit(config, resume=False).model_path  # type: ignore[arg-type]


def _postgres_schema_url(schema: str) -> str:
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


class postgres_schema:
    """A schema of its own on the shared PostgreSQL, dropped afterwards, so runs never
    collide."""

    def __enter__(self) -> str:
        self.schema = f"grn_test_{uuid.uuid4().hex[:12]}"
        self.admin: Engine = make_engine(POSTGRES_URL)
        try:
            with self.admin.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        except Exception as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")
        return _postgres_schema_url(self.schema)

    def __exit__(self, *_: object) -> None:
        with self.admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """`grn serve` in a subprocess, as a user starts it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server never became ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def __enter__(self) -> LiveServer:
        """Wait until it is ready (stopping it if it never is)."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


def server_env(served: Served, database_url: str, workdir: Path, **extra: str) -> dict[str, str]:
    return {
        "GRN_DATABASE_URL": database_url,
        "GRN_MODEL_PATH": str(served.model),
        "GRN_INDEX_ROOT": str(served.index_root),
        "GRN_THUMBNAIL_DIR": str(workdir / "thumbnails"),
        "GRN_DEVICE": "cpu",
        "GRN_INDEX_POLL_SECONDS": "0",
        "GRN_MAX_UPLOAD_BYTES": str(2 * 2**20),
        "GRN_MAX_IMAGE_PIXELS": str(4_000_000),
        "GRN_MAX_IMAGES_PER_REQUEST": "4",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def prepared_database(database_url: str, ucm_root: Path, labels: Path) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    import_archive(engine, ucm_root, labels, progress=False)
    engine.dispose()


OLD = datetime(2020, 1, 1, 12, tzinfo=UTC)
"""When the first third of a dated archive entered it (`date_scenes`)."""
MIDDLE = datetime(2024, 6, 15, 8, 30, tzinfo=UTC)
"""When the second third did; the rest entered it when imported (now)."""


def dated_groups(ids: Iterable[int]) -> tuple[set[int], set[int], set[int]]:
    """An archive grown over years: of the scenes sorted by id (a hash of the name, so the
    groups mix folders and labels), every third entered it at OLD, the next at MIDDLE, and
    the rest when imported."""
    ordered = sorted(ids)
    return set(ordered[0::3]), set(ordered[1::3]), set(ordered[2::3])


def date_scenes(database_url: str) -> tuple[set[int], set[int], set[int]]:
    """Give an imported archive's scenes the times `dated_groups` says, in SQL (the
    catalog's triggers tell every server); the groups."""
    engine = make_engine(database_url)
    with engine.begin() as connection:
        old, middle, rest = dated_groups(connection.scalars(select(Scene.id)))
        for group, moment in ((old, OLD), (middle, MIDDLE)):
            chosen = update(Scene).where(Scene.id.in_(sorted(group)))
            connection.execute(chosen.values(created_at=moment))
    engine.dispose()
    return old, middle, rest


def head_model_served(
    base: Path, ucm_root: Path, labels: Path, **model: Any
) -> tuple[Served, str, Path]:
    """A head-mode model with random heads and the archive's label names
    (`head_model.random_heads_model`, keyword arguments passed on), its Flat index over the
    archive, and SQLite holding the same scenes."""
    from head_model import random_heads_model

    from index.stores.faiss_build import ReindexSettings, reindex
    from model.archive import load_archive

    names = load_archive(ucm_root, labels).label_names
    random_heads_model(base / "run/model.safetensors", label_names=names, **model)
    reindex(
        base / "run", ucm_root, base / "index", labels_csv=labels,
        settings=ReindexSettings(factory="Flat"), device="cpu", progress=False,
    )  # fmt: skip
    url = f"sqlite:///{base / 'grn.db'}"
    prepared_database(url, ucm_root, labels)
    return Served(base / "run/model.safetensors", base / "index"), url, base


def copy_served(served: Served, target: Path) -> Served:
    shutil.copytree(served.model.parent, target / "run")
    shutil.copytree(served.index_root, target / "index")
    return Served(target / "run" / served.model.name, target / "index")


def shot(page: Any, name: str) -> None:
    """A screenshot of the page's state into GRN_SCREENSHOT_DIR, when it is set."""
    folder = os.environ.get("GRN_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
