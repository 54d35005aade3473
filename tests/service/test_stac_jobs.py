"""A STAC catalog imported through the API, as an operator does it: `POST /admin/import` with
`stac` (and `asset`, `max_cloud`) queues the job, the service's worker runs the use case of
`grn import --stac`, the job's output names each item that could not be imported, and the
imported scenes are then listed, searched and exported as GeoParquet with date filters; a
second import adds nothing. On SQLite and PostgreSQL, over the tests' catalog of real
GeoTIFFs (`stac_catalog.write_test_catalog`: two good items, four bad)."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import geopandas
import httpx
import pytest
import shapely
from servers import LiveServer, Served, copy_served, ended_job, live_server
from shapely.geometry import shape
from stac_catalog import BAD_ITEMS, GOOD_ITEMS, wgs84_box, write_test_catalog

KEY = "admin-key-0123456789abcdef"
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def stac_root(ucm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the tests' catalog (`catalog/catalog.json`) and its rasters."""
    root = tmp_path_factory.mktemp("stac")
    write_test_catalog(root, ucm_root)
    return root


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def admin_server(
    request: pytest.FixtureRequest, served: Served, ucm_root: Path, ucm_subset: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:  # fmt: skip
    """A server over the UCM subset (126 scenes, none dated), with the admin key, a store and
    a copy of the served model and index of its own, on each database."""
    workdir = tmp_path_factory.mktemp(f"stac-jobs-{request.param}")
    mine = copy_served(served, workdir / "served")  # its reindex job writes a new version
    env = {"GRN_API_KEY": KEY, "GRN_STORE_DIR": str(workdir / "store")}
    with live_server(request.param, mine, ucm_root, ucm_subset, workdir, **env) as (server, _):
        yield server


def job(client: httpx.Client, **body: Any) -> dict[str, Any]:
    """The admin import job queued with `body`, once it has ended."""
    queued = client.post("/admin/import", headers=AUTH, json=body)
    assert queued.status_code == 202, queued.text
    return ended_job(client, queued.json()["id"], KEY)


def listed(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    page = client.get("/scenes", params={"limit": "1000", "order": "name", **params})
    assert page.status_code == 200, page.text
    scenes: list[dict[str, Any]] = page.json()["scenes"]
    return scenes


def test_a_catalog_imported_by_the_admin_job_is_listed_searched_and_exported_by_date(
    admin_server: LiveServer, stac_root: Path, tmp_path: Path
) -> None:
    catalog = stac_root / "catalog" / "catalog.json"
    with admin_server.client() as client:
        done = job(client, stac=str(catalog))
        assert done["kind"] == "import-stac" and done["command"] == f"grn import --stac {catalog}"
        assert done["status"] == "succeeded", done["output"]
        assert done["output"][0].startswith(
            "imported 3 scenes (0 already present) from 2 of 6 STAC items"
        )
        problems = dict(line.strip().split(": ", 1) for line in done["output"][1:])
        assert set(problems) == {f"item {name}" for name in BAD_ITEMS}
        for name, said in BAD_ITEMS.items():
            assert said in problems[f"item {name}"], name

        # listed by date: the archive's own scenes have none, so only the items' tiles pass
        june_2021 = listed(client, acquired_after="2021-01-01", acquired_before="2022-01-01")
        assert [s["image"] for s in june_2021] == ["scene-a_0_0", "scene-a_0_1"]
        outline = shape(wgs84_box(GOOD_ITEMS["scene-a"][0], 2, 1))  # the item's place
        for scene in june_2021:
            assert scene["acquired"] == "2021-06-01T10:00:00Z" and scene["scene"] == "scene-a"
            assert outline.contains(shape(scene["place"]["footprint"]).centroid)
        march = listed(client, month="3")
        assert [(s["image"], s["acquired"]) for s in march] == [
            ("scene-b_0_0", "2020-03-01T09:00:00Z")
        ]
        newest = [s["image"] for s in listed(client, month="3,6", order="-acquired")]
        assert sorted(newest[:2]) == ["scene-a_0_0", "scene-a_0_1"] and newest[2] == "scene-b_0_0"
        stored = client.get(f"/scenes/{june_2021[0]['id']}").json()
        assert stored["metadata"]["stac"]["properties"]["platform"] == "ucm-plane"

        # searched by date once the index has them (an incremental reindex job)
        indexed = client.post("/admin/reindex", headers=AUTH, json={"incremental": True})
        assert ended_job(client, indexed.json()["id"], KEY)["status"] == "succeeded"
        first = june_2021[0]["id"]
        hits = client.post(
            "/search", json={"scene_id": first, "k": 50, "include_query": True, "month": [6]}
        ).json()["hits"]
        assert sorted(h["image"] for h in hits) == ["scene-a_0_0", "scene-a_0_1"]
        before = client.post(
            "/search", json={"scene_id": first, "k": 50, "acquired_before": "2021-01-01"}
        ).json()["hits"]
        assert [h["image"] for h in before] == ["scene-b_0_0"]

        # out as GeoParquet: the items' footprints, dates and properties come back
        exported = client.get("/scenes/export", params={"format": "geoparquet", "month": "3,6"})
        assert exported.status_code == 200, exported.text
    path = tmp_path / "stac.parquet"
    path.write_bytes(exported.content)
    frame = geopandas.read_parquet(path).set_index("image")
    assert sorted(frame.index) == ["scene-a_0_0", "scene-a_0_1", "scene-b_0_0"]
    for scene in june_2021 + march:
        row = frame.loc[scene["image"]]
        assert shapely.equals(row.geometry, shape(scene["place"]["footprint"]))
        assert row.acquired.isoformat().replace("+00:00", "Z") == scene["acquired"]
    assert frame.loc["scene-a_0_0", "platform"] == "ucm-plane"
    assert frame.loc["scene-a_0_0", "eo:cloud_cover"] == 5.0
    assert frame.loc["scene-b_0_0", "eo:cloud_cover"] == 60.0

    with admin_server.client() as client:
        # again: nothing added; max_cloud leaves out scene-b (60%) and no-crs (none given)
        total = client.get("/scenes").json()["total"]
        assert total == 129
        again = job(client, stac=str(catalog))
        assert again["status"] == "succeeded"
        assert again["output"][0].startswith("imported 0 scenes (3 already present)")
        clear = job(client, stac=str(catalog), max_cloud=10)
        assert clear["command"].endswith("--max-cloud 10")
        assert "2 items left out by max_cloud" in clear["output"][1]
        assert client.get("/scenes").json()["total"] == total


@pytest.fixture
def served_catalog(stac_root: Path) -> Iterator[str]:
    """The catalog's folder served over HTTP on 127.0.0.1: the catalog's URL."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(stac_root))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as http:
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{http.server_address[1]}/catalog/catalog.json"
        http.shutdown()
        thread.join(10)


def test_bad_imports_are_refused_or_fail_naming_why(
    admin_server: LiveServer, stac_root: Path, served_catalog: str, tmp_path: Path
) -> None:
    catalog = str(stac_root / "catalog" / "catalog.json")
    not_stac = tmp_path / "not.json"
    not_stac.write_text(json.dumps({"hello": "world"}))
    with admin_server.client() as client:
        total = client.get("/scenes").json()["total"]
        for body, status, said in (
            ({"stac": str(tmp_path / "missing.json")}, 400, "no such STAC file here"),
            ({"stac": catalog, "archive": str(tmp_path)}, 400, "not both"),
            ({"asset": "visual"}, 400, "asset and max_cloud go with stac"),
            ({"stac": catalog, "max_cloud": 101}, 422, "max_cloud"),
            ({"stac": ""}, 422, "stac"),
        ):
            refused = client.post("/admin/import", headers=AUTH, json=body)
            assert refused.status_code == status and said in refused.json()["message"], body
        assert client.post("/admin/import", json={"stac": catalog}).status_code == 401

        # not STAC: the job fails with one line saying so
        failed = job(client, stac=str(not_stac))
        assert failed["status"] == "failed" and failed["returncode"] == 1
        assert "not a STAC catalog, collection, item collection or item" in failed["output"][-1]

        # a catalog at a URL is read, but its assets are URLs too: refused item by item
        remote = job(client, stac=served_catalog)
        assert remote["status"] == "failed", remote["output"]
        problems = dict(line.strip().split(": ", 1) for line in remote["output"][1:-1])
        assert len(problems) == 6
        for name in ("scene-a", "scene-b", "no-crs"):
            assert "only local files are tiled" in problems[f"item {name}"], name
            assert served_catalog.rsplit("/", 2)[0] in problems[f"item {name}"]
        assert remote["output"][-1] == "error: none of the 6 STAC items could be imported"
        assert client.get("/scenes").json()["total"] == total  # nothing half-imported
