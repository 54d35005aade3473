"""`grn up`'s preparation: from an empty deployment to a serving one, with no other command
(the compose `api` service runs it; its server is `service.api.prepare`).

While the server answers, a thread prepares what it serves, each step skipped when already
done: check the archive, migrate the schema,
import the archive, train a model (head mode) when there is none, reindex when the index is
stale. Training and reindexing run as `grn` child processes whose output goes to the log.
Where torch is not installed (the serving image) the model is trained by `grn up
--train-only` in the compose `trainer` service (the image with torch): this preparation
waits for its model file, then indexes with the model's ONNX graph.
Until the preparation is done `/readyz` answers 503 with the step under way or the one line
that says what to fix; the same line is logged. A problem with the inputs (the archive, its
images, the database) is looked at again every `retry_seconds`, so correcting it continues
the preparation; settings that leave the service unsafe (production without a strong API key)
start no preparation and no API: the server answers 503 with that line until restarted with
other settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from service.settings import Settings

Runner = Callable[[Sequence[str]], "StepResult"]


class PreparationError(RuntimeError):
    """A step cannot go on: the message says what to fix."""


class InputError(PreparationError):
    """The archive or its images are not as needed: looked at again once its files change."""


class DatabaseUnavailableError(InputError):
    """The database does not answer: looked at again after a while."""


@dataclass
class StepResult:
    returncode: int
    error: str | None
    """The child's `error: ...` line (or its last line of output) when it failed."""


@dataclass
class Options:
    archive_source: str | None = None
    """The archive as the operator named it (the host path compose mounts at GRN_ARCHIVE_DIR)."""
    train_options: list[str] = field(default_factory=list)
    """More `grn train` options (e.g. `--epochs 10`)."""
    skip_broken: bool = False
    """Leave unreadable images out instead of stopping."""
    retry_seconds: float = 15.0
    database_wait_seconds: float = 60.0
    model_wait_seconds: float = 2.0
    """How often a serving image without torch looks for the model the trainer writes."""


@dataclass
class Preparation:
    """What `/readyz` says while the preparation runs or after it stopped."""

    step: str = "starting"
    error: str | None = None
    done: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def message(self) -> str:
        if self.error is not None:
            return f"preparation stopped: {self.error}"
        return f"preparing: {self.step}"


def say(line: str) -> None:
    print(f"grn up: {line}", file=sys.stderr, flush=True)


def _archive_name(settings: Settings, options: Options) -> str:
    if options.archive_source:
        return f"GRN_ARCHIVE={options.archive_source}"
    return str(settings.jobs.archive_dir)


def check_archive(settings: Settings, options: Options) -> Path:
    """The archive folder, or an InputError saying what to fix."""
    fix = (
        "set GRN_ARCHIVE to the archive folder (images and labels.csv) and run "
        "`docker compose up -d` again"
    )
    if settings.jobs.archive_dir is None:
        raise InputError(f"no archive: GRN_ARCHIVE_DIR is not set; {fix}")
    root = settings.jobs.archive_dir
    if options.archive_source == "":
        raise InputError(f"no archive: GRN_ARCHIVE is not set; {fix}")
    name = _archive_name(settings, options)
    if not root.is_dir() or not any(root.iterdir()):
        raise InputError(
            f"the archive {name} is empty or does not exist (Docker mounts a missing folder "
            f"as an empty one); {fix}"
        )
    if not (root / "labels.csv").is_file():
        raise InputError(
            f"the archive {name} holds no labels.csv (image,scene,split, then one 0/1 column "
            f"per label if any: docs/usage.md); add it, or {fix}"
        )
    return root


def archive_fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and times of the archive's files: a retry waits for them to change."""
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


def wait_for_database(engine: Engine, seconds: float) -> None:
    from sqlalchemy import text

    deadline = time.monotonic() + seconds
    while True:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return
        except Exception as exc:
            if time.monotonic() >= deadline:
                url = engine.url.render_as_string(hide_password=True)
                raise DatabaseUnavailableError(
                    f"the database {url} does not answer ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); check GRN_DATABASE_URL "
                    "and that the postgres service is running"
                ) from exc
            time.sleep(1)


