"""A `SceneFilter` as SQL: the WHERE clauses on `scenes` that listings use (`Catalog.page`),
with the meaning of `SceneFilter.passes` on SQLite and PostgreSQL.

Labels are tested by id through `scene_labels`, the box through the database's spatial index
(`service.storage.spatial.in_box`), every place condition through PostGIS where the
footprints carry its `geom` column (`postgis_where`). Without PostGIS, `within` and `near`
are not SQL's: the catalog resolves them on its arrays into an allow-list first
(`sql_filters` says which conditions SQL takes).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.orm import Session

from index.filters import CONDITIONS, PLACES, SceneFilter
from service.errors import BadRequestError
from service.storage.db import Label, Scene, SceneFootprint, SceneLabel
from service.storage.dialects import utc_month
from service.storage.spatial import in_box, postgis_where

ARRAYS_ONLY = frozenset({"within", "near"})
"""The conditions SQL leaves to the catalog's arrays where PostGIS is not there."""


def sql_filters(postgis: str | None) -> frozenset[str]:
    """The conditions `scene_where` translates: every one with PostGIS (`postgis` is the
    schema of its functions), all but `within` and `near` without."""
    every = frozenset(CONDITIONS)
    return every if postgis else every - ARRAYS_ONLY


def label_ids(session: Session, names: Sequence[str]) -> list[int]:
    """The ids of these labels, in order; a 400 naming an unknown one."""
    if not names:
        return []
    rows = session.execute(select(Label.name, Label.id).where(Label.name.in_(set(names))))
    found = {name: label_id for name, label_id in rows}
    unknown = sorted(set(names) - set(found))
    if unknown:
        known = session.scalars(select(Label.name).order_by(Label.name)).all()
        raise BadRequestError(
            f"unknown label(s) {', '.join(unknown)}; the labels are: {', '.join(known)}",
            code="unknown_label",
        )
    return [found[n] for n in names]


def scene_where(
    session: Session, f: SceneFilter, postgis: str | None = None, *, id_above: int | None = None
) -> list[ColumnElement[bool]]:
    """`f` as WHERE clauses on `scenes` (a 400 for an unknown label). `f` uses only the
    conditions of `sql_filters(postgis)`. `id_above`: the listing keeps only ids above it (a
    keyset page by id), said to the label tests too, since PostgreSQL does not carry the
    bound across their join: without it, a page by id with a label at 1M scenes merged the
    label's index from its start (1.1 s), with it from the page's first id."""
    unsupported = f.conditions() - sql_filters(postgis)
    if unsupported:
        raise ValueError(f"SQL does not test {', '.join(sorted(unsupported))} here")
    clauses: list[ColumnElement[bool]] = []
    above = [] if id_above is None else [SceneLabel.scene_id > id_above]

    def labelled(ids: list[int]) -> ColumnElement[bool]:
        return exists().where(SceneLabel.scene_id == Scene.id, SceneLabel.label_id.in_(ids), *above)

    clauses += [labelled([label_id]) for label_id in label_ids(session, f.labels_all)]
    if f.labels_any:
        clauses.append(labelled(label_ids(session, f.labels_any)))
    if f.labels_none:
        clauses.append(~labelled(label_ids(session, f.labels_none)))
    if f.folder:
        clauses.append(Scene.folder == f.folder)
    if f.split:
        clauses.append(Scene.split == f.split)
    if f.exclude_ids:
        clauses.append(Scene.id.not_in([int(i) for i in f.exclude_ids]))
    if f.allow_ids is not None:
        clauses.append(Scene.id.in_([int(i) for i in f.allow_ids]))
    # SceneFilter keeps them in UTC: SQLite compares the stored UTC text (a zone given to
    # it is dropped, not converted), PostgreSQL its timestamptz
    if f.added_after is not None:
        clauses.append(Scene.created_at >= f.added_after)
    if f.added_before is not None:
        clauses.append(Scene.created_at < f.added_before)
    if f.acquired_after is not None:
        clauses.append(Scene.acquired >= f.acquired_after)
    if f.acquired_before is not None:
        clauses.append(Scene.acquired < f.acquired_before)
    if f.months:
        dialect = session.get_bind().dialect.name
        clauses.append(utc_month(dialect, Scene.acquired).in_([int(m) for m in f.months]))
    if postgis and f.conditions() & PLACES:  # every place test through its index on `geom`
        located = select(SceneFootprint.scene_id).where(*postgis_where(postgis, f))
        clauses.append(Scene.id.in_(located))
    elif f.bbox is not None:  # through the spatial index (migration 0005)
        clauses.append(in_box(session.get_bind().dialect.name, f.bbox))
    return clauses
