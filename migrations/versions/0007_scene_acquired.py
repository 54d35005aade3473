"""When each scene was acquired: a nullable, indexed `scenes.acquired` (UTC), read from
labels.csv's `acquired` column, a GeoTIFF's date tags, a STAC item's datetime or the API,
for the time filters (`acquired_after`, `acquired_before`, `month`). NULL: not known.

A plain ALTER TABLE on both databases (a batch copy would drop the catalog triggers on
SQLite); a change to it is a change to the scene row, so the catalog triggers of 0002 raise
the generation as for any other column.

Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.columns import TIMESTAMP

revision = "0007_scene_acquired"
down_revision = "0006_postgis_footprints"


def upgrade() -> None:
    op.add_column("scenes", sa.Column("acquired", TIMESTAMP, nullable=True))
    op.create_index(op.f("ix_scenes_acquired"), "scenes", ["acquired"])


def downgrade() -> None:
    op.drop_index(op.f("ix_scenes_acquired"), table_name="scenes")
    op.drop_column("scenes", "acquired")
