"""The catalog's arrays (`service.storage.scene_table`) on SQLite and PostgreSQL: every filter keeps
exactly the scenes SQL keeps, hits carry what SQL holds, and a write by another connection
(a label corrected, a scene removed, a scene added) shows in the next search."""

from __future__ import annotations

import itertools
from datetime import timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from servers import MIDDLE, OLD, date_scenes
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from index.filters import SceneFilter, SceneMeta, utc
from service.errors import BadRequestError
from service.storage.catalog import Catalog, SchemaNotCurrentError
from service.storage.db import CatalogChange, Label, Scene, SceneLabel, make_engine
from service.storage.filter_sql import scene_where
from service.storage.migrate import downgrade, upgrade
from service.storage.scene_table import SceneTable
from service.usecases.importer import import_archive


def sql_ids(catalog: Catalog, where: SceneFilter) -> list[int]:
    with Session(catalog.engine) as session:
        return sorted(session.scalars(select(Scene.id).where(*scene_where(session, where))))


def test_filters_and_hits_match_sql(database_url: str, ucm_root: Path, ucm_subset: Path) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    import_archive(engine, ucm_root, ucm_subset, progress=False)
    catalog = Catalog(engine)
    table = catalog.table()
    assert len(table) == 126
    with Session(engine) as session:
        scenes = session.scalars(select(Scene)).all()
        some = [s.id for s in scenes[:40]]
        for scene in scenes:
            row = table.rows([scene.id])[scene.id]
            assert (row.name, row.folder) == (scene.name, scene.folder)
            assert row.labels == tuple(label.name for label in scene.labels)
    assert table.rows([12345]) == {}  # an id the catalog does not hold
    labels = ["airplane", "pavement", "buildings", "water", "trees"]
    filters = [
        SceneFilter(labels_all=pair) for pair in itertools.combinations(labels, 2)
    ] + [
        SceneFilter(labels_any=["water", "ship"], labels_none=["trees"]),
        SceneFilter(labels_all=["pavement"], labels_none=["cars", "buildings"]),
        SceneFilter(folder="airplane"),
        SceneFilter(folder="no such folder"),
        SceneFilter(split="test", labels_any=["grass"]),
        SceneFilter(exclude_ids=some[:5], labels_all=["pavement"]),
        SceneFilter(allow_ids=np.asarray(some), labels_none=["trees"]),
        SceneFilter(allow_ids=[]),
        SceneFilter(),
    ]  # fmt: skip
    for where in filters:
        assert catalog.allowed_ids(where).tolist() == sql_ids(catalog, where), where
    for where in filters:  # again, from the masks the table keeps: the same scenes
        assert table.allowed(where).ids.tolist() == sql_ids(catalog, where), where
    kept = table.mask(SceneFilter(labels_all=["water", "trees"]))
    assert table.mask(SceneFilter(labels_all=["trees", "water"])) is kept  # one filter
    assert not kept.flags.writeable and kept.any()
    first = int(table.ids[np.flatnonzero(kept)[0]])
    fewer = table.mask(SceneFilter(labels_all=["water", "trees"], exclude_ids=[first]))
    assert fewer.sum() == kept.sum() - 1 and kept[table.positions([first])[0]]  # on a copy
    with pytest.raises(BadRequestError, match=r"unknown label.*volcano"):
        catalog.allowed_ids(SceneFilter(labels_all=["volcano"]))
    engine.dispose()


def test_time_added_on_the_arrays_matches_sql(
    database_url: str, ucm_root: Path, ucm_subset: Path
) -> None:
    """Every window of times, its edges and zones included, keeps the same scenes in the
    arrays (searches), in SQL (listings) and by the reference meaning (`passes`); a time
    another connection changes shows in the next search."""
    engine = make_engine(database_url)
    upgrade(engine)
    import_archive(engine, ucm_root, ucm_subset, progress=False)
    old, middle, rest = date_scenes(database_url)
    catalog = Catalog(engine)
    with engine.connect() as connection:
        added = {i: utc(t) for i, t in connection.execute(select(Scene.id, Scene.created_at))}
    assert {added[i] for i in old} == {OLD} and {added[i] for i in middle} == {MIDDLE}
    step = timedelta(microseconds=1)
    edges = [
        None, OLD, MIDDLE - step, MIDDLE, MIDDLE + step, max(added.values()),
        MIDDLE.astimezone(timezone(timedelta(hours=-7))),  # the same instant, elsewhere
        MIDDLE.replace(tzinfo=None) + step,  # no zone: UTC
    ]  # fmt: skip
    for after, before in itertools.product(edges, repeat=2):
        where = SceneFilter(added_after=after, added_before=before)
        expected = sorted(i for i, t in added.items() if where.passes(i, SceneMeta(added=t)))
        assert catalog.allowed_ids(where).tolist() == expected, where
        assert sql_ids(catalog, where) == expected, where
    assert catalog.allowed_ids(SceneFilter(added_before=MIDDLE)).tolist() == sorted(old)
    assert sql_ids(catalog, SceneFilter(added_after=MIDDLE + step)) == sorted(rest)
    # with the other conditions, in a listing's page
    where = SceneFilter(added_after=MIDDLE, labels_any=["water", "trees"], split="train")
    rows, total = catalog.page(where, 0, 1000)
    assert [row.id for row in rows] == catalog.allowed_ids(where).tolist() and total == len(rows)
    assert 0 < total < len(middle | rest)

    target = min(rest)
    with Session(make_engine(database_url)) as session, session.begin():  # another writer
        session.execute(update(Scene).where(Scene.id == target).values(created_at=OLD))
    assert target in catalog.allowed_ids(SceneFilter(added_before=MIDDLE))
    assert catalog.rows([target])[target].added == OLD
    engine.dispose()


