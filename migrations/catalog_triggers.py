"""The catalog's change triggers (revision 0002; 0005 adds the footprints): each change to a
watched table raises `catalog_state.generation` and records the scenes it touched in
`catalog_changes`, so a process holding scene metadata in arrays reloads only those.

A revision that has run must build the same schema for ever: change nothing here that a
revision uses (add a new helper for a new shape instead)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from alembic import op

RAISE = "UPDATE catalog_state SET generation = generation + 1 WHERE id = 1"
EVENTS = ("insert", "update", "delete")


def _changed(event: str) -> str:
    """The rows a trigger on `event` reads: the old ones of a delete, else the new ones."""
    return "OLD" if event == "delete" else "NEW"


def create_postgresql_triggers(table: str, column: str | None) -> None:
    """A function and one trigger per event on `table`, once per statement (with the
    statement's rows as a transition table), recording the scenes `column` names (None:
    every scene)."""
    rows = "raised, NULL" if column is None else f"DISTINCT raised, {column} FROM changed"
    op.execute(
        f"CREATE FUNCTION grn_{table}_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"DECLARE raised bigint; BEGIN {RAISE} RETURNING generation INTO raised; "
        f"INSERT INTO catalog_changes (generation, scene_id) SELECT {rows}; "
        "RETURN NULL; END $$"
    )
    for event in EVENTS:
        referencing = "" if column is None else f"REFERENCING {_changed(event)} TABLE AS changed "
        op.execute(
            f"CREATE TRIGGER {table}_{event}_changed AFTER {event.upper()} ON {table} "
            f"{referencing}FOR EACH STATEMENT EXECUTE FUNCTION grn_{table}_changed()"
        )


def create_sqlite_triggers(
    table: str, column: str | None, first: Mapping[str, str] | None = None
) -> None:
    """One trigger per event on `table` (SQLite has row triggers only: one generation per
    row changed), recording the scene `column` names (None: every scene); `first`: SQL each
    event's trigger runs before that."""
    for event in EVENTS:
        scene = "NULL" if column is None else f"{_changed(event)}.{column}"
        before = f"{first[event]} " if first else ""
        op.execute(
            f"CREATE TRIGGER {table}_{event}_changed AFTER {event.upper()} ON {table} "
            f"BEGIN {before}{RAISE}; INSERT INTO catalog_changes (generation, scene_id) "
            f"SELECT generation, {scene} FROM catalog_state WHERE id = 1; END"
        )


def drop_triggers(table: str, events: Iterable[str] = EVENTS) -> None:
    """Drop `table`'s change triggers for `events` (and its function, on PostgreSQL)."""
    dialect = op.get_bind().dialect.name
    for event in events:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_{event}_changed ON {table}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_{event}_changed")
    if dialect == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS grn_{table}_changed()")
