"""The service searching a Milvus collection (GRN_VECTOR_STORE=milvus) answers what the same
service over FAISS answers, through real server processes, on Milvus Lite and on a real
Milvus standalone server; a rebuild is taken up by a swap, on the server while searches go
on."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import utm_footprint
from milvus_fill import fill_milvus, release_milvus_lite
from servers import (
    MIDDLE,
    OLD,
    REPO,
    LiveServer,
    Served,
    Traffic,
    archive_groups,
    dated_database,
    ended_job,
    prepared_database,
    server_env,
)

from index.stores.milvus import reindex_milvus
from index.stores.milvus_client import is_server
from model.archive import load_archive, scene_id
from service.runtime import Runtime
from service.settings import Settings

pytest.importorskip("pymilvus")
KEY = "test-admin-key-0123456789abcdef"


@pytest.fixture(scope="module", params=["lite", "server"])
def servers(
    request: pytest.FixtureRequest,
    served: Served,
    ucm_root: Path,
    ucm_subset: Path,
    geo_labels: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, LiveServer, str]]:
    """A FAISS service and a Milvus service over the same model and scenes (laid on a grid
    of footprints, for the place filters; entered the archive at three times, for the time
    filters); the Milvus service on a Milvus Lite file, then on a Milvus standalone server
    (an alias of its own on the session's server)."""
    workdir = tmp_path_factory.mktemp(f"milvus-service-{request.param}")
    uri, alias = str(workdir / "milvus.db"), "scenes"
    if request.param == "server":
        uri, alias = request.getfixturevalue("milvus_server").uri, "service"
    version = fill_milvus(served, ucm_root, ucm_subset, uri, workdir / "work", alias)
    urls = {}
    for name in ("faiss", "milvus"):
        urls[name] = f"sqlite:///{workdir / f'{name}-catalog.sqlite'}"
        dated_database(urls[name], ucm_root, geo_labels)
    milvus_env = server_env(
        served, urls["milvus"], workdir, GRN_VECTOR_STORE="milvus", GRN_MILVUS_URI=uri,
        GRN_MILVUS_COLLECTION=alias, GRN_API_KEY=KEY, GRN_ARCHIVE_DIR=str(ucm_root),
        GRN_STORE_DIR=str(workdir / "store"),
    )  # fmt: skip
    # both start at once, and may take minutes: at load 20 on 2 cores a service's start
    # (imports, the model's engine) passed the harness's usual 120 s
    faiss = LiveServer(server_env(served, urls["faiss"], workdir), workdir / "faiss.log")
    milvus = LiveServer(milvus_env, workdir / "milvus.log")
    with contextlib.ExitStack() as running:
        for server in (faiss, milvus):
            running.callback(server.stop)
        for server in (faiss, milvus):
            server.wait_ready(timeout=400)
        yield faiss, milvus, version


def hits(server: LiveServer, **request: Any) -> list[tuple[int, float]]:
    with server.client() as client:
        response = client.post("/search", json=request)
    assert response.status_code == 200, response.text
    return [(int(h["id"]), h["score"]) for h in response.json()["hits"]]


def assert_same_ranking(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    """The same scores rank by rank, and the same scene at each rank unless two scenes tie
    (UCM holds near-duplicate scenes; float32 sums in another order may swap them)."""
    assert len(got) == len(expected) and len({i for i, _ in got}) == len(got)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-5)
    scores = [s for _, s in expected]
    for rank, ((a, score), (b, _)) in enumerate(zip(got, expected, strict=True)):
        if a != b:  # only where a neighbouring rank (or the next, past the last) ties
            tied = [j for j, s in enumerate(scores) if j != rank and abs(s - score) <= 1e-5]
            assert tied or rank == len(scores) - 1, f"rank {rank}: {a} instead of {b}"


def test_milvus_answers_what_faiss_answers(
    servers: tuple[LiveServer, LiveServer, str], ucm_root: Path, ucm_subset: Path
) -> None:
    faiss, milvus, version = servers
    with milvus.client() as client:
        ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["index_version"] == version and ready["index_count"] == 126

    subset = load_archive(ucm_root, ucm_subset)
    queries = [scene_id(subset.scenes[i].name) for i in (0, 17, 60)]
    requests: list[dict[str, Any]] = [
        {"k": 10},
        {"k": 126},
        {"k": 1000, "labels_all": ["buildings", "cars"]},
        {"k": 10, "labels_any": ["ship", "tanks"]},
        {"k": 3, "scene": "harbor"},
        {"k": 5, "labels_all": ["water"], "scene": "river"},
        {"k": 8, "exclude_ids": queries[1:]},
        {"k": 10, "include_query": True},
    ]
    middle = utm_footprint(4, 7).centroid  # place filters: an allow-list from the catalog
    requests += [
        {"k": 20, "bbox": [middle.x - 0.003, middle.y - 0.002, middle.x + 0.003, middle.y + 0.002]},
        {"k": 20, "near": [middle.x, middle.y, 400.0], "labels_any": ["grass", "trees"]},
    ]
    compared = 0
    for query in queries:
        for request in requests:
            expected = hits(faiss, scene_id=query, **request)
            got = hits(milvus, scene_id=query, **request)
            assert_same_ranking(got, expected)
            compared += len(got)
    assert compared > 500  # the filters left enough hits to compare

    # an upload is embedded by the model and searched in Milvus
    image = subset.scenes[20].path
    answers = []
    for server in (faiss, milvus):
        with server.client() as client:
            response = client.post(
                "/search",
                files={"file": (image.name, image.read_bytes())},
                data={"k": "5", "labels_any": "grass,trees"},
            )
        assert response.status_code == 200, response.text
        answers.append([(int(h["id"]), h["score"]) for h in response.json()["hits"]])
    assert len(answers[0]) == 5
    assert_same_ranking(answers[1], answers[0])


def test_milvus_filters_by_time_added_as_faiss_does(
    servers: tuple[LiveServer, LiveServer, str], ucm_root: Path, ucm_subset: Path
) -> None:
    """No store keeps the time a scene was added: both get the window as an allow-list from
    the catalog's arrays, and answer the same hits, of the window's scenes only."""
    faiss, milvus, _ = servers
    subset = load_archive(ucm_root, ucm_subset)
    old, middle, rest = archive_groups(subset)
    windows: list[tuple[dict[str, Any], set[int]]] = [
        ({"added_before": OLD.isoformat()}, set()),
        ({"added_before": "2021-01-01"}, old),
        ({"added_after": MIDDLE.isoformat(), "added_before": "2025-01-01"}, middle),
        ({"added_after": "2024-06-15T10:30:00.000001+02:00"}, rest),
        ({"added_after": "2024-06-15", "labels_any": ["grass", "trees"]}, middle | rest),
    ]
    compared = 0
    for query in (scene_id(subset.scenes[i].name) for i in (0, 60)):
        for window, scenes in windows:
            for k in (5, 1000):
                request = {"scene_id": str(query), "k": k, "include_query": True, **window}
                expected = hits(faiss, **request)
                got = hits(milvus, **request)
                assert_same_ranking(got, expected)
                assert {i for i, _ in got} <= scenes
                if k == 1000 and "labels_any" not in window:
                    assert {i for i, _ in got} == scenes  # every scene of the window
                compared += len(got)
    assert compared > 200


def test_milvus_errors_are_the_services_errors(
    servers: tuple[LiveServer, LiveServer, str], ucm_root: Path, ucm_subset: Path
) -> None:
    _, milvus, version = servers
    with milvus.client() as client:
        real = client.get("/scenes", params={"limit": 1}).json()["scenes"][0]["id"]
        unknown_label = client.post("/search", json={"scene_id": real, "labels_all": ["lava"]})
        assert unknown_label.status_code == 400
        assert unknown_label.json()["error"] == "unknown_label"
        missing = client.post("/search", json={"scene_id": 987654321})
        assert missing.status_code == 404
        assert missing.json()["error"] == "scene_not_indexed"
        if not is_server(milvus.env["GRN_MILVUS_URI"]):
            # Milvus Lite is locked by the service: a reindex job could not open it
            busy = client.post("/admin/reindex", json={}, headers={"X-API-Key": KEY})
            assert busy.status_code == 400 and busy.json()["error"] == "milvus_lite_busy"
            return
        # a server takes the rebuild while the service searches: the alias moves to a new
        # collection version and no request fails on the way
        subset = load_archive(ucm_root, ucm_subset)
        traffic = Traffic(
            milvus.url, scene_id(subset.scenes[9].name), subset.scenes[4].path.read_bytes()
        )
        with traffic:
            started = client.post("/admin/reindex", json={}, headers={"X-API-Key": KEY})
            assert started.status_code == 202, started.text
            assert ended_job(client, started.json()["id"], KEY)["status"] == "succeeded"
            ready = milvus.readiness_when(
                lambda r: r.get("index_version") not in (None, version), "the rebuilt version"
            )
            traffic.wait_for(
                lambda a: a.kind == "search" and a.index_version == ready["index_version"],
                "a search of the rebuilt version",
            )
        assert ready["index_count"] == 126
        assert len(traffic.seen) > 10 and {a.status for a in traffic.seen} == {200}


def test_a_rebuilt_collection_is_swapped_in(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    uri = str(tmp_path / "milvus.db")
    first = fill_milvus(served, ucm_root, ucm_subset, uri, tmp_path / "work")
    runtime = Runtime(
        Settings(
            model_path=served.model, vector_store="milvus", milvus_uri=uri, device="cpu",
        )
    )  # fmt: skip
    try:
        assert runtime.refresh() and runtime.problem is None
        old = runtime.current()
        assert old.index_version == first and old.searcher.count == 126
        assert not runtime.refresh()  # nothing new
        query = old.searcher.vectors([scene_id(load_archive(ucm_root, ucm_subset).scenes[0].name)])

        fewer = tmp_path / "fewer.csv"
        fewer.write_text("\n".join(ucm_subset.read_text().splitlines()[:51]) + "\n")
        second = reindex_milvus(
            served.model, ucm_root, uri, "scenes", tmp_path / "work",
            labels_csv=fewer, replace=True, device="cpu", progress=False,
        ).version  # fmt: skip
        assert runtime.refresh()
        new = runtime.current()
        assert new.index_version == second and new.searcher.count == 50
        # a request that took the old snapshot still searches the old collection
        assert (old.searcher.search(query, 100).ids[0] >= 0).sum() == 100
        assert (new.searcher.search(query, 100).ids[0] >= 0).sum() == 50
    finally:
        release_milvus_lite(uri)

    # `grn status` reports the collection behind the alias and what SQL lacks
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    prepared_database(url, ucm_root, ucm_subset)
    env = {"GRN_DATABASE_URL": url, "GRN_MODEL_PATH": str(served.model),
           "GRN_VECTOR_STORE": "milvus", "GRN_MILVUS_URI": uri}  # fmt: skip
    status = subprocess.run(
        [sys.executable, "-m", "service.cli", "status", "--json"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert status.returncode == 1, status.stderr  # SQL holds 76 scenes the collection lacks
    report = json.loads(status.stdout)
    described = report["index"]["description"]
    assert described.startswith(f"scenes -> {second} (Milvus at {uri}, 50 scenes")
    assert report["index"]["scenes"] == 50 and report["scenes"] == {
        "sql": 126, "indexed": 50, "not_indexed": 76, "unknown_to_sql": 0,
        "added_not_folded": 0,
    }  # fmt: skip
    assert report["stale"] == [
        f"76 scenes in SQL are not indexed: run `grn reindex --milvus {uri} --incremental "
        "--catalog`"
    ]


def test_unreachable_milvus_is_reported(served: Served, tmp_path: Path) -> None:
    runtime = Runtime(
        Settings(
            model_path=served.model, vector_store="milvus", milvus_uri="http://127.0.0.1:9",
            device="cpu",
        )
    )  # fmt: skip
    assert not runtime.refresh()
    assert "Milvus" in (runtime.problem or "") and "127.0.0.1:9" in (runtime.problem or "")


def test_scenes_added_corrected_and_removed_over_milvus(
    servers: tuple[LiveServer, LiveServer, str], ucm_root: Path, ucm_subset: Path
) -> None:
    """The write path over the Milvus store: an added scene is found at once (its embedding
    searched beside the collection), a corrected label filters at once (label filters come
    from SQL), a removed scene is gone; the collection itself is untouched."""
    _, milvus, _ = servers
    subset = {s.name for s in load_archive(ucm_root, ucm_subset).scenes}
    path = next(
        p for p in sorted((ucm_root / "images" / "beach").glob("*.*")) if p.stem not in subset
    )
    auth = {"X-API-Key": KEY}
    with milvus.client() as client:
        count = client.get("/readyz").json()["index_count"]
        added = client.post(
            "/scenes", files={"file": (path.name, path.read_bytes())},
            data={"name": path.stem, "labels": "sand,sea"}, headers=auth,
        )  # fmt: skip
        assert added.status_code == 201, added.text
        new_id = int(added.json()["scenes"][0]["id"])
        found = hits(milvus, scene_id=str(new_id), k=5, include_query=True)
        assert found[0][0] == new_id and found[0][1] > 0.999
        assert new_id in [
            i
            for i, _ in hits(
                milvus, scene_id=str(new_id), k=5, include_query=True, labels_all=["sea"]
            )
        ]
        fixed = client.patch(f"/scenes/{new_id}", json={"labels": ["water"]}, headers=auth)
        assert fixed.status_code == 200, fixed.text
        by_sea = hits(milvus, scene_id=str(new_id), k=5, include_query=True, labels_all=["sea"])
        assert new_id not in [i for i, _ in by_sea]
        assert client.delete(f"/scenes/{new_id}", headers=auth).status_code == 204
        assert client.post("/search", json={"scene_id": str(new_id)}).status_code == 404
        assert client.get("/readyz").json()["index_count"] == count