def run_child(args: Sequence[str]) -> StepResult:
    """`grn ARGS` in a child process, its output passed to ours line by line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert process.stdout is not None
    error, last = None, None
    for line in process.stdout:
        sys.stderr.write(line)
        sys.stderr.flush()
        stripped = line.strip()
        if stripped:
            last = stripped
        if stripped.startswith("error: "):
            error = stripped.removeprefix("error: ")
    code = process.wait()
    return StepResult(code, None if code == 0 else (error or last or f"exit status {code}"))


def prepare(
    settings: Settings,
    options: Options,
    state: Preparation,
    runner: Runner = run_child,
    make_engine: Callable[[str], Engine] | None = None,
) -> None:
    """The steps in order (see the module docstring); sets `state` as it goes. Raises
    InputError or PreparationError when a step cannot go on."""
    from index.stores import is_current, open_store
    from service.storage.db import make_engine as default_make_engine
    from service.storage.dialects import ensure_database_folder
    from service.storage.migrate import current_revision, upgrade
    from service.usecases.importer import import_archive

    def step(words: str) -> None:
        with state.lock:
            state.step = words
        say(words)

    step("checking the archive")
    root = check_archive(settings, options)

    engine = (make_engine or default_make_engine)(settings.database.database_url)
    ensure_database_folder(engine)  # the embedded default
    try:
        step("waiting for the database")
        wait_for_database(engine, options.database_wait_seconds)
        step("migrating the database schema")
        upgrade(engine)
        say(f"database schema at {current_revision(engine)}")
        step(f"importing {_archive_name(settings, options)}")
        try:
            report = import_archive(engine, root, progress=False)
        except ValueError as exc:  # ArchiveError: the labels file or the folder
            raise InputError(f"the archive {_archive_name(settings, options)}: {exc}") from exc
    finally:
        engine.dispose()
    say(
        f"imported {report.added} scenes ({report.skipped} already present, "
        f"{len(report.broken)} unreadable) in {report.seconds:.1f} s"
    )
    if report.broken:
        first = report.broken[0]
        if not options.skip_broken:
            raise InputError(
                f"{len(report.broken)} images of the archive cannot be read (first: "
                f"{first.error}); replace or remove them, or set GRN_SKIP_BROKEN=1 to leave "
                "them out, and run `docker compose up -d` again"
            )
        say(f"leaving out {len(report.broken)} unreadable images (GRN_SKIP_BROKEN)")
    broken = ["--skip-broken"] if options.skip_broken else []

    model = settings.model.model_path
    if not has_torch() and not servable(model):  # the serving image: the trainer trains it
        step(f"training a model into {model.parent} (head mode) in the trainer service")
        while not servable(model):
            time.sleep(options.model_wait_seconds)
    train_when_missing(settings, options, root, step, runner)

    step("building the index when stale")
    store = open_store(settings.store)
    try:
        current = is_current(store, model, root)
    except Exception:  # unreadable index, store not answering: `grn reindex` will say
        current = False
    finally:
        store.close()
    if current:
        say(f"the index in {store.location} is current for this model and archive")
        return
    indexed = runner(
        [
            "reindex", "--model", str(model), "--archive", str(root),
            "--index-root", str(settings.store.index_root), "--if-stale", "--quiet", *broken,
        ]
    )  # fmt: skip
    if indexed.returncode != 0:
        raise PreparationError(f"indexing failed: {indexed.error}")


def has_torch() -> bool:
    """Whether torch can be imported here (the serving image has none: it runs the model's
    ONNX graph, and the trainer image trains)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def servable(model: Path) -> bool:
    """Whether the model file is there with its ONNX graph, which training stores last (the
    epochs before are saved without it): what a serving image without torch can run."""
    from model.card import has_graph

    try:
        return model.is_file() and has_graph(model)
    except Exception:  # not a model file (yet): the trainer says what is wrong
        return False


def train_when_missing(
    settings: Settings, options: Options, root: Path, step: Callable[[str], None], runner: Runner
) -> None:
    """`grn train` (head mode) into GRN_MODEL_PATH's folder when it holds no model."""
    model = settings.model.model_path
    if model.is_file():
        say(f"model {model} is present: not training")
        return
    step(f"training a model into {model.parent} (head mode)")
    broken = ["--skip-broken"] if options.skip_broken else []
    trained = runner(
        [
            "train", "--archive", str(root), "--out", str(model.parent), "--mode", "head",
            "--cache-dir", str(model.parent / "feature-cache"), "--quiet",
            *broken, *options.train_options,
        ]
    )  # fmt: skip
    if trained.returncode != 0:
        raise PreparationError(f"training failed: {trained.error}")
    if not model.is_file():
        raise PreparationError(
            f"training finished without writing {model}: GRN_MODEL_PATH must name "
            "model.safetensors in the training folder"
        )


def train_only(settings: Settings, options: Options, runner: Runner = run_child) -> None:
    """`grn up --train-only` (the compose `trainer` service, on the image with torch): check
    the archive and train when there is no model; no database, no serving. Raises
    PreparationError (or InputError) when it cannot."""
    train_when_missing(settings, options, check_archive(settings, options), say, runner)
    from model.card import add_graph

    # a model from an interrupted run, or from a release before graphs: its graph stored
    card = add_graph(settings.model.model_path)
    say(f"model {card.version} is ready to serve, with its ONNX graph")


def prepare_until_done(
    settings: Settings,
    options: Options,
    state: Preparation,
    runner: Runner = run_child,
    *,
    stop: threading.Event | None = None,
    make_engine: Callable[[str], Engine] | None = None,
) -> None:
    """`prepare`, looked at again while it fails on its inputs (every `retry_seconds`, and
    only once the archive's files changed unless the database was the problem)."""
    stop = stop or threading.Event()
    while not stop.is_set():
        before = _archive_state(settings)
        with state.lock:
            state.error = None  # a new attempt: /readyz follows its steps again
        try:
            prepare(settings, options, state, runner, make_engine)
        except InputError as exc:
            _stopped(state, str(exc))
            while not stop.wait(options.retry_seconds):
                if _archive_state(settings) != before or isinstance(exc, DatabaseUnavailableError):
                    break
            continue
        except Exception as exc:  # a failed training or reindex: not retried by itself
            _stopped(state, str(exc) or type(exc).__name__)
            return
        with state.lock:
            state.done, state.error, state.step = True, None, "done"
        say("prepared: the service takes up the model and index within seconds")
        return


def _archive_state(settings: Settings) -> tuple[tuple[str, int, int], ...]:
    folder = settings.jobs.archive_dir
    return archive_fingerprint(folder) if folder is not None and folder.is_dir() else ()


def _stopped(state: Preparation, message: str) -> None:
    with state.lock:
        changed = state.error != message
        state.error = message
    if changed:
        say(f"error: {message}")
