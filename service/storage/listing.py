"""Pages of the scenes a filter keeps, in SQL: by offset (the old way, whose cost grows with
the offset, since SQL reads and drops every row before it) or by keyset, seeking past the
last scene of the page before by its sort key, with the scene id as the tie-breaker (one
index range read, whatever the depth; `Catalog.page`, `Catalog.walk`).

The orders a listing takes (`ORDERS`) each sort by an indexed column: `id` by the primary
key, `name` by the unique index on the image name, `acquired` and `-acquired` by the
acquisition time (oldest or newest first; the index on (acquired, id)), the scenes whose time
is not known last in both (`page_rows`).
A page's scenes are read as plain rows
(`ListedScene`: the scene's columns, then its labels and footprint in one query each for the
whole page), not as ORM objects, whose loading cost several times more per row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from model.times import utc
from service.storage.db import Label, Scene, SceneFootprint, SceneLabel

Order = Literal["id", "name", "acquired", "-acquired"]
ORDERS: tuple[Order, ...] = ("id", "name", "acquired", "-acquired")
BY_TIME: tuple[Order, ...] = ("acquired", "-acquired")
"""The orders by acquisition time, whose key may be None (not known)."""
COLUMNS = (
    Scene.id, Scene.name, Scene.folder, Scene.split, Scene.width, Scene.height,
    Scene.created_at, Scene.meta, Scene.acquired,
)  # fmt: skip
"""What a listed scene carries from `scenes`, in the order of `ListedScene`'s fields."""


@dataclass(frozen=True)
class Footprint:
    """A listed scene's place (`SceneFootprint`'s fields that the API shows)."""

    geometry: str
    crs: str | None
    source: str | None
    window: str | None


@dataclass(frozen=True)
class ListedScene:
    """A scene of a listing, with the attributes of `Scene` that the API shows."""

    id: int
    name: str
    folder: str
    split: str
    width: int
    height: int
    created_at: datetime
    meta: str | None
    acquired: datetime | None
    label_names: list[str]
    footprint: Footprint | None


