"""Regions and match maps (issue 38 item 3) over real UCM scenes: a query image made of
two scenes of different labels side by side, searched by its left or its right half
through a real server (JSON, multipart) and `grn search` as typed; where a hit matches, on
a hit made of the same two scenes; and every wrong region refused with a 422 that says
which."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from commands import grn
from composites import Composite, composite
from servers import LiveServer, Served, copy_served, prepared_database, server_env

from model.archive import Archive
from service.usecases.regions import MAX_MATCH_MAPS, Region, RegionError, windows

WRITE_KEY = "write-key-0123456789abcdef"


@pytest.fixture(scope="module")
def pair(subset: Archive, tmp_path_factory: pytest.TempPathFactory) -> Composite:
    return composite(subset, tmp_path_factory.mktemp("composite") / "pair.png")


@pytest.fixture(scope="module")
def server(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server over the UCM subset on SQLite, scenes may be added with WRITE_KEY."""
    workdir = tmp_path_factory.mktemp("regions")
    url = f"sqlite:///{workdir / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    mine = copy_served(served, workdir / "served")
    env = server_env(
        mine, url, workdir, GRN_WRITE_KEY=WRITE_KEY, GRN_STORE_DIR=str(workdir / "store")
    )
    with LiveServer(env, workdir / "server.log") as live:
        yield live


def upload(server: LiveServer, pair: Composite, path: str = "/search", **fields: Any) -> Any:
    """A multipart POST of the composite with `fields` as form fields (lists as text)."""
    form = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in fields.items()}
    with server.client() as client:
        return client.post(path, files={"file": ("pair.png", pair.path.read_bytes())}, data=form)


