"""Rows written in bulk, without an ORM object per row: PostgreSQL's COPY, and on SQLite one
prepared INSERT run over the rows (`executemany`). Values go through each column's own type
(SQLAlchemy's bind processors), so what lands in SQL reads back exactly as rows the ORM
wrote; triggers fire as for any insert (the catalog's change log, footprints' spatial
indexes)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Table


def write_rows(
    connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert `rows` (tuples, in the order of `columns`, named by SQL column name) into
    `table` within the connection's transaction."""
    if not rows:
        return
    names = ", ".join(f'"{name}"' for name in columns)
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        assert driver is not None
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    dialect = connection.dialect
    processors = [
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
    ]
    active = [(i, f) for i, f in enumerate(processors) if f is not None]
    if active:  # only some columns have one (dates, on SQLite)
        converted = []
        for row in rows:
            values = list(row)
            for i, process in active:
                if values[i] is not None:
                    values[i] = process(values[i])
            converted.append(tuple(values))
        rows = converted
    marks = ", ".join("?" for _ in columns)
    connection.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)


RAISE = "UPDATE catalog_state SET generation = generation + 1 WHERE id = 1"
CATALOG_TRIGGERS = {
    f"{table}_insert_changed": (
        f"CREATE TRIGGER {table}_insert_changed AFTER INSERT ON {table} BEGIN {RAISE}; "
        "INSERT INTO catalog_changes (generation, scene_id) SELECT generation, "
        f"NEW.{column} FROM catalog_state WHERE id = 1; END"
    )
    for table, column in (("scenes", "id"), ("scene_labels", "scene_id"))
}
"""SQLite's insert triggers of the catalog change log, as migration 0002 creates them."""


@contextmanager
def catalog_logged_once(connection: Connection, scene_ids: Sequence[int]) -> Iterator[None]:
    """Inserts of scenes and scene labels in the block logged in the catalog's change log as
    one change naming each scene once, as PostgreSQL's statement triggers log a statement
    (migration 0002), instead of a generation and a row per inserted row, which SQLite's row
    triggers write and which took two thirds of a bulk import's time there. On SQLite the
    two insert triggers are dropped for the block and created again after it, within the
    connection's transaction: no other connection ever sees them missing, and a transaction
    that fails rolls them back in place. Triggers of another body than migration 0002's are
    left to fire."""
    if connection.dialect.name != "sqlite":
        yield
        return
    found = connection.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?)",
        tuple(CATALOG_TRIGGERS),
    ).all()
    saved: dict[str, str] = {name: body for name, body in found}
    if saved != CATALOG_TRIGGERS:
        yield
        return
    for name in saved:
        connection.exec_driver_sql(f"DROP TRIGGER {name}")
    yield
    connection.exec_driver_sql(RAISE)
    generation = connection.exec_driver_sql(
        "SELECT generation FROM catalog_state WHERE id = 1"
    ).scalar_one()
    connection.exec_driver_sql(
        "INSERT INTO catalog_changes (generation, scene_id) VALUES (?, ?)",
        [(generation, int(i)) for i in scene_ids],
    )
    for body in saved.values():
        connection.exec_driver_sql(body)


def refresh_statistics(connection: Connection, tables: Sequence[Table]) -> None:
    """Have PostgreSQL's planner look at `tables` again (ANALYZE) after a bulk write.
    Autovacuum does so in its own time; until then the planner knows none of the new rows
    and estimates blindly: after 100,000 scenes, the labels of a page of 51 scenes were read
    through every scene's label link (338 ms) instead of the primary key (0.1 ms). SQLite's
    planner goes by its indexes alone here."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ANALYZE " + ", ".join(table.name for table in tables))
