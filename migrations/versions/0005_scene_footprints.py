"""Scene footprints: where each scene lies on the Earth, for spatial filters and maps.

`scene_footprints` holds one row per georeferenced scene (scenes without a footprint have
none): the footprint in WGS84 as GeoJSON, its bounds and centre as numbers, and for a scene
cut from a raster the raster, its CRS and the pixel window. Box queries use an index on both
databases, with no extension needed: an R*Tree virtual table kept by triggers on SQLite
(`scene_footprint_boxes`), a GiST index on the bounds as a `box` on PostgreSQL. A change to a
footprint raises the catalog generation for its scene, as a scene's own change does
(migration 0002), so every process's arrays follow.

Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.catalog_triggers import (
    create_postgresql_triggers,
    create_sqlite_triggers,
    drop_triggers,
)
from migrations.columns import create_scene_table

revision = "0005_scene_footprints"
down_revision = "0004_jobs"

BOX = "box(point(min_lon, min_lat), point(max_lon, max_lat))"


def upgrade() -> None:
    create_scene_table(
        "scene_footprints",
        sa.Column("min_lon", sa.Float(53), nullable=False),
        sa.Column("min_lat", sa.Float(53), nullable=False),
        sa.Column("max_lon", sa.Float(53), nullable=False),
        sa.Column("max_lat", sa.Float(53), nullable=False),
        sa.Column("lon", sa.Float(53), nullable=False),
        sa.Column("lat", sa.Float(53), nullable=False),
        sa.Column("geometry", sa.Text(), nullable=False),
        sa.Column("crs", sa.Text(), nullable=True),
        sa.Column("source", sa.String(1024), nullable=True),
        sa.Column("window", sa.String(64), nullable=True),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(f"CREATE INDEX ix_scene_footprints_box ON scene_footprints USING gist (({BOX}))")
        create_postgresql_triggers("scene_footprints", "scene_id")
    elif dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE scene_footprint_boxes USING rtree("
            "id, min_lon, max_lon, min_lat, max_lat)"
        )
        box_row = "NEW.scene_id, NEW.min_lon, NEW.max_lon, NEW.min_lat, NEW.max_lat"
        box_sql = {
            "insert": f"INSERT INTO scene_footprint_boxes VALUES ({box_row});",
            "update": "DELETE FROM scene_footprint_boxes WHERE id = OLD.scene_id; "
            f"INSERT INTO scene_footprint_boxes VALUES ({box_row});",
            "delete": "DELETE FROM scene_footprint_boxes WHERE id = OLD.scene_id;",
        }
        # the R*Tree follows each change first
        create_sqlite_triggers("scene_footprints", "scene_id", first=box_sql)
    else:
        raise NotImplementedError(f"no footprint index for {dialect}: use SQLite or PostgreSQL")


def downgrade() -> None:
    drop_triggers("scene_footprints")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_scene_footprints_box")
    else:
        op.execute("DROP TABLE IF EXISTS scene_footprint_boxes")
    op.drop_table("scene_footprints")
