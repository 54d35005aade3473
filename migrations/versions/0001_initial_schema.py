"""Initial schema: archives, labels, scenes and their labels, model versions, index builds.

Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.columns import TIMESTAMP, scene_id_of

revision = "0001_initial_schema"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "archives",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("root", sa.String(1024), nullable=False),
        sa.Column("labels_csv", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scenes_added", sa.Integer(), nullable=False),
        sa.Column("scenes_skipped", sa.Integer(), nullable=False),
        sa.Column("broken", sa.Text(), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archives")),
    )
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labels")),
        sa.UniqueConstraint("name", name=op.f("uq_labels_name")),
    )
    op.create_table(
        "scenes",
        # scene ids are 63-bit hashes of the image stem, given by the importer
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("scene", sa.String(200), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("archive_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("media_type", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["archive_id"], ["archives.id"], name=op.f("fk_scenes_archive_id_archives")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scenes")),
        sa.UniqueConstraint("name", name=op.f("uq_scenes_name")),
    )
    op.create_index(op.f("ix_scenes_scene"), "scenes", ["scene"])
    op.create_index(op.f("ix_scenes_archive_id"), "scenes", ["archive_id"])
    op.create_table(
        "scene_labels",
        *scene_id_of("scene_labels"),
        sa.Column("label_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["label_id"],
            ["labels.id"],
            name=op.f("fk_scene_labels_label_id_labels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("scene_id", "label_id", name=op.f("pk_scene_labels")),
    )
    # label filters go from label to scenes: the primary key covers the other direction
    op.create_index(op.f("ix_scene_labels_label_id"), "scene_labels", ["label_id"])
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("backbone", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("card", sa.Text(), nullable=False),
        sa.Column("first_seen", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_model_versions")),
    )
    op.create_table(
        "index_builds",
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("factory", sa.String(200), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.String(1024), nullable=False),
        sa.Column("created", sa.String(32), nullable=False),
        sa.Column("first_seen", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version"],
            ["model_versions.version"],
            name=op.f("fk_index_builds_model_version_model_versions"),
        ),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_index_builds")),
    )
    op.create_index(op.f("ix_index_builds_model_version"), "index_builds", ["model_version"])


def downgrade() -> None:
    op.drop_index(op.f("ix_index_builds_model_version"), table_name="index_builds")
    op.drop_table("index_builds")
    op.drop_table("model_versions")
    op.drop_index(op.f("ix_scene_labels_label_id"), table_name="scene_labels")
    op.drop_table("scene_labels")
    op.drop_index(op.f("ix_scenes_archive_id"), table_name="scenes")
    op.drop_index(op.f("ix_scenes_scene"), table_name="scenes")
    op.drop_table("scenes")
    op.drop_table("labels")
    op.drop_table("archives")
