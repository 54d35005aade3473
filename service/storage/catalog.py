"""Scene metadata queries. Searches read the metadata from arrays (`Catalog.table`, a
`SceneTable` reloaded when the catalog's generation moves): filters a vector store cannot
evaluate become an id allow-list there, and hits get their name, folder and labels there.
Pages of scenes, label and folder counts and single scenes come from SQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Connection, Engine, delete, func, select
from sqlalchemy.orm import Session

from index.filters import SceneFilter
from index.stores import ServedIndex
from service.errors import SceneNotFoundError
from service.storage.db import CatalogChange, IndexBuild, Label, ModelVersion, Scene, SceneLabel
from service.storage.dialects import is_embedded, postgis_schema
from service.storage.filter_sql import scene_where, sql_filters
from service.storage.listing import ListedScene, Order, Seek, listed, page_rows
from service.storage.live_index import LiveIndex
from service.storage.same_place import by_acquisition, overlaps
from service.storage.scene_reading import (
    SchemaNotCurrentError as SchemaNotCurrentError,  # re-exported
)
from service.storage.scene_reading import generation_of
from service.storage.scene_table import SceneRow, SceneTable
from service.storage.spatial import footprints, sources_of

CHANGE_LOG = 1_000_000
"""Generations of the change log kept (`Catalog._prune`)."""


class Catalog:
    def __init__(self, engine: Engine, *, postgis: bool = True) -> None:
        self.engine = engine
        self._postgis: str | bool | None = postgis
        """Whether listings may use PostGIS (True: when the database has it; then the
        schema of its functions, or None where it has not)."""
        self._table: SceneTable | None = None
        self._loading = threading.Lock()
        self._pruned = 0
        self.vector_model: str | None = None
        """The model whose written embeddings (`scene_vectors`) the arrays hold: the served
        one (`table(model_version)` sets it)."""
        self._live: tuple[tuple[int, int, str | None], LiveIndex] | None = None

    def generation(self) -> int:
        """The catalog's change counter (raised by triggers on every write)."""
        with self.engine.connect() as connection:
            return generation_of(connection)

    @property
    def local(self) -> bool:
        """SQLite: reading the generation is a read of a local file that, in WAL mode, never
        waits for a writer (cheap enough for the event loop)."""
        return is_embedded(self.engine)

    def fresh_table(self) -> SceneTable | None:
        """The arrays if they are as of the current generation, else None (without loading
        them: the caller refreshes them off the event loop)."""
        return self._as_of(self.generation())

    def _as_of(self, generation: int) -> SceneTable | None:
        table = self._table
        if table is None or table.written.model_version != self.vector_model:
            return None
        return table if table.generation == generation else None

    def table(self, model_version: str | None = None) -> SceneTable:
        """The scene metadata in arrays, as of the catalog's current generation, with the
        written embeddings of `model_version` (default: the model last asked for): read whole
        the first time or for another model, then patched with the scenes changed since (one
        thread refreshes, others wait for it)."""
        if model_version is not None:
            self.vector_model = model_version
        generation = self.generation()
        current = self._as_of(generation)
        if current is not None:
            return current
        with self._loading:
            table = self._table
            if (
                table is None
                or table.generation < generation
                or table.written.model_version != self.vector_model
            ):
                with self.engine.connect() as connection:
                    table = self._refreshed(connection, table)
                self._table = table
            return table

    def live(self, base: ServedIndex, table: SceneTable) -> LiveIndex:
        """The index version `base` as of the table's generation (`service.storage.live_index`),
        made once per pair."""
        key = (id(base), table.generation, table.written.model_version)
        cached = self._live
        if cached is not None and cached[0] == key and cached[1].base is base:
            return cached[1]
        live = LiveIndex(base, table)
        self._live = (key, live)
        return live

    def _refreshed(self, connection: Connection, table: SceneTable | None) -> SceneTable:
        # the generation first: every change up to it has committed (writers hold its row)
        generation = generation_of(connection)
        model = self.vector_model
        if table is None or table.written.model_version != model:
            return SceneTable.read(connection, generation=generation, model_version=model)
        oldest = connection.scalar(select(func.min(CatalogChange.generation)))
        changes = connection.execute(
            select(CatalogChange.scene_id).distinct()
            .where(CatalogChange.generation > table.generation)
            .where(CatalogChange.generation <= generation)
        ).scalars().all()  # fmt: skip
        if oldest is None or oldest > table.generation + 1 or None in changes:
            # the log no longer reaches back to this table, or labels changed
            return SceneTable.read(connection, generation=generation, model_version=model)
        if len(changes) > max(1000, len(table) // 4):  # cheaper whole
            return SceneTable.read(connection, generation=generation, model_version=model)
        patched = table.patched(connection, np.asarray(changes, dtype=np.int64), generation)
        self._prune(patched.generation)
        return patched

    def _prune(self, generation: int) -> None:
        """Forget changes more than CHANGE_LOG generations old (a process that far behind
        reads the table whole), at most once every CHANGE_LOG // 10 generations."""
        horizon = generation - CHANGE_LOG
        if horizon <= self._pruned + CHANGE_LOG // 10:
            return
        with self.engine.begin() as connection:
            connection.execute(delete(CatalogChange).where(CatalogChange.generation <= horizon))
        self._pruned = horizon

    def label_names(self) -> list[str] | None:
        """The archive's labels as of the arrays last read, or None before the first read
        (then `table().label_names`, off the event loop). Labels change only with an
        import, which the next search's refresh brings in."""
        table = self._table
        return None if table is None else table.label_names

    def check_labels(self, names: Sequence[str]) -> None:
        """Raise the 400 of an unknown label name."""
        self.table().check_labels(names)

    def allowed_ids(self, f: SceneFilter) -> np.ndarray:
        """The sorted ids of the scenes that pass the filter (400 for an unknown label)."""
        return self.table().allowed_ids(f)

    def rows(self, ids: Sequence[int] | np.ndarray) -> dict[int, SceneRow]:
        """Search hits' metadata by id; ids the catalog does not hold are absent."""
        return self.table().rows(ids)

    def scenes(self, ids: Sequence[int]) -> dict[int, Scene]:
        """Scenes (with labels and archive loaded) by id; ids not in the store are absent."""
        if not ids:
            return {}
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.scalars(select(Scene).where(Scene.id.in_(list(ids)))).all()
            return {row.id: row for row in rows}

    def postgis(self) -> str | None:
        """The schema of PostGIS's functions where listings use it (`spatial.postgis_schema`;
        looked up once), else None."""
        if self._postgis is True:
            with self.engine.connect() as connection:
                self._postgis = postgis_schema(connection)
        return self._postgis or None

    def footprints(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The stored footprints of these scenes, by id (scenes without one are absent)."""
        with self.engine.connect() as connection:
            return footprints(connection, ids)

    def sources(self, ids: Sequence[int]) -> dict[int, str | None]:
        """Each scene's source raster (scenes without a footprint are absent)."""
        with self.engine.connect() as connection:
            return sources_of(connection, ids)

    def overlaps(self, scene_id: int) -> dict[int, float] | None:
        """The other scenes whose footprint covers part of this scene's, with the share each
        covers (`same_place.overlaps`); None when it has no footprint with an area; a
        `SceneNotFoundError` for an unknown scene."""
        gis = self.postgis()
        with self.engine.connect() as connection:
            if connection.scalar(select(Scene.id).where(Scene.id == scene_id)) is None:
                raise SceneNotFoundError(f"no scene with id {scene_id}")
            return overlaps(connection, scene_id, gis)

    def by_acquisition(self, ids: Sequence[int], offset: int, limit: int) -> list[ListedScene]:
        """A page of these scenes by acquisition time (unknown last, then by id)."""
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.execute(by_acquisition(list(ids), limit, offset)).all()
            return listed(session, rows)

    def scene(self, scene_id: int) -> Scene:
        found = self.scenes([scene_id]).get(scene_id)
        if found is None:
            raise SceneNotFoundError(f"no scene with id {scene_id}")
        return found

    def page(
        self,
        f: SceneFilter,
        offset: int,
        limit: int,
        *,
        name: str | None = None,
        order: Order = "id",
        after: Seek | None = None,
        count: bool = True,
    ) -> tuple[list[ListedScene], int | None]:
        """A page of the scenes that pass `f` (and whose image name contains `name`), by id
        or by name, past `offset` scenes or after the position `after` (keyset: its cost does
        not grow with the depth), with the total (None when `count` is false): in SQL
        (`filter_sql.scene_where`), but for the conditions SQL does not test here, which the
        arrays resolve into an allow-list."""
        gis, f = self._for_sql(f)
        with Session(self.engine, expire_on_commit=False) as session:
            total = self._count(session, f, gis, name) if count else None
            where = self._where(session, f, gis, name, after)
            rows = page_rows(session, where, order, limit, offset=offset, after=after)
            return listed(session, rows), total

    def walk(
        self, f: SceneFilter, *, name: str | None = None, order: Order = "id", chunk: int = 1000
    ) -> Iterator[list[ListedScene]]:
        """Every scene that passes `f` (and whose name contains `name`), in `order`, as lists
        of up to `chunk` scenes, each read by keyset in its own session: memory holds one
        chunk however many scenes pass, and no connection is held between chunks."""
        gis, f = self._for_sql(f)
        after: Seek | None = None
        while True:
            with Session(self.engine, expire_on_commit=False) as session:
                where = self._where(session, f, gis, name, after)
                found = page_rows(session, where, order, chunk, after=after)
                rows = listed(session, found)
            if rows:
                yield rows
            if len(rows) < chunk:
                return
            after = Seek.after(order, rows[-1])

    def _count(self, session: Session, f: SceneFilter, gis: str | None, name: str | None) -> int:
        """How many scenes pass: on the arrays when they are current (searches keep them so)
        and no part of a name is asked, a mask of milliseconds where SQL's count of a label
        filter reads every scene (217 ms at 1M scenes on SQLite); otherwise in SQL."""
        table = None if name else self.fresh_table()
        if table is not None:
            return int(table.mask(f).sum())
        where = self._where(session, f, gis, name)
        return session.scalar(select(func.count()).select_from(Scene).where(*where)) or 0

    def _for_sql(self, f: SceneFilter) -> tuple[str | None, SceneFilter]:
        """The PostGIS schema (or None) and `f` with what SQL does not test here resolved
        into an allow-list by the arrays."""
        gis = self.postgis()
        return gis, f.resolved(sql_filters(gis), lambda rest: self.table().allowed_ids(rest))

    @staticmethod
    def _where(
        session: Session, f: SceneFilter, gis: str | None, name: str | None,
        after: Seek | None = None,
    ) -> list[ColumnElement[bool]]:  # fmt: skip
        id_above = int(str(after.key)) if after is not None and after.order == "id" else None
        where = scene_where(session, f, gis, id_above=id_above)
        if name:
            where.append(Scene.name.contains(name, autoescape=True))
        return where

    def folder_counts(self) -> list[tuple[str, int]]:
        """Scene folders and how many scenes each holds, by name."""
        with Session(self.engine) as session:
            counts = (
                select(Scene.folder, func.count()).group_by(Scene.folder).order_by(Scene.folder)
            )
            return [(folder, int(count)) for folder, count in session.execute(counts).tuples()]

    def label_counts(self) -> list[tuple[str, int]]:
        with Session(self.engine) as session:
            query = (
                select(Label.name, func.count(SceneLabel.scene_id))
                .outerjoin(SceneLabel, SceneLabel.label_id == Label.id)
                .group_by(Label.id, Label.name)
                .order_by(Label.name)
            )
            return [(name, int(count)) for name, count in session.execute(query).tuples()]

    def scene_count(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(Scene)) or 0

    def id_array(self) -> np.ndarray:
        """Every scene's id, ascending, as int64, without a Python object per scene (what
        `grn status` and `grn reconcile` compare with an index version's sorted ids). At a
        million scenes on PostgreSQL (load 9): 4-6 s through the ORM, 1.8-2.8 s as rows of
        the driver's cursor, 0.9 s as one binary array."""
        with self.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                raw = connection.exec_driver_sql(
                    f"SELECT array_send(array_agg(id)) FROM {Scene.__tablename__}"
                ).scalar()
                ids = binary_int8_array(raw)
            else:
                cursor = connection.connection.cursor()
                try:
                    cursor.execute(f"SELECT id FROM {Scene.__tablename__}")
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
                ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        return np.sort(ids)

    def image_path(self, scene: Scene) -> Path:
        """The scene's file, refused if its stored path leads outside its archive."""
        root = Path(scene.archive.root).resolve()
        path = (root / scene.path).resolve()
        if not path.is_relative_to(root):
            raise SceneNotFoundError(f"scene {scene.id}: its file lies outside its archive")
        if not path.is_file():
            raise SceneNotFoundError(f"scene {scene.id}: its image file {path.name} is missing")
        return path

    def register(
        self,
        model_version: str,
        backbone: str,
        model_path: str,
        card_json: str,
        index_version: str,
        factory: str,
        count: int,
        index_root: str,
        created: str,
    ) -> None:
        """Record a model and index version in use (once each)."""
        with Session(self.engine) as session, session.begin():
            if session.get(ModelVersion, model_version) is None:
                session.add(
                    ModelVersion(
                        version=model_version, backbone=backbone, path=model_path, card=card_json
                    )
                )
                session.flush()
            if session.get(IndexBuild, index_version) is None:
                session.add(
                    IndexBuild(
                        version=index_version,
                        model_version=model_version,
                        factory=factory,
                        count=count,
                        root=index_root,
                        created=created,
                    )
                )


def binary_int8_array(raw: bytes | None) -> np.ndarray:
    """A one-dimensional bigint array in PostgreSQL's binary form (`array_send`; None for the
    NULL that `array_agg` of no rows gives) as int64: a header of five int32 (dimensions,
    null flag, element type, length, lower bound), then each element as its int32 length and
    its big-endian int64."""
    if raw is None:
        return np.zeros(0, dtype=np.int64)
    element = np.dtype([("length", ">i4"), ("value", ">i8")])
    return np.frombuffer(raw, dtype=element, offset=20)["value"].astype(np.int64)
