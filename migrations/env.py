"""Alembic's entry point: runs the revisions on the connection `service.storage.migrate` hands over
(or on `sqlalchemy.url` when Alembic's own command line is used)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from service.storage.db import Base, make_engine
from service.storage.migrate import include_object

config = context.config
target_metadata = Base.metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: Alembic rebuilds the table instead
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        run(connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `grn db upgrade`")
run_online()
