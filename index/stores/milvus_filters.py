"""`SceneFilter`s as Milvus boolean expressions, over the labels and scene folder each row
keeps (`archive_meta`)."""

from __future__ import annotations

import json
from typing import Any

from index.filters import SceneFilter, SceneMeta

NATIVE_FILTERS = frozenset(
    {"labels_all", "labels_any", "labels_none", "folder", "exclude_ids", "allow_ids"}
)
"""The `SceneFilter` conditions Milvus evaluates itself."""


def milvus_expression(where: SceneFilter) -> str:
    """A filter as a Milvus boolean expression (strings quoted as JSON: escapes included)."""
    unsupported = where.conditions() - NATIVE_FILTERS
    if unsupported:
        raise ValueError(f"Milvus rows carry no {', '.join(sorted(unsupported))} to filter by")
    parts = []
    if where.labels_all:
        parts.append(f"array_contains_all(labels, {json.dumps(list(where.labels_all))})")
    if where.labels_any:
        parts.append(f"array_contains_any(labels, {json.dumps(list(where.labels_any))})")
    if where.labels_none:
        parts.append(f"not array_contains_any(labels, {json.dumps(list(where.labels_none))})")
    if where.folder is not None:
        parts.append(f"scene == {json.dumps(where.folder)}")
    if where.exclude_ids:
        parts.append(f"id not in {[int(i) for i in where.exclude_ids]}")
    if where.allow_ids is not None:
        parts.append(f"id in {[int(i) for i in where.allow_ids]}")
    return " and ".join(parts)


def archive_meta(archive: Any, position: int) -> SceneMeta:
    """The labels and folder a row keeps for filtering, from the archive."""
    scene = archive.scenes[position]
    if not scene.labelled:  # no labels to filter by, as in SQL
        return SceneMeta(labels=(), folder=scene.folder)
    labels = zip(archive.label_names, scene.labels, strict=True)
    return SceneMeta(labels=tuple(name for name, flag in labels if flag), folder=scene.folder)
