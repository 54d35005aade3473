"""A Milvus server killed under a service's load, then restarted: searches and /readyz turn
503 naming the vector store, classifications go on, a scene written meanwhile is kept (SQL
is the source of truth), and the service recovers by itself once the server is back, with
`grn reconcile` finding no drift."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from milvus_fill import fill_milvus
from servers import (
    REPO,
    LiveServer,
    Served,
    Traffic,
    prepared_database,
    server_env,
)

from model.archive import load_archive, scene_id

pytest.importorskip("milvus")
pytest.importorskip("pymilvus")
from bench.milvus_server import MilvusServer

KEY = "test-admin-key-0123456789abcdef"


@pytest.mark.engines
def test_a_killed_milvus_server_and_its_return(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    subset = load_archive(ucm_root, ucm_subset)
    query = scene_id(subset.scenes[9].name)
    names = {s.name for s in subset.scenes}
    upload = next(p for p in sorted((ucm_root / "images" / "beach").glob("*.*"))
                  if p.stem not in names)  # fmt: skip
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    auth = {"X-API-Key": KEY}
    with MilvusServer(tmp_path / "milvus") as milvus:
        fill_milvus(served, ucm_root, ucm_subset, milvus.uri, tmp_path / "work")
        env = server_env(
            served, url, tmp_path, GRN_VECTOR_STORE="milvus", GRN_MILVUS_URI=milvus.uri,
            GRN_API_KEY=KEY, GRN_STORE_DIR=str(tmp_path / "store"), GRN_INDEX_POLL_SECONDS="1",
        )  # fmt: skip
        service = LiveServer(env, tmp_path / "service.log")
        try:  # a start may take minutes on a loaded machine (imports, the model's engine)
            service.wait_ready(timeout=400)
        except BaseException:
            service.stop()
            raise
        traffic = Traffic(service.url, query, subset.scenes[4].path.read_bytes(), threads=2)
        with service, traffic, service.client() as client:
            traffic.wait_for(lambda a: a.kind == "search" and a.status == 200, "a search")
            milvus.kill()
            traffic.wait_for(lambda a: a.kind == "search" and a.status == 503, "a refused search")
            refused = client.post("/search", json={"scene_id": query, "k": 5})
            assert refused.status_code == 503
            assert refused.json()["error"] == "vector_store_unavailable"
            assert f"Milvus vector store at {milvus.uri}" in refused.json()["message"]
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "vector store: the Milvus" in ready.text
            # a scene written while the vector store is away goes to SQL, with its embedding
            added = client.post(
                "/scenes", files={"file": (upload.name, upload.read_bytes())},
                data={"name": upload.stem, "labels": "sand,sea"}, headers=auth,
            )  # fmt: skip
            assert added.status_code == 201, added.text
            new_id = added.json()["scenes"][0]["id"]

            milvus.start()
            service.readiness_when(lambda r: r.get("status") == "ready", "ready again", 120)
            traffic.wait_for(lambda a: a.kind == "search" and a.status == 200, "a search again")
            found = client.post("/search", json={"scene_id": new_id, "k": 3,
                                                 "include_query": True})  # fmt: skip
            assert found.status_code == 200, found.text
            assert found.json()["hits"][0]["id"] == new_id
        statuses = {(a.kind, a.status) for a in traffic.seen}
        assert statuses == {("search", 200), ("search", 503), ("classify", 200)}

        reconciled = subprocess.run(
            [sys.executable, "-m", "service.cli", "reconcile", "--json"],
            cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
        )  # fmt: skip
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    drift = json.loads(reconciled.stdout)
    assert drift["clean"] and drift["missing_from_index"] == drift["unknown_to_sql"] == 0
    assert drift["pending"] == 1  # the scene written while Milvus was away, searched from SQL
