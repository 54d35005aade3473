"""Hot swap: a running server takes up a retrained model and its new index together, without
a restart and without failing a request, and never pairs a model with another's index."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from servers import LiveServer, Served, copy_served, prepared_database, server_env, train_tiny

from index.stores.faiss_build import ReindexSettings, reindex
from index.stores.faiss_versions import IndexStore
from model.archive import load_archive, scene_id


def test_retrain_and_reindex_swap_under_load(
    served: Served,
    tiny_config: Callable[..., object],
    ucm_root: Path,
    ucm_subset: Path,
    tmp_path: Path,
) -> None:
    mine = copy_served(served, tmp_path)
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    server = LiveServer(
        server_env(mine, url, tmp_path, GRN_INDEX_POLL_SECONDS="0.2"), tmp_path / "server.log"
    )
    archive = load_archive(ucm_root, ucm_subset)
    image = archive.scenes[5].path.read_bytes()
    query = scene_id(archive.scenes[7].name)
    seen: list[tuple[int, str, str | None]] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def traffic() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not stop.is_set():
                r = client.post("/search", json={"scene_id": query, "k": 5})
                body = r.json()
                seen.append((r.status_code, body.get("model_version"), body.get("index_version")))
                r = client.post("/classify", files={"file": ("q.jpg", image)})
                seen.append((r.status_code, r.json().get("model_version"), None))

    try:
        server.wait_ready()
        with server.client() as client:
            before = client.get("/readyz").json()
        threads.extend(threading.Thread(target=traffic) for _ in range(3))
        for thread in threads:
            thread.start()
        time.sleep(1.0)

        # a retrain replaces the model file: its index does not exist yet, so the old pair stays
        retrained = train_tiny(tiny_config, tmp_path / "retrain", seed=1)
        os.replace(shutil.copy(retrained, mine.model.with_suffix(".new")), mine.model)
        time.sleep(1.5)
        with server.client() as client:
            waiting = client.get("/readyz").json()
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
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with server.client() as client:
                after = client.get("/readyz").json()
            if after["model_version"] != before["model_version"]:
                break
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        server.stop()

    assert after["model_version"] != before["model_version"]
    assert after["index_version"] != before["index_version"] and after["warning"] is None
    assert seen and all(status == 200 for status, _, _ in seen), [s for s in seen if s[0] != 200]
    models = {m for _, m, _ in seen}
    assert models == {before["model_version"], after["model_version"]}
    store = IndexStore(mine.index_root)
    for _, model, index in seen:
        if index is not None:  # every search used an index built by its model
            assert store.manifest(index).model_version == model
