"""Schema migrations, run by `grn db ...` (and the compose `migrate` service), never on
import: Alembic configured in code, on the revisions in `migrations/`.

Which revision a database is at and which is the newest are read without Alembic (its
import took 0.2 s of `grn status` at load 2 and 0.8 s at load 10): the one row of
`alembic_version`, and the `revision` / `down_revision` assignments of the revision files.
Alembic is imported by what changes the schema."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

import migrations

if TYPE_CHECKING:
    from alembic.config import Config

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
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


VERSION_TABLE = "alembic_version"
"""Where Alembic keeps the revision a database is at (one row, column `version_num`)."""


def head_revision() -> str:
    """The newest revision: the one no revision file names as its `down_revision`."""
    revisions: set[str] = set()
    parents: set[object] = set()
    for path in sorted((Path(SCRIPT_LOCATION) / "versions").glob("*.py")):
        names = _assigned(path, ("revision", "down_revision"))
        if names.get("revision") is None:
            continue
        revisions.add(str(names["revision"]))
        down = names.get("down_revision")
        parents |= set(down) if isinstance(down, tuple | list) else {down}
    heads = sorted(revisions - parents)
    assert len(heads) == 1, f"migrations/ should have one head revision, not {heads}"
    return str(heads[0])


def _assigned(path: Path, names: tuple[str, ...]) -> dict[str, object]:
    """The literal values a module assigns at its top level to `names`."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target: ast.expr
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in names:
            found[target.id] = ast.literal_eval(value)
    return found


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    if len(rows) > 1:
        raise RuntimeError(f"the database is at several revisions: {[r[0] for r in rows]}")
    return str(rows[0][0]) if rows else None


def _run(engine: Engine, action: str, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, "downgrade", revision)
