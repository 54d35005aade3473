"""Saved concepts: a concept taught by example scenes (`POST /concepts`, `grn concept save`)
kept by name with the probe it fitted, the model and index version it was fitted with, and
its example scenes (JSON lists of ids: a scene removed since is left out when it is
re-fitted, so no foreign key holds it).

Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.columns import TIMESTAMP

revision = "0008_saved_concepts"
down_revision = "0007_scene_acquired"


def upgrade() -> None:
    op.create_table(
        "concepts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("positives", sa.Text(), nullable=False),
        sa.Column("negatives", sa.Text(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("index_version", sa.String(64), nullable=False),
        sa.Column("weights", sa.LargeBinary(), nullable=False),
        sa.Column("bias", sa.Float(53), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_concepts")),
        sa.UniqueConstraint("name", name=op.f("uq_concepts_name")),
    )


def downgrade() -> None:
    op.drop_table("concepts")
