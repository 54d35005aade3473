"""Scenes written through the API: their embeddings kept in SQL beside their rows, and free
metadata per scene.

`scene_vectors` holds the embedding (and label probabilities) of a scene the service embedded
when it was added (`POST /scenes`), under the model that made it. It is written in the same
transaction as the scene's row and goes with it (ON DELETE CASCADE), so the service searches
the scenes its index version does not hold yet from these rows (`service.storage.live_index`), on
every process, as soon as the transaction commits. A row's scene insert raises the catalog
generation (migration 0002), which is how the other processes learn of it.

Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.columns import create_scene_table

revision = "0003_scene_writes"
down_revision = "0002_catalog_generation"


def upgrade() -> None:
    create_scene_table(
        "scene_vectors",
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("probabilities", sa.LargeBinary(), nullable=True),
    )
    op.create_index(op.f("ix_scene_vectors_model_version"), "scene_vectors", ["model_version"])
    # a plain ALTER TABLE (a batch copy would drop the catalog triggers on SQLite)
    op.add_column("scenes", sa.Column("meta", sa.Text(), nullable=True))
    # the same file twice is one scene: an upload is looked up by its SHA-256
    op.create_index(op.f("ix_scenes_checksum"), "scenes", ["checksum"])


def downgrade() -> None:
    op.drop_index(op.f("ix_scenes_checksum"), table_name="scenes")
    op.drop_column("scenes", "meta")
    op.drop_index(op.f("ix_scene_vectors_model_version"), table_name="scene_vectors")
    op.drop_table("scene_vectors")
