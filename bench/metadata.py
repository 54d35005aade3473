"""Search metadata from SQL through the ORM (the baseline: what hits and filters used before)
against the catalog's arrays (`service.storage.scene_table`), in one run.

    python -m bench.metadata                          # make run's database (data/grn.db)
    python -m bench.metadata --synthetic 200000       # a temporary SQLite catalog that size
    python -m bench.metadata --database-url postgresql://127.0.0.1/test --synthetic 200000

For k = 10, 100 and 1000 random scene ids: the ORM's `Catalog.scenes` (scenes with labels
loaded) against `Catalog.rows`; for label and folder filters: the SQL allow-list against the
arrays' mask; and the generation check every search now makes. Medians of `--repeat` runs,
the two interleaved. A synthetic catalog has 17 labels, 21 folders and names like UCM's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
from sqlalchemy import Connection, select, text, update
from sqlalchemy.orm import Session

from bench._common import median_ms
from index.filters import SceneFilter
from service.storage.bulk_rows import write_rows
from service.storage.catalog import Catalog
from service.storage.db import ArchiveImport, Label, Scene, SceneLabel, make_engine
from service.storage.filter_sql import scene_where
from service.storage.migrate import upgrade
from service.storage.scene_table import SceneTable

LABELS = [
    "airplane", "bare-soil", "buildings", "cars", "chaparral", "court", "dock", "field", "grass",
    "mobile-home", "pavement", "sand", "sea", "ship", "tanks", "trees", "water",
]  # fmt: skip


def synthetic(url: str, count: int, seed: int = 0) -> None:
    """A catalog of `count` scenes with UCM-like labels (about 3 a scene)."""
    engine = make_engine(url)
    upgrade(engine)
    rng = np.random.default_rng(seed)
    added = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        archive = ArchiveImport(root="/synthetic", labels_csv="-", status="complete")
        session.add(archive)
        session.add_all(Label(name=name) for name in LABELS)
        session.flush()
        label_ids = session.scalars(select(Label.id).order_by(Label.name)).all()
        ids = rng.choice(2**62, size=count, replace=False)
        connection = session.connection()
        for start in range(0, count, 3000):
            chunk = ids[start : start + 3000]
            scenes = [
                {
                    "id": int(i),
                    "name": f"scene{start + n:08d}",
                    "scene": f"folder{n % 21}",
                    "split": "test" if n % 5 == 0 else "train",
                    "archive_id": archive.id,
                    "path": f"x/{i}.tif",
                    "media_type": "image/tiff",
                    "width": 256,
                    "height": 256,
                    "checksum": "0" * 64,
                    "created_at": added,
                }
                for n, i in enumerate(chunk)
            ]
            pairs = [
                {"scene_id": int(i), "label_id": int(label_ids[j])}
                for i in chunk
                for j in rng.choice(len(LABELS), size=3, replace=False)
            ]
            bulk_insert(connection, Scene.__table__, scenes)
            bulk_insert(connection, SceneLabel.__table__, pairs)
    if engine.dialect.name == "postgresql":  # planner statistics, as autovacuum would make
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))
    engine.dispose()


def bulk_insert(connection: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """Rows (column -> value) into `table` by the bulk import's writer (COPY on PostgreSQL,
    executemany on SQLite): a multi-row INSERT a batch took 11 s for 10k scenes on PostgreSQL,
    executemany 29 s, COPY 1.7 s; on SQLite executemany 5.3 s for 30k scenes against 21-26 s
    with a multi-row INSERT a batch."""
    columns = list(rows[0])
    write_rows(connection, table, columns, [tuple(row[c] for c in columns) for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("GRN_DATABASE_URL"))
    parser.add_argument("--synthetic", type=int, help="make a catalog of this many scenes")
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    url = args.database_url or "sqlite:///data/grn.db"
    if not args.synthetic:
        report(url, args.repeat)
        return
    with synthetic_catalog(args.database_url, args.synthetic) as scoped:
        report(scoped, args.repeat)


@contextlib.contextmanager
def synthetic_catalog(url: str | None, count: int) -> Iterator[str]:
    """A synthetic catalog of `count` scenes (`synthetic`) for the time of the block: in a
    schema of its own of the PostgreSQL at `url`, or in a temporary SQLite file when `url` is
    None or SQLite's; its URL. Dropped on the way out."""
    if url is not None and url.startswith("postgresql"):
        schema = f"grn_bench_{os.getpid()}_{count}"
        admin = make_engine(url)
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            scoped = f"{url}?options=-csearch_path%3D{schema}"
            synthetic(scoped, count)
            yield scoped
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    else:
        with tempfile.TemporaryDirectory() as workdir:
            path = f"sqlite:///{workdir}/catalog.db"
            synthetic(path, count)
            yield path