def answered(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_region_is_checked_and_cut_as_given() -> None:
    image = np.arange(64 * 48 * 3, dtype=np.uint8).reshape(48, 64, 3)
    assert Region.of([8, 4, 40, 36]).crop(image).shape == (32, 32, 3)
    assert (Region.parse("0,0,64,48").crop(image) == image).all()
    for box, says in [
        ([0, 0, 15, 40], "each side must be at least 16 px"),
        ([-1, 0, 20, 20], "x0 and y0 must be 0 or more"),
        ([0, 0, 16], "four integers"),
    ]:
        with pytest.raises(RegionError, match=says):
            Region.of(box)
    with pytest.raises(RegionError, match="outside the 64 x 48 px image: x1 must be at most 64"):
        Region.of([0, 0, 65, 48]).crop(image)


def test_the_windows_of_a_match_map_are_two_cells_moved_inside_the_image() -> None:
    crops, shape = windows(np.zeros((256, 512, 3), np.uint8), 4)
    assert (shape.rows, shape.cols, shape.width, shape.height) == (4, 4, 512, 256)
    assert (shape.window_width, shape.window_height) == (256, 128)
    assert len(crops) == 16 and {c.shape for c in crops} == {(128, 256, 3)}
    marked = np.zeros((256, 512, 3), np.uint8)
    marked[:, 256:] = 255  # the right half white: its windows start at 0, 64, 192 and 256
    crops, _ = windows(marked, 4)
    assert [float(c.mean()) / 255 for c in crops[:4]] == [0.0, 0.25, 0.75, 1.0]


def test_a_region_of_an_upload_searches_by_that_region(server: LiveServer, pair: Composite) -> None:
    left = answered(upload(server, pair, region=pair.half("left"), k=5))
    right = answered(upload(server, pair, region=pair.half("right"), k=5))
    whole = answered(upload(server, pair, k=5))
    # each half is exactly its scene's pixels: that scene first, as its own nearest
    assert left["hits"][0]["id"] == pair.left_id and left["hits"][0]["score"] > 0.99
    assert right["hits"][0]["id"] == pair.right_id and right["hits"][0]["score"] > 0.99
    assert left["region"] == pair.half("left") and whole["region"] is None


def test_a_region_of_an_archive_scene_searches_by_that_region(
    server: LiveServer, pair: Composite
) -> None:
    query = pair.left_id
    with server.client() as client:
        whole = answered(client.post("/search", json={
            "scene_id": query, "region": [0, 0, pair.width, pair.height], "include_query": True,
        }))  # fmt: skip
        corner = answered(
            client.post("/search", json={"scene_id": query, "region": [0, 0, 96, 96]})
        )
        plain = answered(client.post("/search", json={"scene_id": query}))
    # the region that is the whole image: the scene itself first, as a search by its id
    assert whole["hits"][0]["id"] == query and whole["hits"][0]["score"] > 0.99
    # a corner: the query's scene is still left out and named as the query
    assert corner["query_id"] == query and query not in [h["id"] for h in corner["hits"]]
    assert [h["id"] for h in corner["hits"]] != [h["id"] for h in plain["hits"]]


def test_a_wrong_region_is_a_422_that_says_which(server: LiveServer, pair: Composite) -> None:
    outside = upload(server, pair, region=[0, 0, 2 * pair.width + 1, pair.height])
    assert outside.status_code == 422
    assert f"outside the {2 * pair.width} x {pair.height} px image" in outside.json()["message"]
    assert outside.json()["details"][0]["loc"] == ["body", "region"]
    with server.client() as client:
        for body, says in [
            ({"scene_id": pair.left_id, "region": [0, 0, 10, 100]}, "at least 16 px"),
            ({"scene_id": pair.left_id, "region": [0, 0, 100]}, "at least 4 items"),
            ({"scene_id": pair.left_id, "region": [0, 0, 300, 100]}, f"outside the {pair.width} x"),
            ({"labels_all": ["trees"], "region": [0, 0, 64, 64]}, "need a query image"),
            ({"scene_id": pair.left_id, "match_maps": True, "k": 20}, "at most 10 hits"),
            ({"scene_id": pair.left_id, "match_maps": True, "match_grid": 9}, "match_grid"),
        ]:
            refused = client.post("/search", json=body)
            assert refused.status_code == 422, (body, refused.text)
            assert says in refused.json()["message"], (says, refused.json())
        density = client.post(
            "/search/density", json={"scene_id": pair.left_id, "match_maps": True, "k": 5}
        )
        assert density.status_code == 400


def test_match_maps_come_with_each_hit_and_match_post_match(
    server: LiveServer, pair: Composite
) -> None:
    body = answered(upload(server, pair, region=pair.half("left"), k=4, match_maps="true"))
    assert len(body["hits"]) == 4 <= MAX_MATCH_MAPS
    for hit in body["hits"]:
        found = hit["match_map"]
        values = np.asarray(found["values"])
        assert (found["rows"], found["cols"]) == values.shape == (4, 4)
        assert (np.abs(values) <= 1.0001).all()
        assert found["window_width"] == round(found["width"] / 2)  # two of four cells
    first = body["hits"][0]
    assert first["id"] == pair.left_id
    assert (first["match_map"]["width"], first["match_map"]["height"]) == (pair.width, pair.height)
    # one hit's map on demand, as the page's viewer asks for it: the same numbers
    alone = answered(upload(server, pair, "/match", hit_id=first["id"], region=pair.half("left")))
    assert np.allclose(alone["match_map"]["values"], first["match_map"]["values"], atol=2e-3)
    coarse = answered(upload(server, pair, region=pair.half("left"), k=1, match_maps="true",
                             match_grid=3))  # fmt: skip
    assert np.asarray(coarse["hits"][0]["match_map"]["values"]).shape == (3, 3)
    assert answered(upload(server, pair, k=1))["hits"][0]["match_map"] is None


def test_the_match_map_of_a_hit_peaks_where_the_query_lies(
    server: LiveServer, pair: Composite
) -> None:
    """The composite added to the archive as a scene: matched with its left scene, its map
    is higher on its left half; with its right scene, on its right half."""
    with server.client() as client:
        added = client.post(
            "/scenes", files={"file": ("pair.png", pair.path.read_bytes())},
            data={"name": "pair-of-scenes", "scene": "composites"},
            headers={"X-API-Key": WRITE_KEY},
        )  # fmt: skip
        assert added.status_code == 201, added.text
        hit = added.json()["scenes"][0]["id"]
        halves = {}
        for side, query in (("left", pair.left_id), ("right", pair.right_id)):
            found = answered(client.post("/match", json={"scene_id": query, "hit_id": hit}))
            values = np.asarray(found["match_map"]["values"])
            assert values.shape == (4, 4) and found["match_map"]["width"] == 2 * pair.width
            halves[side] = values[:, :2].mean() - values[:, 2:].mean()
        assert halves["left"] > 0 > halves["right"], halves
        # an upload of the left scene's file: the same answer as its scene id
        by_file = client.post(
            "/match", files={"file": (pair.left.path.name, pair.left.path.read_bytes())},
            data={"hit_id": hit},
        )  # fmt: skip
        values = np.asarray(answered(by_file)["match_map"]["values"])
        assert values[:, :2].mean() > values[:, 2:].mean()
        unknown = client.post("/match", json={"scene_id": pair.left_id, "hit_id": "12345"})
        assert unknown.status_code == 404


def test_grn_search_takes_a_region_and_prints_match_maps(
    server: LiveServer, pair: Composite
) -> None:
    region = ",".join(map(str, pair.half("right")))
    done = grn("search", str(pair.path), "--region", region, "--match-maps", "--k", "2",
               env=server.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["rank", "score", "id", "image", "labels"]
    assert lines[1].split()[2] == pair.right_id  # the right half's scene first
    maps = [i for i, line in enumerate(lines) if line.startswith("match map ")]
    assert len(maps) == 2 and pair.right.name in lines[maps[0]]
    rows = [
        [float(v.rstrip("*")) for v in line.split()] for line in lines[maps[0] + 1 : maps[0] + 5]
    ]
    assert (
        np.asarray(rows).shape == (4, 4)
        and sum(line.count("*") for line in lines[maps[0] + 1 : maps[0] + 5]) >= 1
    )
    # the same through the service, as JSON
    remote = grn("search", str(pair.path), "--region", region, "--match-maps", "--k", "2",
                 "--url", server.url, "--json", env=server.env)  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    body = json.loads(remote.stdout)
    assert body["hits"][0]["id"] == pair.right_id
    assert np.allclose(body["hits"][0]["match_map"]["values"], rows, atol=2e-3)
    # a region that is no box: a usage error naming it
    wrong = grn("search", str(pair.path), "--region", "0,0,10", env=server.env)
    assert wrong.returncode == 2 and "region" in wrong.stderr, wrong.stderr
