"""Columns and tables that several revisions declare alike.

A revision that has run must build the same schema for ever: change nothing here that a
revision uses (add a new helper for a new shape instead)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

TIMESTAMP = sa.DateTime(timezone=True)


def scene_id_of(table: str, **column: Any) -> tuple[sa.Column[Any], sa.ForeignKeyConstraint]:
    """`table`'s `scene_id` column (keyword arguments passed on to it) and its foreign key to
    `scenes.id`: the row goes when its scene goes (ON DELETE CASCADE)."""
    return (
        sa.Column("scene_id", sa.BigInteger(), nullable=False, **column),
        sa.ForeignKeyConstraint(
            ["scene_id"],
            ["scenes.id"],
            name=op.f(f"fk_{table}_scene_id_scenes"),
            ondelete="CASCADE",
        ),
    )


def create_scene_table(table: str, *columns: sa.Column[Any]) -> None:
    """Create `table`, which holds at most one row per scene: its primary key is `scene_id`
    (`scene_id_of`, never autoincremented), the given columns after it."""
    op.create_table(
        table,
        *scene_id_of(table, autoincrement=False),
        *columns,
        sa.PrimaryKeyConstraint("scene_id", name=op.f(f"pk_{table}")),
    )
