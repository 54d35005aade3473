"""Filling a Milvus alias for the service tests, on a Milvus server or a Milvus Lite file."""

from __future__ import annotations

from pathlib import Path

from servers import Served


def release_milvus_lite(uri: str) -> None:
    """Milvus Lite runs in the process that opened the file and locks it: let it go."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(uri)


def fill_milvus(
    served: Served, ucm_root: Path, labels: Path, uri: str, work: Path, alias: str = "scenes"
) -> str:
    """`grn reindex --milvus URI --replace` of the archive's scenes in `labels` into the
    alias on a Milvus server or Lite file (released afterwards); the collection version."""
    from index.stores.milvus import reindex_milvus
    from index.stores.milvus_client import is_server

    done = reindex_milvus(
        served.model, ucm_root, uri, alias, work,
        labels_csv=labels, replace=True, device="cpu", progress=False,
    )  # fmt: skip
    if not is_server(uri):
        release_milvus_lite(uri)
    return done.version