def catalogs(
    databases: Iterable[str], sizes: Iterable[int], postgresql_url: str
) -> Iterator[tuple[str, int, str]]:
    """(database, size, URL) of a `synthetic_catalog` for each database (`sqlite` or
    `postgresql`) and size in turn, each dropped when the next is asked for."""
    for database in databases:
        url = postgresql_url if database == "postgresql" else None
        for size in sizes:
            with synthetic_catalog(url, size) as scoped:
                yield database, size, scoped


def report(url: str, repeat: int) -> None:
    catalog = Catalog(make_engine(url))
    start = time.perf_counter()
    table = catalog.table()
    load_ms = (time.perf_counter() - start) * 1000
    rng = np.random.default_rng(1)
    print(f"{len(table)} scenes ({url.split('?')[0]}); arrays loaded in {load_ms:.0f} ms")
    print(f"{'what':<46} {'SQL/ORM ms':>11} {'arrays ms':>10} {'x':>7}")

    def show(what: str, baseline: Callable[[], Any], ours: Callable[[], Any]) -> None:
        base = []
        mine = []
        for _ in range(repeat):  # interleaved
            base.append(median_ms(baseline, 1))
            mine.append(median_ms(ours, 1))
        b, m = statistics.median(base), statistics.median(mine)
        print(f"{what:<46} {b:>11.2f} {m:>10.3f} {b / m:>7.1f}")

    for k in (10, 100, 1000):
        ids = rng.choice(table.ids, size=min(k, len(table)), replace=False).tolist()
        show(f"hits' metadata, k = {k}", partial(catalog.scenes, ids), partial(catalog.rows, ids))

    def sql(where: SceneFilter) -> list[int]:
        with Session(catalog.engine) as session:
            return list(session.scalars(select(Scene.id).where(*scene_where(session, where))))

    for where in (
        SceneFilter(labels_all=["airplane", "pavement"], labels_none=["buildings"]),
        SceneFilter(labels_any=["water", "sea"]),
        SceneFilter(folder=table.folder_names[0]),
    ):
        shown = ", ".join(f"{k}={v}" for k, v in vars(where).items() if v)[:40]
        show(f"allow-list: {shown}", partial(sql, where), partial(table.allowed_ids, where))
    check = median_ms(catalog.generation, repeat * 5)
    print(f"generation check per search (one SELECT): {check:.3f} ms")
    # after a write: the 100 scenes it touched re-read, against the whole table re-read
    engine = catalog.engine
    with engine.connect() as connection:
        whole = median_ms(lambda: SceneTable.read(connection), 3)
    touched = rng.choice(table.ids, size=100, replace=False)
    with engine.begin() as connection:
        connection.execute(
            update(Scene).where(Scene.id.in_([int(i) for i in touched])).values(split="val")
        )
    start = time.perf_counter()
    patched = catalog.table()
    patch_ms = (time.perf_counter() - start) * 1000
    assert patched.generation > table.generation
    print(
        f"after a write of 100 scenes: whole table re-read {whole:.0f} ms, "
        f"patched {patch_ms:.1f} ms"
    )


if __name__ == "__main__":
    main()
