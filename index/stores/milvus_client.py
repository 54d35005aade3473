"""Milvus connections and the collections behind an alias.

Every client is made by `connect`, with the settings' token, and Milvus's own errors reach
the service as `VectorStoreUnavailableError` (`milvus_answering`). The name searched is an
alias; a full build makes a collection `<alias>_v<time>` (`version_name`), switches the alias
to it in one call (`switch_alias`) and drops the versions no longer needed (`prune_versions`).
A collection property records the model version of its vectors (`collection_model`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from index.stores.base import VectorStoreUnavailableError

MODEL_PROPERTY = "grn.model_version"
EXACT = {"consistency_level": "Strong"}
"""For reads whose answer must be exact (counts, ids): a Milvus server answers
them after every write acknowledged before; its default (Bounded) may miss the last seconds'
writes. Searches keep the default: Strong waits for the server's next time tick (400 ms a
search on the standalone server here)."""
TEMPLATES_SINCE = (2, 5)
"""The first Milvus server version that reads filter values apart from the expression."""
VERSION_PATTERN = re.compile(r"(.+)_v(\d+)")
"""`<alias>_v<time in ns>`: the collections a full build makes for an alias."""


CONNECT_TIMEOUT_S = 3.0
"""How long connecting (and reconnecting, after the server went away) may wait."""
SERVER_CHANNEL = {
    # each channel its own subchannels: a new channel after a server restart must not
    # inherit the connection back-off that the failed attempts before it built up (up to
    # two minutes in gRPC's shared pool)
    "grpc.use_local_subchannel_pool": 1,
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}


def connect(uri: str, token: str = "") -> Any:
    """A Milvus client: `uri` is a server (`http://host:19530`) or a Milvus Lite file. A
    server's client fails within seconds while the server is away (the service answers 503)
    and reconnects as soon as it is back."""
    from pymilvus import MilvusClient

    options: dict[str, Any] = {}
    if is_server(uri):
        options = {"timeout": CONNECT_TIMEOUT_S, "grpc_options": SERVER_CHANNEL}
    with milvus_answering(uri):
        return MilvusClient(uri=uri, token=token, **options)


@contextmanager
def milvus_answering(location: str) -> Iterator[None]:
    """Milvus's own errors as `VectorStoreUnavailableError` (a 503 in the service)."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except MilvusException as exc:
        raise VectorStoreUnavailableError(
            f"the Milvus vector store at {location} did not answer: {exc}"
        ) from exc


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://"))


def takes_filter_params(client: Any, uri: str) -> bool:
    """Whether this Milvus reads a filter's values apart from its expression (pymilvus's
    `filter_params`, Milvus's filter templating): Milvus servers 2.5 and later do. Milvus
    Lite 3.2.2 ignores them (its Python parser then meets `{name}` in the expression:
    "unexpected character '{'"), and the 2.3.5 server of PyPI `milvus` (the tests') predates
    them ("token recognition error"): those get the values written into the expression as
    escaped literals (`MilvusFilter.inline`). This is the one place that decides."""
    if not is_server(uri):  # Milvus Lite, whatever version it reports
        return False
    match = re.match(r"v?(\d+)\.(\d+)", str(client.get_server_version()))
    return match is not None and (int(match[1]), int(match[2])) >= TEMPLATES_SINCE


def resolve_collection(client: Any, name: str) -> str | None:
    """The collection `name` stands for: the one an alias of that name points at, else a
    collection of that name; None when neither exists."""
    if name in client.list_aliases().get("aliases", []):
        target: str = client.describe_alias(name)["collection_name"]
        return target
    return name if client.has_collection(name) else None


def collection_ids(client: Any, collection: str) -> np.ndarray:
    """Every scene id in a collection, sorted (loading it first: Milvus answers queries on
    loaded collections only)."""
    client.load_collection(collection)
    found: list[int] = []
    iterator = client.query_iterator(collection, batch_size=1000, output_fields=["id"], **EXACT)
    while batch := iterator.next():
        found += [int(row["id"]) for row in batch]
    iterator.close()
    return np.sort(np.asarray(found, dtype=np.int64))


def collection_count(client: Any, collection: str, exact: bool = False) -> int:
    """The rows of a collection; `exact` waits for every write acknowledged before (a
    build's own count), the default does not (a version in service, which no one writes)."""
    client.load_collection(collection)
    rows = client.query(
        collection, filter="", output_fields=["count(*)"], **(EXACT if exact else {})
    )
    return int(rows[0]["count(*)"])


def vector_dim(client: Any, collection: str) -> int:
    """The dimension of a collection's vector field."""
    for column in client.describe_collection(collection).get("fields", []):
        if column.get("name") == "vector":
            return int(column["params"]["dim"])
    raise ValueError(f"Milvus collection {collection} has no vector field")


def has_field(client: Any, collection: str, name: str) -> bool:
    return any(c.get("name") == name for c in client.describe_collection(collection)["fields"])


def collection_model(client: Any, collection: str) -> str | None:
    """The model version a Milvus collection's vectors come from (None if unrecorded)."""
    properties = client.describe_collection(collection).get("properties") or {}
    model: str | None = properties.get(MODEL_PROPERTY)
    return model


def version_name(alias: str) -> str:
    return f"{alias}_v{time.time_ns()}"


def version_time(name: str, alias: str | None = None) -> int | None:
    """The build time (ns) in a version's name; None for another name (or another alias)."""
    match = VERSION_PATTERN.fullmatch(name)
    if match is None or (alias is not None and match.group(1) != alias):
        return None
    return int(match.group(2))


def versions_of(client: Any, collection: str) -> list[str]:
    """The collections built for an alias, oldest first (their names carry the time)."""
    stamps = {name: version_time(name, collection) for name in client.list_collections()}
    return sorted((n for n, t in stamps.items() if t is not None), key=lambda n: stamps[n] or 0)


def switch_alias(client: Any, collection: str, target: str) -> None:
    """Point the alias `collection` at `target` in one step. A plain collection of that name
    (a layout before aliases) is dropped first: that is the one moment without it."""
    if collection in client.list_aliases().get("aliases", []):
        client.alter_alias(target, collection)
        return
    if client.has_collection(collection):
        client.drop_collection(collection)
    client.create_alias(target, collection)


def prune_versions(client: Any, collection: str, keep: Sequence[str | None]) -> list[str]:
    """Drop the alias's versions other than `keep`: after a switch, the one in service and
    the one before it (a service that has not polled yet may still be searching it). What
    goes are older versions and unfinished builds (a build killed before its switch)."""
    dropped = [name for name in versions_of(client, collection) if name not in keep]
    for name in dropped:
        client.drop_collection(name)
    return dropped
