"""`SceneFilter`s as Milvus boolean expressions, over the labels and scene folder each row
keeps (`archive_meta`).

An expression names its values by placeholders (`{labels_any}`) and carries them apart
(`MilvusFilter.params`), as pymilvus's filter templating takes them (`filter_params`), so no
label or folder name is ever parsed as part of the expression. A Milvus that does not read
templates gets the values written in as escaped literals (`MilvusFilter.inline`); which one
does is decided in one place, `index.stores.milvus_client.takes_filter_params`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from index.filters import SceneFilter, SceneMeta

NATIVE_FILTERS = frozenset(
    {"labels_all", "labels_any", "labels_none", "folder", "exclude_ids", "allow_ids"}
)
"""The `SceneFilter` conditions Milvus evaluates itself."""

PLACEHOLDER = re.compile(r"\{(\w+)\}")
STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
"""The escapes inside a double-quoted Milvus string that both Milvus Lite 3 (whose parser
knows only these and \\') and the Milvus server (Go's) read alike; every other character,
non-ASCII included, goes as itself (a JSON `\\u00ea` is an error to Milvus Lite)."""


@dataclass(frozen=True)
class MilvusFilter:
    """A Milvus boolean expression with `{name}` placeholders, and their values."""

    expression: str
    params: dict[str, Any] = field(default_factory=dict)

    def inline(self) -> str:
        """The expression with each value written in as a Milvus literal."""
        return PLACEHOLDER.sub(lambda name: milvus_literal(self.params[name[1]]), self.expression)

    def options(self, templates: bool) -> dict[str, Any]:
        """The keywords of a pymilvus search, query or delete that apply this filter: the
        values as `filter_params` where the Milvus reads them (`templates`), else inline."""
        if not self.expression:
            return {}
        if templates:
            return {"filter": self.expression, "filter_params": dict(self.params)}
        return {"filter": self.inline()}


def milvus_literal(value: Any) -> str:
    """A value as a Milvus expression literal: a string double-quoted with `STRING_ESCAPES`,
    an integer, or a list of them."""
    if isinstance(value, str):
        return '"' + "".join(STRING_ESCAPES.get(ch, ch) for ch in value) + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(milvus_literal(item) for item in value) + "]"
    raise TypeError(f"no Milvus literal for {type(value).__name__} {value!r}")


def ids_filter(ids: Sequence[int]) -> MilvusFilter:
    """The rows of these scene ids."""
    return MilvusFilter("id in {ids}", {"ids": [int(i) for i in ids]})


def milvus_expression(where: SceneFilter) -> MilvusFilter:
    """A filter as a Milvus boolean expression, every value a parameter."""
    unsupported = where.conditions() - NATIVE_FILTERS
    if unsupported:
        raise ValueError(f"Milvus rows carry no {', '.join(sorted(unsupported))} to filter by")
    parts = []
    params: dict[str, Any] = {}
    if where.labels_all:
        parts.append("array_contains_all(labels, {labels_all})")
        params["labels_all"] = [str(label) for label in where.labels_all]
    if where.labels_any:
        parts.append("array_contains_any(labels, {labels_any})")
        params["labels_any"] = [str(label) for label in where.labels_any]
    if where.labels_none:
        parts.append("not array_contains_any(labels, {labels_none})")
        params["labels_none"] = [str(label) for label in where.labels_none]
    if where.folder is not None:
        parts.append("scene == {folder}")
        params["folder"] = str(where.folder)
    if where.exclude_ids:
        parts.append("id not in {exclude_ids}")
        params["exclude_ids"] = [int(i) for i in where.exclude_ids]
    if where.allow_ids is not None:
        parts.append("id in {allow_ids}")
        params["allow_ids"] = [int(i) for i in where.allow_ids]
    return MilvusFilter(" and ".join(parts), params)


def archive_meta(archive: Any, position: int) -> SceneMeta:
    """The labels and folder a row keeps for filtering, from the archive."""
    scene = archive.scenes[position]
    if not scene.labelled:  # no labels to filter by, as in SQL
        return SceneMeta(labels=(), folder=scene.folder)
    labels = zip(archive.label_names, scene.labels, strict=True)
    return SceneMeta(labels=tuple(name for name, flag in labels if flag), folder=scene.folder)
