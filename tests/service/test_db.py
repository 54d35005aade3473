"""The SQL store on SQLite and on PostgreSQL: migrations up and down, and `grn import`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from servers import REPO, Served
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from model.archive import load_archive, scene_id
from model.card import read_card
from service.storage.catalog import Catalog
from service.storage.db import ArchiveImport, Base, Label, Scene, SceneLabel, make_engine
from service.storage.migrate import (
    current_revision,
    downgrade,
    head_revision,
    include_object,
    upgrade,
)
from service.usecases.importer import CHUNK, import_archive

TABLES = {"archives", "labels", "scenes", "scene_labels", "model_versions", "index_builds"}


def test_migrations_round_trip_and_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) >= TABLES
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include_object}
        )
        assert compare_metadata(context, Base.metadata) == []  # the revisions build the models
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def stored_labels(engine) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        rows = session.execute(
            select(Scene.name, Label.name)
            .join(SceneLabel, SceneLabel.scene_id == Scene.id)
            .join(Label, Label.id == SceneLabel.label_id)
        )
        out: dict[str, set[str]] = {}
        for scene, label in rows:
            out.setdefault(scene, set()).add(label)
        return out


def test_import_is_idempotent_and_complete(
    database_url: str, ucm_root: Path, ucm_subset: Path
) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    first = import_archive(engine, ucm_root, ucm_subset, progress=False)
    assert (first.added, first.skipped, first.broken) == (126, 0, [])
    second = import_archive(engine, ucm_root, ucm_subset, progress=False)
    assert (second.added, second.skipped) == (0, 126)
    archive = load_archive(ucm_root, ucm_subset)
    want = {
        s.name: {n for n, v in zip(archive.label_names, s.labels, strict=True) if v}
        for s in archive.scenes
    }
    got = stored_labels(engine)
    assert {name: got.get(name, set()) for name in want} == want
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Scene)) == 126
        scene = session.get(Scene, scene_id(archive.scenes[0].name))
        assert scene is not None and scene.width == 256 and len(scene.checksum) == 64
        statuses = session.scalars(select(ArchiveImport.status)).all()
        assert statuses == ["complete", "complete"]
    engine.dispose()


def test_broken_files_are_reported_and_skipped(
    database_url: str, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    archive = load_archive(ucm_root, ucm_subset)
    copy = tmp_path / "archive"
    (copy / "images").mkdir(parents=True)
    for scene in archive.scenes[:12]:
        shutil.copy(scene.path, copy / "images" / scene.path.name)
    lines = ucm_subset.read_text().splitlines()
    (copy / "labels.csv").write_text("\n".join(lines[:13]) + "\n")
    broken = copy / "images" / archive.scenes[3].path.name
    broken.write_bytes(broken.read_bytes()[:200])
    engine = make_engine(database_url)
    upgrade(engine)
    report = import_archive(engine, copy, progress=False)
    assert report.added == 11 and [b.name for b in report.broken] == [archive.scenes[3].name]
    with Session(engine) as session:
        assert session.get(Scene, scene_id(archive.scenes[3].name)) is None
    engine.dispose()


def grn(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def test_a_killed_import_leaves_whole_scenes_and_a_rerun_completes(
    database_url: str, ucm_root: Path
) -> None:
    upgraded = grn("db", "upgrade", "--database-url", database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    killed = grn(
        "import",
        str(ucm_root),
        "--database-url",
        database_url,
        "--quiet",
        GRN_FAULT_KILL_AT="import-chunk:2",
    )
    assert killed.returncode == -9, killed.stderr
    engine = make_engine(database_url)
    archive = load_archive(ucm_root)
    want = {
        s.name: {n for n, v in zip(archive.label_names, s.labels, strict=True) if v}
        for s in archive.scenes
    }
    with Session(engine) as session:
        names = session.scalars(select(Scene.name)).all()
    assert len(names) == 2 * CHUNK  # two whole chunks, nothing of the third
    got = stored_labels(engine)
    assert all(got.get(name, set()) == want[name] for name in names)
    rerun = grn("import", str(ucm_root), "--database-url", database_url, "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert f"imported {len(archive) - 2 * CHUNK} scenes ({2 * CHUNK} already present" in (
        rerun.stdout
    )
    got = stored_labels(engine)
    assert {name: got.get(name, set()) for name in want} == want
    engine.dispose()


def test_import_refuses_an_unmigrated_database(tmp_path: Path, ucm_root: Path) -> None:
    result = grn("import", str(ucm_root), "--database-url", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 1 and "grn db upgrade" in result.stderr


@pytest.mark.parametrize("bad", ["no-such-folder"])
def test_import_names_a_missing_archive(tmp_path: Path, bad: str) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert grn("db", "upgrade", "--database-url", url).returncode == 0
    result = grn("import", str(tmp_path / bad), "--database-url", url)
    assert result.returncode == 1 and bad in result.stderr


def test_status_reports_versions_and_what_is_stale(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    env = {
        "GRN_DATABASE_URL": f"sqlite:///{tmp_path / 'grn.db'}",
        "GRN_MODEL_PATH": str(served.model),
        "GRN_INDEX_ROOT": str(served.index_root),
    }
    fresh = grn("status", "--json", **env)
    assert fresh.returncode == 1
    assert any("grn db upgrade" in s for s in json.loads(fresh.stdout)["stale"])
    assert grn("db", "upgrade", **env).returncode == 0
    empty = json.loads(grn("status", "--json", **env).stdout)
    assert any(
        s.startswith("126 indexed scenes are not in SQL: run `grn import` if SQL lost them")
        for s in empty["stale"]
    )
    assert empty["scenes"] == {
        "sql": 0,
        "indexed": 126,
        "not_indexed": 0,
        "unknown_to_sql": 126,
        "added_not_folded": 0,
    }
    assert empty["schema"]["current"] is True and empty["index"]["store"] == "faiss"
    assert grn("import", str(ucm_root), "--labels", str(ucm_subset), **env).returncode == 0
    done = grn("status", **env)
    assert done.returncode == 0, done.stdout
    assert "126 in SQL, 126 in the index" in done.stdout and "stale: nothing" in done.stdout
    assert read_card(served.model).version in done.stdout
    assert "render cache: " in done.stdout and "MiB and 200000 files" in done.stdout
    missing = grn("status", "--json", **{**env, "GRN_INDEX_ROOT": str(tmp_path / "none")})
    assert "no index: run `grn reindex`" in json.loads(missing.stdout)["stale"]


def test_revisions_read_without_alembic_are_alembic_s(database_url: str) -> None:
    """`head_revision` (the revision files read as text) and `current_revision` (one row of
    `alembic_version`) answer what Alembic answers, before and after migrating."""
    from alembic.script import ScriptDirectory

    from service.storage.migrate import alembic_config

    engine = make_engine(database_url)
    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()

    def alembic_s() -> str | None:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    assert current_revision(engine) is None and alembic_s() is None
    upgrade(engine, "0003_scene_writes")
    assert current_revision(engine) == alembic_s() == "0003_scene_writes"
    upgrade(engine)
    assert current_revision(engine) == alembic_s() == head_revision()
    engine.dispose()


def test_the_catalog_reads_every_scene_id_sorted(
    database_url: str, ucm_root: Path, ucm_subset: Path
) -> None:
    """`Catalog.id_array` (what `grn status` and `grn reconcile` compare with an index's
    ids) reads through the driver's cursor: SQL's ids, each once, ascending, as int64."""
    engine = make_engine(database_url)
    upgrade(engine)
    assert len(Catalog(engine).id_array()) == 0
    import_archive(engine, ucm_root, ucm_subset, progress=False)
    with Session(engine) as session:
        stored = session.scalars(select(Scene.id)).all()
    got = Catalog(engine).id_array()
    assert got.dtype == np.int64 and got.tolist() == sorted(stored) and len(stored) == 126
    engine.dispose()


def _search(*args: str, database_url: str, served: Served, index_root: Path) -> dict[str, Any]:
    """`grn search ... --json` from the model, index and SQL given, as a user runs it."""
    done = grn(
        "search", *args, "--json",
        GRN_DATABASE_URL=database_url, GRN_MODEL_PATH=str(served.model),
        GRN_INDEX_ROOT=str(index_root), GRN_DEVICE="cpu", OMP_NUM_THREADS="1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_archive_without_label_columns_imports_and_is_searchable(
    database_url: str, served: Served, ucm_root: Path, ucm_unlabelled: Path, tmp_path: Path
) -> None:
    from index.stores.faiss_build import ReindexSettings, reindex

    engine = make_engine(database_url)
    upgrade(engine)
    imported = grn(
        "import", str(ucm_root), "--labels", str(ucm_unlabelled), "--database-url",
        database_url, "--quiet",
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert "imported 126 scenes (0 already present, 0 unreadable)" in imported.stdout
    archive = load_archive(ucm_root, ucm_unlabelled)
    ids = {scene_id(s.name): s.name for s in archive.scenes}
    with Session(engine) as session:
        stored = dict(session.execute(select(Scene.id, Scene.name)).all())
        assert session.scalar(select(func.count()).select_from(SceneLabel)) == 0
        assert session.scalar(select(func.count()).select_from(Label)) == 0
    assert stored == ids
    again = import_archive(engine, ucm_root, ucm_unlabelled, progress=False)
    assert (again.added, again.skipped) == (0, 126)
    with Session(engine) as session:
        assert dict(session.execute(select(Scene.id, Scene.name)).all()) == ids
    engine.dispose()

    # embedded by a model trained elsewhere (the served one), then searched by scene id
    index_root = tmp_path / "index"
    reindex(
        served.model, ucm_root, index_root, labels_csv=ucm_unlabelled,
        settings=ReindexSettings(factory="Flat"), device="cpu", progress=False,
    )  # fmt: skip
    query = scene_id(archive.scenes[10].name)
    found = _search(
        "--scene", str(query), "--k", "5",
        database_url=database_url, served=served, index_root=index_root,
    )  # fmt: skip
    hits = found["hits"]
    assert len(hits) == 5 and str(query) not in [h["id"] for h in hits]
    assert all(ids[int(h["id"])] == h["image"] and h["labels"] == [] for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_a_partly_labelled_archive_imports_the_labels_it_has(
    database_url: str, served: Served, ucm_root: Path, ucm_partly_labelled: Path
) -> None:
    from index.filters import SceneFilter
    from service.storage.scene_table import SceneTable

    engine = make_engine(database_url)
    upgrade(engine)
    report = import_archive(engine, ucm_root, ucm_partly_labelled, progress=False)
    assert report.added == 126
    archive = load_archive(ucm_root, ucm_partly_labelled)
    unlabelled = {s.name for s in archive.scenes if not s.labelled}
    assert len(unlabelled) == 28  # 21 train, 7 val
    want = {
        s.name: {n for n, v in zip(archive.label_names, s.labels, strict=True) if v}
        for s in archive.scenes
        if s.labelled
    }
    got = stored_labels(engine)
    assert not unlabelled & set(got)
    assert {name: got.get(name, set()) for name in want} == want

    # label filters never match a scene whose labels are unknown; "none of" passes it, as
    # it passes a scene labelled with none of them (SQL does not tell the two apart)
    water = {s.name for s in archive.scenes if s.name in want and "water" in want[s.name]}
    assert water
    with engine.connect() as connection:
        table = SceneTable.read(connection)
    names = set(table.names[table.mask(SceneFilter(labels_none=["water"]))])
    assert unlabelled <= names and not water & names
    engine.dispose()
    query = scene_id(next(s.name for s in archive.scenes if not s.labelled))
    found = _search(
        "--scene", str(query), "--k", "126", "--labels-any", "water",
        database_url=database_url, served=served, index_root=served.index_root,
    )  # fmt: skip
    assert {h["image"] for h in found["hits"]} == water
    assert all("water" in h["labels"] for h in found["hits"])
