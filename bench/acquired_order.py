"""A page of scenes in order of acquisition (`GET /scenes?order=acquired|-acquired`), as
`Catalog.page` reads it (two parts read from the index on (acquired, id), migration 0009),
against one SELECT that sorts every scene by time (`listing.ordered`, how it was first
written) and against the page by id, in the same run, at growing sizes of a synthetic
catalog on SQLite and PostgreSQL.

    python -m bench.acquired_order                              # 100k scenes, both databases
    python -m bench.acquired_order --sizes 100000 1000000 --databases sqlite

Each catalog (`bench.metadata.catalogs`) gets acquisition times spread uniformly over
ten years, 10% of them not known. Timed: the first page of 51 and the page of 51 after the
scene half way (a cursor's seek), p50 in ms over `--repeat` runs, the cases interleaved; the
two ways of ordering are checked to give the same scenes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, or_, select, text
from sqlalchemy.orm import Session

from bench.metadata import catalogs
from index.filters import SceneFilter
from service.storage.catalog import Catalog
from service.storage.db import Scene, make_engine
from service.storage.listing import BY_TIME, COLUMNS, Order, Seek, listed, ordered

PAGE = 51
UNKNOWN_SHARE = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument(
        "--postgresql-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    for database, size, url in catalogs(args.databases, args.sizes, args.postgresql_url):
        engine = make_engine(url)
        dated(engine)
        results += measure(Catalog(engine), database, size, args.repeat)
        engine.dispose()
        if args.out:
            args.out.write_text(json.dumps(results, indent=1) + "\n")


def dated(engine: Engine) -> None:
    """Every scene acquired at a seeded time over ten years, or (10%) at no known time."""
    rng = random.Random(0)
    start, span = datetime(2015, 1, 1, tzinfo=UTC), 10 * 365 * 86_400
    with engine.begin() as connection:
        ids = connection.execute(text("SELECT id FROM scenes")).scalars().all()
        times = [
            {"i": i, "t": None if rng.random() < UNKNOWN_SHARE else start + timedelta(
                seconds=rng.randrange(span))}
            for i in ids
        ]  # fmt: skip
        connection.execute(text("UPDATE scenes SET acquired = :t WHERE id = :i"), times)
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE scenes"))


def sorted_select(catalog: Catalog, order: Order, after: Seek | None) -> list[int]:
    """The baseline: one SELECT sorting every scene by time, the seek as one OR of its
    cases; the page's ids (read as `listed` reads a page)."""
    query = ordered(select(*COLUMNS), order)
    if after is not None:
        when, later = Scene.acquired, Scene.id > after.scene_id
        if after.key is None:
            query = query.where(when.is_(None), later)
        else:
            past = when < after.key if order == "-acquired" else when > after.key
            query = query.where(or_(past, and_(when == after.key, later), when.is_(None)))
    with Session(catalog.engine) as session:
        return [s.id for s in listed(session, session.execute(query.limit(PAGE)).all())]


def measure(catalog: Catalog, database: str, size: int, repeat: int) -> list[dict[str, Any]]:
    everything = SceneFilter()
    rows = []
    for order in ("id", *BY_TIME):
        (middle,), _ = catalog.page(everything, size // 2, 1, order=order, count=False)
        seek = Seek.after(order, middle)
        cases = {
            "first page": lambda o=order: [s.id for s in catalog.page(
                everything, 0, PAGE, order=o, count=False)[0]],
            "after half way": lambda o=order, s=seek: [x.id for x in catalog.page(
                everything, 0, PAGE, order=o, after=s, count=False)[0]],
        }  # fmt: skip
        if order in BY_TIME:
            cases["first page, one sorted SELECT"] = lambda o=order: sorted_select(catalog, o, None)
            cases["after half way, one sorted SELECT"] = lambda o=order, s=seek: sorted_select(
                catalog, o, s
            )
            assert cases["first page"]() == cases["first page, one sorted SELECT"]()
            assert cases["after half way"]() == cases["after half way, one sorted SELECT"]()
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(repeat):
            for name, run in cases.items():
                started = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - started) * 1000)
        for name, taken in times.items():
            p50 = statistics.median(taken)
            print(f"{database} {size} order={order:9s} {name:34s} p50 {p50:8.2f} ms", flush=True)
            rows.append({"database": database, "scenes": size, "order": order, "case": name,
                         "p50_ms": round(p50, 2)})  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
