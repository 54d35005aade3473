"""Rows written in bulk, without an ORM object per row: PostgreSQL's COPY, and on SQLite one
prepared INSERT run over the rows (`executemany`). Values go through each column's own type
(SQLAlchemy's bind processors), so what lands in SQL reads back exactly as rows the ORM
wrote; triggers fire as for any insert (the catalog's change log, footprints' spatial
indexes)."""

from __future__ import annotations

from collections.abc import Sequence
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
