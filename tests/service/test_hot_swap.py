"""Hot swap: a running server takes up a retrained model and its new index together, without
a restart and without failing a request, and never pairs a model with another's index."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from servers import Served, polling_server_under_traffic, train_tiny

from index.stores.faiss_build import ReindexSettings, reindex
from index.stores.faiss_versions import IndexStore


def test_retrain_and_reindex_swap_under_load(
    served: Served,
    tiny_config: Callable[..., object],
    ucm_root: Path,
    ucm_subset: Path,
    tmp_path: Path,
) -> None:
    with polling_server_under_traffic(served, ucm_root, ucm_subset, tmp_path, 3) as running:
        server, mine, traffic = running
        with server.client() as client:
            before = client.get("/readyz").json()
        traffic.wait_for(lambda answer: answer.kind == "search", "under way")

        # a retrain replaces the model file: its index does not exist yet, so the old pair stays
        retrained = train_tiny(tiny_config, tmp_path / "retrain", seed=1)
        os.replace(shutil.copy(retrained, mine.model.with_suffix(".new")), mine.model)
        waiting = server.readiness_when(
            lambda ready: ready["warning"] is not None, "a warning about the new model file"
        )
        assert waiting["model_version"] == before["model_version"]
        assert "grn reindex" in (waiting["warning"] or "")

        # the reindex puts the new pair in service
        reindex(
            mine.model,
            ucm_root,
            mine.index_root,
            labels_csv=ucm_subset,
            settings=ReindexSettings(factory="Flat"),
            device="cpu",
            progress=False,
        )
        after = server.readiness_when(
            lambda ready: ready["model_version"] != before["model_version"],
            "the new model in service",
        )
        new_model = after["model_version"]
        traffic.wait_for(lambda a: a.kind == "search" and a.model_version == new_model, "by it")
    seen = traffic.seen

    assert after["model_version"] != before["model_version"]
    assert after["index_version"] != before["index_version"] and after["warning"] is None
    assert seen and all(a.status == 200 for a in seen), [a for a in seen if a.status != 200]
    models = {answer.model_version for answer in seen}
    assert models == {before["model_version"], after["model_version"]}
    store = IndexStore(mine.index_root)
    for answer in seen:
        if answer.index_version is not None:  # every search used an index built by its model
            assert store.manifest(answer.index_version).model_version == answer.model_version
