"""`grn up` (service/usecases/bringup.py, service/api/prepare.py): prepare and serve with no
other command, and one clear line for each bad input, on the real PostgreSQL and on
SQLite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from servers import REPO, free_port, postgres_schema
from starlette.testclient import TestClient

from model.archive import load_archive
from service.api.prepare import RefusingApp
from service.settings import Settings
from service.usecases.bringup import (
    InputError,
    Options,
    Preparation,
    StepResult,
    check_archive,
    prepare,
    prepare_until_done,
)

KEY = "prepare-test-key-0123456789"
TINY_TRAINING = "--backbone tiny --no-pretrained --epochs 1 --input-size 32 --batch-size 32"


def small_archive(ucm_root: Path, ucm_subset: Path, target: Path, count: int = 40) -> Path:
    """COUNT scenes of the UCM subset, copied with their labels rows (splits mixed)."""
    subset = load_archive(ucm_root, ucm_subset)
    rows = ucm_subset.read_text().splitlines()
    by_name = {row.split(",", 1)[0]: row for row in rows[1:]}
    (target / "images").mkdir(parents=True)
    step = max(1, len(subset.scenes) // count)
    kept = subset.scenes[::step][:count]
    for scene in kept:
        shutil.copy(scene.path, target / "images" / scene.path.name)
    (target / "labels.csv").write_text(
        "\n".join([rows[0], *(by_name[s.name] for s in kept)]) + "\n"
    )
    return target


def settings_for(tmp_path: Path, archive: Path | None, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        archive_dir=archive,
        model_path=tmp_path / "models" / "run" / "model.safetensors",
        index_root=tmp_path / "index",
        thumbnail_dir=tmp_path / "thumbnails",
    )


class Recorder:
    """Stands in for the `grn train` and `grn reindex` children when only the order and
    the skipping of steps are under test (the children run for real in the test below)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.state: Preparation | None = None
        self.said: list[str] = []
        """What /readyz said while each step ran."""

    def __call__(self, args: Sequence[str]) -> StepResult:
        self.calls.append(list(args))
        if self.state is not None:
            self.said.append(self.state.message())
        if args[0] == "train":
            out = Path(args[args.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "model.safetensors").write_bytes(b"a model")
        return StepResult(0, None)


def test_bad_archives_stop_with_one_line_that_says_what_to_fix(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'grn.db'}"
    with pytest.raises(InputError, match="GRN_ARCHIVE is not set; set GRN_ARCHIVE to"):
        check_archive(settings_for(tmp_path, tmp_path / "x", db), Options(archive_source=""))
    with pytest.raises(InputError, match=r"GRN_ARCHIVE=/nowhere is empty or does not exist"):
        check_archive(
            settings_for(tmp_path, tmp_path / "missing", db), Options(archive_source="/nowhere")
        )
    (tmp_path / "nolabels" / "images").mkdir(parents=True)
    with pytest.raises(InputError, match=r"holds no labels\.csv"):
        check_archive(settings_for(tmp_path, tmp_path / "nolabels", db), Options())


def test_unreadable_images_stop_after_importing_the_others(
    ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    archive = small_archive(ucm_root, ucm_subset, tmp_path / "archive", count=12)
    (archive / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    last = archive.joinpath("labels.csv").read_text().splitlines()[-1]
    with archive.joinpath("labels.csv").open("a") as handle:
        handle.write("broken," + last.split(",", 1)[1] + "\n")
    settings = settings_for(tmp_path, archive, f"sqlite:///{tmp_path / 'grn.db'}")
    state, runner = Preparation(), Recorder()
    with pytest.raises(InputError, match=r"^1 images of the archive cannot be read \(first: "):
        prepare(settings, Options(), state, runner)
    assert runner.calls == []  # nothing trained on an archive with unreadable images
    # leaving them out goes on, and the scenes imported before are kept
    prepare(settings, Options(skip_broken=True), state, runner)
    assert [call[0] for call in runner.calls] == ["train", "reindex"]
    assert all("--skip-broken" in call for call in runner.calls)


def test_a_corrected_archive_continues_without_another_command(
    ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    archive = small_archive(ucm_root, ucm_subset, tmp_path / "archive", count=8)
    labels = archive.joinpath("labels.csv").read_text()
    archive.joinpath("labels.csv").unlink()
    settings = settings_for(tmp_path, archive, f"sqlite:///{tmp_path / 'grn.db'}")
    state, runner, stop = Preparation(), Recorder(), threading.Event()
    worker = threading.Thread(
        target=prepare_until_done,
        args=(settings, Options(retry_seconds=0.2), state, runner),
        kwargs={"stop": stop},
    )
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while state.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.error is not None and "holds no labels.csv" in state.message()
        assert state.message().startswith("preparation stopped: ")
        runner.state = state
        archive.joinpath("labels.csv").write_text(labels)  # the fix, in place
        worker.join(timeout=60)
        assert state.done and state.error is None
    finally:
        stop.set()
        worker.join(timeout=10)
    assert [call[0] for call in runner.calls] == ["train", "reindex"]
    assert runner.said[0].startswith("preparing: training a model"), runner.said
    # a second run finds the model: it trains nothing and only checks the index
    runner.calls.clear()
    prepare(settings, Options(), Preparation(), runner)
    assert [call[0] for call in runner.calls] == ["reindex"]
    assert "--if-stale" in runner.calls[0]


def test_unsafe_settings_serve_only_the_reason() -> None:
    with TestClient(RefusingApp("GRN_API_KEY is weak")) as client:
        assert client.get("/healthz").status_code == 200
        for path in ("/readyz", "/search", "/admin/reload"):
            answer = client.get(path)
            assert answer.status_code == 503
            assert answer.json()["message"] == "not started: GRN_API_KEY is weak"


def _wait_ready(port: int, process: subprocess.Popen[str], seconds: float) -> httpx.Response:
    deadline, answer = time.monotonic() + seconds, None
    while time.monotonic() < deadline and process.poll() is None:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            if answer.status_code == 200:
                return answer
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"not ready: {answer.text if answer is not None else 'no answer'}")


def run_up(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    handle = log.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "up", "--retry-seconds", "1"],
        cwd=REPO,
        env={**os.environ, **env, "GRN_PORT": str(port)},
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, port


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    process.wait(timeout=30)


def test_up_prepares_then_serves_and_a_second_up_finds_everything(
    ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    archive = small_archive(ucm_root, ucm_subset, tmp_path / "archive", count=40)
    with postgres_schema() as database_url:
        env = {
            "GRN_ENVIRONMENT": "production",
            "GRN_API_KEY": KEY,
            "GRN_DATABASE_URL": database_url,
            "GRN_ARCHIVE_DIR": str(archive),
            "GRN_ARCHIVE_SOURCE": str(archive),
            "GRN_MODEL_PATH": str(tmp_path / "models" / "run" / "model.safetensors"),
            "GRN_INDEX_ROOT": str(tmp_path / "index"),
            "GRN_THUMBNAIL_DIR": str(tmp_path / "thumbnails"),
            "GRN_TRAIN_OPTIONS": TINY_TRAINING,
            "GRN_DEVICE": "cpu",
            "GRN_INDEX_POLL_SECONDS": "0.5",
        }
        first, port = run_up(env, tmp_path / "first.log")
        try:
            ready = _wait_ready(port, first, 240)
        finally:
            stop(first)
        log = (tmp_path / "first.log").read_text()
        assert ready.json()["scenes"] == 40 and ready.json()["index_count"] == 40, log
        for line in ("grn up: migrating", "grn up: imported 40 scenes", "grn up: training"):
            assert line in log
        assert (tmp_path / "models" / "run" / "model.safetensors").is_file()

        second, port = run_up(env, tmp_path / "second.log")
        try:
            start = time.monotonic()
            ready = _wait_ready(port, second, 120)
            took = time.monotonic() - start
        finally:
            stop(second)
        log = (tmp_path / "second.log").read_text()
        assert ready.json()["scenes"] == 40, log
        assert "is present: not training" in log and "is current" in log
        assert "grn up: imported 0 scenes (40 already present" in log
        assert took < 60, log

        # a weak key: no preparation, no API; the log and /readyz say what to fix
        weak, port = run_up({**env, "GRN_API_KEY": "short"}, tmp_path / "weak.log")
        try:
            deadline, answer = time.monotonic() + 60, None
            while time.monotonic() < deadline and answer is None:
                try:
                    answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                except httpx.HTTPError:
                    time.sleep(0.3)
        finally:
            stop(weak)
        assert answer is not None and answer.status_code == 503
        assert "GRN_API_KEY set to a secret of at least 16" in answer.json()["message"]
        errors = [
            line
            for line in (tmp_path / "weak.log").read_text().splitlines()
            if line.startswith("grn up: error: ")
        ]
        assert len(errors) == 1 and "GRN_API_KEY" in errors[0]
