"""`grn synth` and `grn import --bulk` at 20,000 scenes, on SQLite and PostgreSQL: counts,
filtered searches equal to brute force over the archive's own vectors, and a bulk import
SIGKILLed half way that `grn reconcile --repair` and a second run complete, nothing written
twice and nothing lost. Correctness only; the speed is bench/bulk_import.py's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from commands import grn
from servers import empty_database
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from index.filters import SceneFilter
from index.given_vectors import GivenVectors
from index.stores import open_store
from index.synth_params import DEFAULT_PARAMS, SynthParams, SynthParamsError
from model.archive import load_archive, scene_id
from model.archive_table import ArchiveTable, read_archive_table
from model.heads import unpack_heads
from service.settings import Settings
from service.storage.db import ArchiveImport, Scene, SceneFootprint, SceneLabel, make_engine
from service.usecases.local_search import search_here
from service.usecases.search import SearchQuery

REPO = Path(__file__).resolve().parents[2]
SCENES = 20_000
HALF = SCENES // 2


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """make run's model: the shipped heads on the installed backbone weights."""
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    unpack_heads(REPO / "model/defaults/ucm-head.heads.safetensors", path)
    return path


@pytest.fixture(scope="module")
def synthetic(model: Path, ucm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "archive"
    done = grn("synth", "--scenes", str(SCENES), "--out", str(out), "--model", str(model),
               "--images", str(ucm_root), "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_the_archive_is_one_the_plain_import_reads(synthetic: Path) -> None:
    archive = load_archive(synthetic)
    table = read_archive_table(synthetic)
    given = GivenVectors.open(synthetic / "vectors")
    assert len(archive) == len(table) == len(given.ids) == SCENES
    assert [s.name for s in archive.scenes] == table.names
    assert np.array_equal(given.ids, [scene_id(s.name) for s in archive.scenes])
    assert np.allclose(np.linalg.norm(given.vectors, axis=1), 1, atol=1e-5)
    # every scene shows a real image inside the archive (the plain import resolves links)
    for scene in archive.scenes[:: SCENES // 50]:
        assert scene.path.resolve().is_relative_to(synthetic.resolve())
    assert table.placed.all() and len({g[:40] for g in table.geometry}) > 1
    # labels as in UCM: about 3.3 a scene, every label used
    assert 2.8 < table.labels.sum(axis=1).mean() < 3.8
    assert table.labels.any(axis=0).all()


def test_parameters_of_another_model_are_refused(tmp_path: Path) -> None:
    params = SynthParams.load(DEFAULT_PARAMS)
    with pytest.raises(SynthParamsError, match="fitted to model"):
        params.check_model("grn-0000000000000000", params.vector_dim)
    with pytest.raises(SynthParamsError, match="fitted to model"):
        params.check_model(params.model_version, params.vector_dim + 1)


def _env(url: str, model: Path, index: Path) -> dict[str, str]:
    return {"GRN_DATABASE_URL": url, "GRN_MODEL_PATH": str(model), "GRN_INDEX_ROOT": str(index)}


def _brute_force(
    table: ArchiveTable, vectors: np.ndarray, query: int, where: SceneFilter, k: int
) -> list[int]:
    """The k nearest scenes to scene `query` among those that pass `where`, by exact inner
    product over the archive's own vectors (the query itself left out)."""
    passing = np.ones(len(table), bool)
    names = table.label_names
    for label in where.labels_all:
        passing &= table.labels[:, names.index(label)] == 1
    if where.labels_any:
        passing &= table.labels[:, [names.index(n) for n in where.labels_any]].any(axis=1)
    for label in where.labels_none:
        passing &= table.labels[:, names.index(label)] == 0
    if where.folder is not None:
        passing &= np.asarray(table.folders) == where.folder
    if where.bbox is not None:
        west, south, east, north = where.bbox
        b = table.bounds
        passing &= (b[:, 0] <= east) & (b[:, 2] >= west) & (b[:, 1] <= north) & (b[:, 3] >= south)
    added = np.asarray([a.timestamp() for a in table.added])
    if where.added_after is not None:
        passing &= added >= where.added_after.timestamp()
    if where.added_before is not None:
        passing &= added < where.added_before.timestamp()
    passing[query] = False
    candidates = np.flatnonzero(passing)
    scores = vectors[candidates] @ vectors[query]
    return [int(table.ids[i]) for i in candidates[np.argsort(-scores, kind="stable")[:k]]]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_bulk_import_killed_half_way_completes_and_searches_as_brute_force(
    kind: str, synthetic: Path, model: Path, tmp_path: Path
) -> None:
    table = read_archive_table(synthetic)
    with empty_database(kind, tmp_path) as url:
        env = _env(url, model, tmp_path / "index")
        assert grn("db", "upgrade", env=env).returncode == 0
        bulk = ("import", str(synthetic), "--bulk", "--batch", str(HALF), "--quiet")
        killed = grn(*bulk, env={**env, "GRN_FAULT_KILL_AT": "bulk-batch:1"})
        assert killed.returncode == -9, killed.stderr  # SIGKILLed after its first batch
        engine = make_engine(url)
        with Session(engine) as session:
            held = np.asarray(session.scalars(select(Scene.id)).all())
        assert len(held) == HALF  # whole batches only
        drift = grn("reconcile", "--json", env=env)
        assert drift.returncode == 1
        assert json.loads(drift.stdout)["missing_from_index"] == HALF

        repaired = grn("reconcile", "--repair", "--json", "--quiet", env=env)
        assert repaired.returncode == 0, repaired.stderr
        assert json.loads(repaired.stdout)["after"]["clean"]
        store = open_store(Settings(database_url=url, index_root=tmp_path / "index").store)
        current = store.current()
        assert current is not None
        assert np.array_equal(store.ids(current.version), np.sort(held))

        resumed = grn(*bulk, env=env)
        assert resumed.returncode == 0, resumed.stderr
        assert f"imported {HALF} scenes ({HALF} already present" in resumed.stdout
        assert "embedded 0" in resumed.stdout  # the carried vectors, no image embedded
        current = store.current()
        assert current is not None
        # nothing twice, nothing lost: SQL, the index and the archive hold the same ids
        with Session(engine) as session:
            ids = np.sort(np.asarray(session.scalars(select(Scene.id)).all()))
            links = session.scalar(select(func.count()).select_from(SceneLabel))
            places = session.scalar(select(func.count()).select_from(SceneFootprint))
            imports = session.scalars(select(ArchiveImport.status)).all()
        assert np.array_equal(ids, np.sort(table.ids))
        assert np.array_equal(store.ids(current.version), ids)
        assert links == int(table.labels.sum()) and places == SCENES
        assert imports[-1] == "complete"
        status = json.loads(grn("status", "--json", env=env).stdout)
        assert status["scenes"]["sql"] == status["scenes"]["indexed"] == SCENES
        again = grn(*bulk, env=env)  # a third run has nothing to do
        assert again.returncode == 0, again.stderr
        assert f"imported 0 scenes ({SCENES} already present" in again.stdout
        assert "already holds SQL's scenes" in again.stdout
        assert store.current() == current

        served = store.open(current.version, current.model_version or "")
        given = GivenVectors.open(synthetic / "vectors")
        sample = table.ids[::997]
        assert np.allclose(served.vectors(sample), given.vectors[::997], atol=1e-6)
        store.close()

        settings = Settings(
            database_url=url, index_root=tmp_path / "index", model_path=model,
            backbone_rerank="off",
        )  # fmt: skip
        middle = datetime.fromtimestamp(
            float(np.median([a.timestamp() for a in table.added])), UTC
        )
        west, south = table.bounds[:, 0].min(), table.bounds[:, 1].min()
        east, north = table.bounds[:, 2].max(), table.bounds[:, 3].max()
        half_box = (west, south, (west + east) / 2, (south + north) / 2 + 5)
        filters = [
            SceneFilter(),
            SceneFilter(labels_all=["buildings", "cars"]),
            SceneFilter(labels_any=["water", "sea"], labels_none=["trees"]),
            SceneFilter(folder="harbor"),
            SceneFilter(bbox=half_box),
            SceneFilter(added_after=middle),
            SceneFilter(labels_any=["pavement"], bbox=half_box, added_before=middle),
        ]
        rng = np.random.default_rng(0)
        for query in rng.choice(SCENES, 3, replace=False):
            for where in filters:
                expected = _brute_force(table, given.vectors, int(query), where, 10)
                page = search_here(
                    settings, engine, SearchQuery(k=10, where=where), scene_id=int(table.ids[query])
                ).page
                assert [hit.scene.id for hit in page.hits] == expected, where
                assert len(expected) == 10  # each filter passes enough scenes for a full page
        engine.dispose()
