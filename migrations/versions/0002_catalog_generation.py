"""Catalog generation and change log: every change to scenes, labels or scene labels raises
a counter and records which scenes it touched (database triggers), so a process holding the
scene metadata in arrays (`service.storage.scene_table`) reloads only those scenes.

`catalog_state.generation` rises with each changing statement (PostgreSQL) or row (SQLite);
writers take its row lock until they commit, so generations become visible in order.
`catalog_changes` holds (generation, scene id) per change; a NULL scene id means "reload
everything" (a label added or removed, a table truncated).

Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.catalog_triggers import (
    EVENTS,
    RAISE,
    create_postgresql_triggers,
    create_sqlite_triggers,
    drop_triggers,
)

revision = "0002_catalog_generation"
down_revision = "0001_initial_schema"

# table -> the column that names the scene a row belongs to (None: every scene)
WATCHED = {"scenes": "id", "scene_labels": "scene_id", "labels": None}


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
        for table, column in WATCHED.items():
            create_sqlite_triggers(table, column)
    else:
        raise NotImplementedError(f"no catalog triggers for {dialect}: use SQLite or PostgreSQL")


def _postgresql_triggers() -> None:
    """Once per statement, with the statement's rows as a transition table; a TRUNCATE
    (which has no rows to name) reloads everything."""
    for table, column in WATCHED.items():
        create_postgresql_triggers(table, column)
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


def downgrade() -> None:
    for table in WATCHED:
        drop_triggers(table, (*EVENTS, "truncate"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS grn_catalog_truncated()")
    op.drop_index(op.f("ix_catalog_changes_generation"), table_name="catalog_changes")
    op.drop_table("catalog_changes")
    op.drop_table("catalog_state")
