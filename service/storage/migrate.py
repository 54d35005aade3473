"""Schema migrations, run by `grn db ...` (and the compose `migrate` service), never on
import: Alembic configured in code, on the revisions in `migrations/`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import migrations

SCRIPT_LOCATION = str(Path(migrations.__file__).resolve().parent)


MAINTAINED_BY_TRIGGERS = "scene_footprint_boxes"
"""SQLite's R*Tree over the footprints and its shadow tables (migration 0005): kept by
triggers, not by the models, so schema comparisons leave them out."""
EXPRESSION_INDEXES = ("ix_scene_footprints_box", "ix_scene_footprints_geom")
"""PostgreSQL's GiST indexes over the footprints' bounds as a box (migration 0005) and over
the PostGIS column (0006): the models declare neither."""
OPTIONAL_COLUMNS = {("scene_footprints", "geom")}
"""The PostGIS column, present only where the database has PostGIS (migration 0006)."""


def include_object(
    obj: object, name: str | None, kind: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's filter for schema comparisons: everything but the trigger-kept tables."""
    if kind == "index" and name in EXPRESSION_INDEXES:
        return False
    if (
        kind == "column"
        and (getattr(getattr(obj, "table", None), "name", None), name) in OPTIONAL_COLUMNS
    ):
        return False
    return not (kind == "table" and (name or "").startswith(MAINTAINED_BY_TRIGGERS))


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "migrations/ holds no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _run(engine: Engine, action: str, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, "downgrade", revision)
