"""Listings in order of acquisition read from an index: `scenes.acquired`'s index of 0007
becomes one on (acquired, id), the order's key and its tie-breaker. A page by time
(`GET /scenes?order=acquired` or `-acquired`, `service.storage.listing`) then reads the
scenes of known time from the position on, and those of unknown time by id, in index order,
instead of sorting every scene that passes; the time filters use it as they used the old one.

Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0009_acquired_order"
down_revision = "0008_saved_concepts"


def upgrade() -> None:
    op.create_index(op.f("ix_scenes_acquired_id"), "scenes", ["acquired", "id"])
    op.drop_index(op.f("ix_scenes_acquired"), table_name="scenes")


def downgrade() -> None:
    op.create_index(op.f("ix_scenes_acquired"), "scenes", ["acquired"])
    op.drop_index(op.f("ix_scenes_acquired_id"), table_name="scenes")