@dataclass(frozen=True)
class Seek:
    """Where a keyset page starts: just after the scene whose sort key is `key` (its name for
    order `name`, its id for order `id`, its acquisition time in UTC or None for the orders
    by time) and whose id is `scene_id`."""

    order: Order
    key: int | str | datetime | None
    scene_id: int

    @classmethod
    def after(cls, order: Order, scene: Scene | ListedScene) -> Seek:
        """The position just after `scene` in `order`."""
        key: int | str | datetime | None = scene.name if order == "name" else scene.id
        if order in BY_TIME:
            key = None if scene.acquired is None else utc(scene.acquired)
        return cls(order, key, scene.id)

    def clauses(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses that keep the scenes after this position. For `name`, the range
        on the name alone comes first, so both databases read it from the name's index; the
        id decides among equal names. (By time, `page_rows` seeks in each of its parts.)"""
        if self.order == "id":
            return [Scene.id > int(str(self.key))]
        if self.order in BY_TIME:
            raise ValueError(f"a position in order {self.order} is sought by page_rows")
        name = str(self.key)
        return [Scene.name >= name, or_(Scene.name > name, and_(Scene.id > self.scene_id))]


def ordered(query: Select[*tuple[Any, ...]], order: Order) -> Select[*tuple[Any, ...]]:
    """`query` sorted by `order`, the id breaking ties; by time, the scenes of unknown time
    last."""
    if order == "name":
        return query.order_by(Scene.name, Scene.id)
    if order in BY_TIME:
        when = Scene.acquired if order == "acquired" else Scene.acquired.desc()
        return query.order_by(Scene.acquired.is_(None), when, Scene.id)
    return query.order_by(Scene.id)


def listing(
    where: list[ColumnElement[bool]], order: Order, limit: int, *, offset: int = 0,
    after: Seek | None = None,
) -> Select[*tuple[Any, ...]]:  # fmt: skip
    """The SELECT of one page's `COLUMNS` by id or name: the scenes that pass `where`, after
    `after` (keyset) or past the first `offset` (offset paging), at most `limit`."""
    if order in BY_TIME:
        raise ValueError(f"a page in order {order} is read by page_rows")
    if after is not None and after.order != order:
        raise ValueError(f"a position in order {after.order} cannot seek in order {order}")
    clauses = [*where, *(after.clauses() if after is not None else [])]
    query = ordered(select(*COLUMNS).where(*clauses), order).limit(limit)
    return query.offset(offset) if offset else query


def page_rows(
    session: Session, where: list[ColumnElement[bool]], order: Order, limit: int, *,
    offset: int = 0, after: Seek | None = None,
) -> Sequence[Any]:  # fmt: skip
    """One page's rows of `COLUMNS` (`listed` reads them) in any order, as `listing` selects
    them. By acquisition time, two queries, each read in order from the index on
    (acquired, id) (migration 0009) rather than by sorting every scene that passes: the
    scenes of known time from the position on, then, when they do not fill the page, those
    of unknown time by id."""
    if order not in BY_TIME:
        return session.execute(listing(where, order, limit, offset=offset, after=after)).all()
    if after is not None and after.order != order:
        raise ValueError(f"a position in order {after.order} cannot seek in order {order}")
    newest = order == "-acquired"
    known: list[ColumnElement[bool]] = [*where, Scene.acquired.is_not(None)]
    unknown: list[ColumnElement[bool]] = [*where, Scene.acquired.is_(None)]
    rows: list[Any] = []
    if after is None or isinstance(after.key, datetime):
        if after is not None and isinstance(after.key, datetime):
            key = after.key
            beyond = Scene.acquired < key if newest else Scene.acquired > key
            edge = Scene.acquired <= key if newest else Scene.acquired >= key
            known += [edge, or_(beyond, Scene.id > after.scene_id)]
        by_time = Scene.acquired.desc() if newest else Scene.acquired
        query = select(*COLUMNS).where(*known).order_by(by_time, Scene.id).limit(limit)
        rows = list(session.execute(query.offset(offset) if offset else query).all())
        if len(rows) == limit:
            return rows
    else:  # among the scenes of unknown time already
        unknown.append(Scene.id > after.scene_id)
    skip = 0
    if offset and not rows:  # past the scenes of known time: how far past
        counted = session.scalar(select(func.count()).select_from(Scene).where(*known)) or 0
        skip = max(0, offset - counted)
    query = select(*COLUMNS).where(*unknown).order_by(Scene.id).limit(limit - len(rows))
    return rows + list(session.execute(query.offset(skip) if skip else query).all())


def listed(session: Session, rows: Sequence[Any]) -> list[ListedScene]:
    """The scenes of `rows` (of `listing`), with their labels (by name) and footprints, read
    for all of them at once."""
    ids = [row[0] for row in rows]
    if not ids:
        return []
    labels: defaultdict[int, list[str]] = defaultdict(list)
    pairs = session.execute(
        select(SceneLabel.scene_id, Label.name)
        .join(Label, Label.id == SceneLabel.label_id)
        .where(SceneLabel.scene_id.in_(ids))
        .order_by(Label.name)
    )
    for scene_id, name in pairs:
        labels[scene_id].append(name)
    f = SceneFootprint
    places = {
        row.scene_id: Footprint(row.geometry, row.crs, row.source, row.window)
        for row in session.execute(
            select(f.scene_id, f.geometry, f.crs, f.source, f.window).where(f.scene_id.in_(ids))
        )
    }
    out = []
    for scene_id, name, folder, split, width, height, created_at, meta, acquired in rows:
        out.append(
            ListedScene(
                scene_id, name, folder, split, width, height, created_at, meta, acquired,
                label_names=labels.get(scene_id, []), footprint=places.get(scene_id),
            )
        )  # fmt: skip
    return out
