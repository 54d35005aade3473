"""PostGIS for the footprints, where the database has it: a `geom` column (SRID 4326) kept
from the GeoJSON by a trigger, with a GiST index, so listings test polygons and distances in
SQL. Never required: on SQLite, or on a PostgreSQL without the `postgis` extension available
(or without the right to create it), this revision changes nothing and the service keeps
using the R*Tree / box index of migration 0005 with the exact tests on its arrays
(`service.storage.spatial`). Installing PostGIS later: `grn db downgrade 0005_scene_footprints`
then `grn db upgrade` adds the column.

Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_postgis_footprints"
down_revision = "0005_scene_footprints"


def _postgis_schema(bind: sa.Connection) -> str | None:
    found = bind.execute(
        sa.text(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'postgis'"
        )
    ).scalar()
    return str(found) if found else None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    available = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")
    ).scalar()
    if not available:
        return
    if _postgis_schema(bind) is None:
        try:
            with bind.begin_nested():  # a refusal (no privilege) must not end the migration
                bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis SCHEMA public"))
        except sa.exc.DBAPIError:
            return
    schema = _postgis_schema(bind)
    if schema is None:
        return
    gis = f'"{schema}".'
    op.execute(f"ALTER TABLE scene_footprints ADD COLUMN geom {gis}geometry(Geometry, 4326)")
    from_json = f"{gis}ST_SetSRID({gis}ST_GeomFromGeoJSON(geometry), 4326)"
    if bind.execute(sa.text("SELECT EXISTS (SELECT 1 FROM scene_footprints)")).scalar():
        # (a statement trigger raises the catalog generation even for no rows: skip it then)
        op.execute(f"UPDATE scene_footprints SET geom = {from_json}")
    op.execute("CREATE INDEX ix_scene_footprints_geom ON scene_footprints USING gist (geom)")
    op.execute(
        "CREATE FUNCTION grn_scene_footprints_geom() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN NEW.geom := {from_json.replace('(geometry)', '(NEW.geometry)')}; "
        "RETURN NEW; END $$"
    )
    op.execute(
        "CREATE TRIGGER scene_footprints_geom BEFORE INSERT OR UPDATE OF geometry ON "
        "scene_footprints FOR EACH ROW EXECUTE FUNCTION grn_scene_footprints_geom()"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS scene_footprints_geom ON scene_footprints")
    op.execute("DROP FUNCTION IF EXISTS grn_scene_footprints_geom()")
    op.execute("DROP INDEX IF EXISTS ix_scene_footprints_geom")
    op.execute("ALTER TABLE scene_footprints DROP COLUMN IF EXISTS geom")
