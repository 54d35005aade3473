"""Test helpers for the service: real server processes and private PostgreSQL schemas."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx
import pytest
from sqlalchemy import Engine, select, text, update

from model.archive import Archive, load_archive, scene_id
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
T = TypeVar("T")


def eventually(check: Callable[[], T], what: str, timeout: float = 30.0, every: float = 0.2) -> T:
    """`check()`'s first truthy answer, asked every `every` seconds until `timeout`: for the
    state of another process (a server, a worker), which no event in this one announces.
    Fails saying that `what` never came."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s (last answer: {answer!r})")
        time.sleep(every)


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


@contextmanager
def empty_database(kind: str, workdir: Path) -> Iterator[str]:
    """The URL of an empty database of `kind`: a SQLite file in `workdir` (`sqlite`), or a
    fresh schema of the real PostgreSQL (`postgresql`), dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'grn.db'}"
        return
    with postgres_schema() as url:
        yield url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """`grn serve` in a subprocess, as a user starts it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        """The settings it was started with (`GRN_` variables)."""
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

    def readiness_when(
        self, holds: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        """/readyz's answer once `holds` accepts it (a change the server's poll takes up)."""
        with self.client() as client:

            def check() -> dict[str, Any] | None:
                ready: dict[str, Any] = client.get("/readyz").json()
                return ready if holds(ready) else None

            return eventually(check, what, timeout)


class Answer(NamedTuple):
    kind: str
    """`search` or `classify`."""
    status: int
    model_version: str | None
    index_version: str | None
    """The index a search used (None for a classification)."""


class Traffic:
    """Searches and classifications sent back to back from `threads` threads; every answer
    is kept in `seen`, and a test waits for the one it needs with `wait_for`."""

    def __init__(self, url: str, query: int, image: bytes, threads: int = 1) -> None:
        self.url, self.query, self.image = url, query, image
        self.seen: list[Answer] = []
        self._kept = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _keep(self, answer: Answer) -> None:
        with self._kept:
            self.seen.append(answer)
            self._kept.notify_all()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                r = client.post("/search", json={"scene_id": self.query, "k": 5})
                body = r.json()
                versions = body.get("model_version"), body.get("index_version")
                self._keep(Answer("search", r.status_code, *versions))
                r = client.post("/classify", files={"file": ("q.jpg", self.image)})
                self._keep(Answer("classify", r.status_code, r.json().get("model_version"), None))

    def wait_for(self, wanted: Callable[[Answer], bool], what: str, timeout: float = 60) -> Answer:
        """The first answer from now on that `wanted` accepts."""
        deadline = time.monotonic() + timeout
        with self._kept:
            checked = len(self.seen)
            while True:
                found = next((a for a in self.seen[checked:] if wanted(a)), None)
                if found is not None:
                    return found
                checked = len(self.seen)
                left = deadline - time.monotonic()
                if left <= 0 or not self._kept.wait(left):
                    raise AssertionError(f"no answer {what} in {timeout} s")

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


@contextmanager
def polling_server_under_traffic(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path, threads: int = 1
) -> Iterator[tuple[LiveServer, Served, Traffic]]:
    """A server over a copy of `served` (SQLite holding the subset) that looks for a new
    model or index every 0.2 s, under `Traffic` from `threads` threads: the server, its copy
    of the model and index (for the test to replace) and the traffic."""
    mine = copy_served(served, tmp_path)
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    server = LiveServer(
        server_env(mine, url, tmp_path, GRN_INDEX_POLL_SECONDS="0.2"), tmp_path / "server.log"
    )
    subset = load_archive(ucm_root, ucm_subset)
    traffic = Traffic(
        server.url, scene_id(subset.scenes[9].name), subset.scenes[4].path.read_bytes(), threads
    )
    try:
        server.wait_ready()
        with traffic:
            yield server, mine, traffic
    finally:
        server.stop()


@contextmanager
def live_server(
    database: str, served: Served, ucm_root: Path, labels: Path, workdir: Path, **env: str
) -> Iterator[tuple[LiveServer, str]]:
    """A ready server of `served` (`env` added to `server_env`) over the archive's scenes in
    `labels`, imported into an empty database of kind `database`: the server and that
    database's URL."""
    with empty_database(database, workdir) as url:
        prepared_database(url, ucm_root, labels)
        with LiveServer(server_env(served, url, workdir, **env), workdir / "server.log") as server:
            yield server, url


def search_ok(server: LiveServer, **request: Any) -> dict[str, Any]:
    """POST /search with `request` as its JSON, answered 200: the body."""
    with server.client() as client:
        response = client.post("/search", json=request)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ended_job(client: httpx.Client, job_id: int, key: str, timeout: float = 600) -> dict[str, Any]:
    """The admin job `job_id` (GET /admin/jobs/ID with the API key) once it has ended."""

    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/admin/jobs/{job_id}", headers={"X-API-Key": key}).json()
        return None if job["status"] in ("queued", "running") else job

    return eventually(ended, f"the end of job {job_id}", timeout, every=0.5)


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


def dated_database(
    database_url: str, ucm_root: Path, labels: Path
) -> tuple[set[int], set[int], set[int]]:
    """`prepared_database`, its scenes then dated as `date_scenes` dates them; the groups."""
    prepared_database(database_url, ucm_root, labels)
    return date_scenes(database_url)


def archive_groups(archive: Archive) -> tuple[set[int], set[int], set[int]]:
    """The groups `date_scenes` dates an archive's scenes in, from its scene names."""
    return dated_groups(scene_id(entry.name) for entry in archive.scenes)


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
