"""Alembic revisions of the SQL schema (run by `grn db upgrade`, never on import)."""
