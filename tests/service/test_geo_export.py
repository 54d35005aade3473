"""STAC and GeoParquet out, through a real server over the UCM subset laid on a grid of UTM
footprints (`geo_labels`) and dated (`dates.GIVEN`): `GET /scenes/{id}/stac` is a STAC Item
that pystac validates (offline, against the core schemas it ships), with the footprint, the
acquisition time and the properties a STAC import keeps; `GET /scenes/export?format=
geoparquet` and `grn export --format geoparquet` as typed write files that GeoPandas and
DuckDB both read back, rows, geometries, dates, labels, scores and embeddings compared with
what the API says of each scene."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import geopandas
import numpy as np
import pystac
import pytest
import shapely
from commands import grn
from dates import WRITE_KEY
from servers import LiveServer

from model.archive import Archive, scene_id

SUMMER = {6, 7, 8}
EO = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"


def scenes_by_id(server: LiveServer) -> dict[int, dict[str, Any]]:
    with server.client() as client:
        page = client.get("/scenes", params={"limit": 1000}).json()
    return {int(s["id"]): s for s in page["scenes"]}


def test_a_scene_is_a_valid_stac_item(dated: tuple[LiveServer, Archive]) -> None:
    server, archive = dated
    scenes = scenes_by_id(server)
    dated = next(s for s in archive.scenes if s.acquired and s.geo)
    undated = next(s for s in archive.scenes if not s.acquired)
    unplaced = next(s for s in archive.scenes if not s.geo)
    with server.client() as client:
        answer = client.get(f"/scenes/{scene_id(dated.name)}/stac")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/geo+json")
        item = pystac.Item.from_dict(answer.json())
        assert item.validate()  # the core schemas pystac ships: no network
        assert item.id == dated.name and item.datetime == dated.acquired
        assert shapely.equals(shapely.geometry.shape(item.geometry), dated.geo.footprint)
        assert item.bbox == pytest.approx(list(dated.geo.bounds))
        shown = scenes[scene_id(dated.name)]
        assert item.properties["grn:labels"] == shown["labels"]
        assert item.properties["grn:datetime_is"] == "acquired"
        assert item.assets["data"].href == shown["image_url"]
        # a scene of unknown time: STAC requires one, so the time added, said
        plain = client.get(f"/scenes/{scene_id(undated.name)}/stac").json()
        assert plain["properties"]["grn:datetime_is"] == "added"
        assert plain["properties"]["datetime"] == scenes[scene_id(undated.name)]["added"]
        assert pystac.Item.from_dict(plain).validate()
        nowhere = client.get(f"/scenes/{scene_id(unplaced.name)}/stac").json()
        assert nowhere["geometry"] is None and "bbox" not in nowhere
        assert pystac.Item.from_dict(nowhere).validate()
        assert client.get("/scenes/12345/stac").status_code == 404
        # what a STAC import keeps comes back: its properties and extensions
        properties = {"platform": "sentinel-2a", "eo:cloud_cover": 12.5, "gsd": 10,
                      "datetime": "2020-01-01T00:00:00Z"}  # fmt: skip
        stac = {"stac": {"item": "S2A_1", "stac_extensions": [EO], "properties": properties}}
        target = scene_id(dated.name)
        patched = client.patch(
            f"/scenes/{target}", json={"metadata": stac}, headers={"X-API-Key": WRITE_KEY}
        )
        assert patched.status_code == 200, patched.text
        kept = client.get(f"/scenes/{target}/stac").json()
    assert kept["properties"]["platform"] == "sentinel-2a"
    assert kept["properties"]["eo:cloud_cover"] == 12.5 and kept["properties"]["gsd"] == 10
    assert kept["stac_extensions"] == stac["stac"]["stac_extensions"]
    assert kept["properties"]["datetime"] == item.properties["datetime"]  # acquired wins
    # offline, the core schema (the eo extension's own schema is on the network)
    assert pystac.Item.from_dict({**kept, "stac_extensions": []}).validate()


def test_geoparquet_reads_in_geopandas_and_duckdb(
    dated: tuple[LiveServer, Archive], tmp_path: Path
) -> None:
    server, archive = dated
    scenes = scenes_by_id(server)
    summer = {
        scene_id(s.name): s for s in archive.scenes if s.acquired and s.acquired.month in SUMMER
    }
    with server.client() as client:
        answer = client.get(
            "/scenes/export",
            params={"format": "geoparquet", "month": "6,7,8", "embeddings": "true"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/vnd.apache.parquet"
        bad = client.get("/scenes/export", params={"format": "geoparquet", "month": "0"})
        assert bad.status_code == 422 and "month" in bad.json()["message"]
    path = tmp_path / "scenes.parquet"
    path.write_bytes(answer.content)

    frame = geopandas.read_parquet(path)
    assert frame.crs is not None and frame.crs.to_string() == "OGC:CRS84"  # lon, lat
    assert set(frame["id"]) == set(summer) and len(frame) == len(summer) > 0
    for row in frame.itertuples():
        entry, shown = summer[row.id], scenes[row.id]
        assert row.labels.tolist() == shown["labels"] and row.scene == shown["scene"]
        assert row.acquired.to_pydatetime() == entry.acquired
        if entry.geo is None:
            assert row.geometry is None
        else:
            assert shapely.equals(row.geometry, entry.geo.footprint)
            window = ",".join(map(str, shown["place"]["window"]))
            assert row.crs == "EPSG:32611" and row.window == window
        assert len(row.scores) == len(archive.label_names)
        assert ((row.scores >= 0) & (row.scores <= 1)).all()
        assert np.linalg.norm(row.embedding) == pytest.approx(1.0, abs=1e-5)

    with duckdb.connect() as con:
        table = f"read_parquet('{path}')"
        rows = con.sql(
            f"SELECT id, ST_AsText(geometry), acquired, labels, len(scores), "
            f"len(embedding) FROM {table} ORDER BY id"
        ).fetchall()
        schema_meta = dict(con.sql(
            f"SELECT decode(key), decode(value) FROM parquet_kv_metadata('{path}')"
        ).fetchall())  # fmt: skip
        water = con.sql(f"SELECT id FROM {table} WHERE list_contains(labels, 'water')").fetchall()
    assert [r[0] for r in rows] == sorted(summer)
    for found_id, wkt, acquired, labels, scores, dim in rows:
        entry = summer[found_id]
        if entry.geo is None:
            assert wkt is None
        else:
            assert shapely.equals(shapely.from_wkt(wkt), entry.geo.footprint)
        assert acquired == entry.acquired and labels == scenes[found_id]["labels"]
        assert scores == len(archive.label_names) and dim == frame["embedding"].iloc[0].size
    assert {r[0] for r in water} == {i for i in summer if "water" in scenes[i]["labels"]}
    geo = json.loads(schema_meta["geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert json.loads(schema_meta["grn"])["score_labels"] == archive.label_names


def test_grn_export_as_typed(dated: tuple[LiveServer, Archive], tmp_path: Path) -> None:
    server, archive = dated
    out = tmp_path / "water.parquet"
    done = grn("export", str(out), "--format", "geoparquet", "--filter", "labels_any=water",
               "--filter", "bbox=-120,30,-110,40", env=server.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    water = archive.label_names.index("water")
    expected = {scene_id(s.name) for s in archive.scenes if s.geo and s.labels[water]}
    frame = geopandas.read_parquet(out)
    assert set(frame["id"]) == expected and len(expected) > 0
    assert done.stdout.startswith(f"wrote {len(expected)} scenes to {out} (geoparquet, scored by")
    assert "embedding" not in frame.columns and frame["scores"].notna().all()
    for args, said in (
        (["--filter", "month=13"], "month"),
        (["--filter", "colour=red"], "unknown filter field(s) colour"),
        (["--filter", "water"], "--filter takes FIELD=VALUE"),
    ):
        refused = grn("export", str(tmp_path / "no.parquet"), *args, env=server.env)
        assert refused.returncode == 2, refused.stderr
        assert said in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "no.parquet").exists()
