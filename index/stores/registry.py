"""The vector stores by name: the names `GRN_VECTOR_STORE` may give, and each one's opener."""

from __future__ import annotations

STORES: dict[str, str] = {
    "faiss": "index.stores.faiss:open_faiss",
    "milvus": "index.stores.milvus:open_milvus",
}
"""name -> `module:opener`; the opener takes the `StoreSettings` and returns a VectorStore."""


class UnknownStoreError(ValueError):
    """A vector store name that is not registered."""


def check_store_name(name: str) -> str:
    if name not in STORES:
        raise UnknownStoreError(
            f"unknown vector store {name!r}; the stores are: {', '.join(sorted(STORES))}"
        )
    return name
