"""Catalog generation and change log: every change to scenes, labels or scene labels raises
a counter and records which scenes it touched (database triggers), so a process holding the
scene metadata in arrays (`service.storage.scene_table`) reloads only those scenes.

`catalog_state.generation` rises with each changing statement (PostgreSQL) or row (SQLite);
writers take its row lock until they commit, so generations become visible in order.
`catalog_changes` holds (generation, scene id) per change; a NULL scene id means "reload
everything" (a label added or removed, a table truncated).

Revision ID: 0002_catalog_generation
Revises: 0001_initial_schema
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_catalog_generation"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

RAISE = "UPDATE catalog_state SET generation = generation + 1 WHERE id = 1"
# table -> the column that names the scene a row belongs to (None: every scene)
WATCHED = {"scenes": "id", "scene_labels": "scene_id", "labels": None}
EVENTS = ("insert", "update", "delete")


def upgrade() -> None:
    op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_state")),
    )
    op.execute("INSERT INTO catalog_state (id, generation) VALUES (1, 0)")
    op.create_table(
        "catalog_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("scene_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_changes")),
    )
    op.create_index(
        op.f("ix_catalog_changes_generation"), "catalog_changes", ["generation"], unique=False
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        _postgresql_triggers()
    elif dialect == "sqlite":
        _sqlite_triggers()
    else:
        raise NotImplementedError(f"no catalog triggers for {dialect}: use SQLite or PostgreSQL")


def _postgresql_triggers() -> None:
    """Once per statement, with the statement's rows as a transition table."""
    for table, column in WATCHED.items():
        rows = "raised, NULL" if column is None else f"DISTINCT raised, {column} FROM changed"
        op.execute(
            f"CREATE FUNCTION grn_{table}_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"DECLARE raised bigint; BEGIN {RAISE} RETURNING generation INTO raised; "
            f"INSERT INTO catalog_changes (generation, scene_id) SELECT {rows}; "
            "RETURN NULL; END $$"
        )
        for event in EVENTS:
            transition = "OLD" if event == "delete" else "NEW"
            referencing = "" if column is None else f"REFERENCING {transition} TABLE AS changed "
            op.execute(
                f"CREATE TRIGGER {table}_{event}_changed AFTER {event.upper()} ON {table} "
                f"{referencing}FOR EACH STATEMENT EXECUTE FUNCTION grn_{table}_changed()"
            )
    op.execute(
        "CREATE FUNCTION grn_catalog_truncated() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"DECLARE raised bigint; BEGIN {RAISE} RETURNING generation INTO raised; "
        "INSERT INTO catalog_changes (generation, scene_id) VALUES (raised, NULL); "
        "RETURN NULL; END $$"
    )
    for table in WATCHED:
        op.execute(
            f"CREATE TRIGGER {table}_truncate_changed AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION grn_catalog_truncated()"
        )


def _sqlite_triggers() -> None:
    """SQLite has row triggers only: one generation per row changed."""
    for table, column in WATCHED.items():
        for event in EVENTS:
            row = "OLD" if event == "delete" else "NEW"
            scene = "NULL" if column is None else f"{row}.{column}"
            op.execute(
                f"CREATE TRIGGER {table}_{event}_changed AFTER {event.upper()} ON {table} "
                f"BEGIN {RAISE}; INSERT INTO catalog_changes (generation, scene_id) "
                f"SELECT generation, {scene} FROM catalog_state WHERE id = 1; END"
            )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in WATCHED:
        for event in (*EVENTS, "truncate"):
            if dialect == "postgresql":
                op.execute(f"DROP TRIGGER IF EXISTS {table}_{event}_changed ON {table}")
            elif dialect == "sqlite":
                op.execute(f"DROP TRIGGER IF EXISTS {table}_{event}_changed")
        if dialect == "postgresql":
            op.execute(f"DROP FUNCTION IF EXISTS grn_{table}_changed()")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS grn_catalog_truncated()")
    op.drop_index(op.f("ix_catalog_changes_generation"), table_name="catalog_changes")
    op.drop_table("catalog_changes")
    op.drop_table("catalog_state")