def same(a: SceneTable, b: SceneTable) -> None:
    """Two tables hold the same scenes with the same metadata."""
    assert a.ids.tolist() == b.ids.tolist()
    assert a.rows(a.ids) == b.rows(b.ids)
    assert a.label_names == b.label_names
    np.testing.assert_array_equal(a.labels, b.labels)
    assert [a.split_names[c] for c in a.splits] == [b.split_names[c] for c in b.splits]


def test_writes_by_others_show_in_the_next_search(
    database_url: str,
    ucm_root: Path,
    ucm_subset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each write is patched in (only the scenes it touched are re-read) and the patched
    table equals one read whole; a new label, or a log pruned past the table, reads whole."""
    engine = make_engine(database_url)
    upgrade(engine)
    lines = ucm_subset.read_text().splitlines()
    first = tmp_path / "first.csv"
    first.write_text("\n".join(lines[:101]) + "\n")
    import_archive(engine, ucm_root, first, progress=False)
    catalog = Catalog(engine)  # the service's
    before = catalog.table()
    assert len(before) == 100
    reads: list[int | None] = []
    original = SceneTable.read.__func__  # type: ignore[attr-defined]

    def spy(cls, connection, only=None, generation=None, model_version=None):  # type: ignore[no-untyped-def]
        reads.append(None if only is None else len(only))
        return original(cls, connection, only, generation, model_version)

    monkeypatch.setattr(SceneTable, "read", classmethod(spy))
    writer = make_engine(database_url)  # another process's connection
    target = int(before.ids[0])
    carried = catalog.rows([target])[target].labels
    assert carried
    with Session(writer) as session, session.begin():  # a label corrected
        label_id = session.scalar(select(Label.id).where(Label.name == carried[0]))
        session.execute(
            delete(SceneLabel).where(SceneLabel.scene_id == target, SceneLabel.label_id == label_id)
        )
    assert catalog.rows([target])[target].labels == carried[1:]
    assert catalog.table().generation > before.generation and reads == [1]
    gone = int(before.ids[1])
    with Session(writer) as session, session.begin():  # a scene removed
        session.execute(delete(SceneLabel).where(SceneLabel.scene_id == gone))
        session.execute(delete(Scene).where(Scene.id == gone))
    assert gone not in catalog.rows([gone]) and len(catalog.table()) == 99
    assert reads == [1, 1]
    import_archive(writer, ucm_root, ucm_subset, progress=False)  # 27 back or new
    assert len(catalog.table()) == 126 and reads == [1, 1, 27]
    with writer.connect() as connection:
        same(catalog.table(), SceneTable.read(connection))
    unchanged = catalog.table()
    assert catalog.table() is unchanged  # no write, no reload
    reads.clear()
    with Session(writer) as session, session.begin():  # a new label: read whole
        session.add(Label(name="volcano"))
    assert "volcano" in catalog.table().label_names and reads == [None]
    reads.clear()
    with Session(writer) as session, session.begin():  # renamed, then the log pruned
        session.execute(
            update(Scene).where(Scene.id == target).values(name="renamed", folder="elsewhere")
        )
        session.execute(delete(CatalogChange))
    row = catalog.rows([target])[target]
    assert (row.name, row.folder) == ("renamed", "elsewhere") and reads == [None]
    writer.dispose()
    engine.dispose()


def test_an_old_schema_is_named(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    downgrade(engine, "0001_initial_schema")
    with pytest.raises(SchemaNotCurrentError, match="grn db upgrade"):
        Catalog(engine).table()
    upgrade(engine)
    with engine.begin() as connection:
        assert connection.execute(text("SELECT generation FROM catalog_state")).scalar() == 0
    engine.dispose()


def test_short_searches_run_on_the_loop_with_current_arrays(
    database_url: str, ucm_root: Path, ucm_subset: Path
) -> None:
    """A search runs on the event loop only while searches have been short, the database is
    local (SQLite) and the arrays are current; otherwise, and always on PostgreSQL, in a
    thread that refreshes the arrays (`service.api.routes.search.searched`)."""
    import asyncio
    import threading
    import time

    from service.api.deps import LoopBudget
    from service.api.routes.search import searched

    engine = make_engine(database_url)
    upgrade(engine)
    import_archive(engine, ucm_root, ucm_subset, progress=False)
    catalog = Catalog(engine)
    budget = LoopBudget(budget_ms=2.0)
    calls: list[tuple[bool, SceneTable | None]] = []
    pause = 0.0

    def search(table: SceneTable | None) -> int:
        calls.append((threading.current_thread() is threading.main_thread(), table))
        time.sleep(pause)
        return len(catalog.table() if table is None else table)

    def run() -> tuple[bool, SceneTable | None]:
        assert asyncio.run(searched(budget, catalog, search)) == len(catalog.table())  # type: ignore[arg-type]
        return calls[-1]

    catalog.table()  # read whole beforehand, so that the first timed search is short
    assert run() == (False, None)  # not yet timed: a thread
    local = catalog.local
    assert local == database_url.startswith("sqlite")
    on_loop, table = run()
    assert on_loop is local and (table is catalog.table() if local else table is None)
    with Session(make_engine(database_url)) as session, session.begin():  # another writer
        session.execute(
            update(Scene).where(Scene.id == int(table_ids(catalog)[0])).values(name="x")
        )
    assert run() == (False, None)  # stale arrays: refreshed in a thread
    pause = 0.02
    run()  # a slow search (on the loop when local) pushes the next ones to a thread
    pause = 0.0
    assert not budget.fits and run() == (False, None)
    engine.dispose()


def table_ids(catalog: Catalog) -> np.ndarray:
    return catalog.table().ids
