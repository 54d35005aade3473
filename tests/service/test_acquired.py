"""When a scene was acquired (`scenes.acquired`, migration 0007), on SQLite and PostgreSQL:
read by `grn import` from labels.csv's `acquired` column and from a GeoTIFF scene's date tags,
and filtered by `acquired_after`, `acquired_before` and `month` with one meaning on the
catalog's arrays (what searches on every store use), in SQL (listings) and by the reference
(`SceneFilter.passes`). A date that does not parse stops the import, naming its line.
Through a real server on each database: searches (FAISS, given the arrays' allow-list),
listings, corrections and additions, and `grn search` as typed."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from commands import grn
from dates import WRITE_KEY, dated_labels
from geodata import make_mosaic, ucm_scenes
from servers import LiveServer, search_ok
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from index.filters import SceneFilter, SceneMeta, utc
from model.archive import Archive, ArchiveError, load_archive, scene_id
from model.rasters import RasterError, acquired_of_file
from service.storage.catalog import Catalog
from service.storage.db import Scene, make_engine
from service.storage.filter_sql import scene_where
from service.storage.migrate import upgrade
from service.usecases.importer import import_archive


def in_another_zone(url: str) -> str:
    """The URL with PostgreSQL's session time zone far from UTC (months must not follow it)."""
    return url.replace("options=", "options=-cTimeZone%3DPacific%2FAuckland%20", 1)


def test_acquired_imported_and_filtered_alike_on_arrays_and_sql(
    database_url: str, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.csv"
    cells = dated_labels(ucm_subset, labels)
    engine = make_engine(database_url)
    upgrade(engine)
    import_archive(engine, ucm_root, labels, progress=False)
    reader = make_engine(in_another_zone(database_url))
    catalog = Catalog(engine)
    with Session(reader) as session:
        stored = dict(session.execute(select(Scene.name, Scene.acquired)).all())
    assert stored[min(n for n, c in cells.items() if c == "")] is None
    first_july = min(n for n, c in cells.items() if c.startswith("2019"))
    assert utc(stored[first_july]) == datetime(2019, 7, 1, 1, 30, tzinfo=UTC)
    acquired = {row.id: row.acquired for row in catalog.table().rows(catalog.table().ids).values()}
    assert len(acquired) == 126 and sum(t is None for t in acquired.values()) == 18
    step = timedelta(microseconds=1)
    end_of_august = datetime(2021, 8, 31, 23, 59, 59, 999999, tzinfo=UTC)
    edges = [None, datetime(2020, 1, 15, tzinfo=UTC), end_of_august, end_of_august + step,
             datetime(2023, 6, 15, 12, tzinfo=UTC)]  # fmt: skip
    seasons: list[list[int]] = [[], [7], [6, 7, 8], [11], [12], [1, 11], [3]]
    checked = 0
    for (after, before), months in itertools.product(itertools.product(edges, repeat=2), seasons):
        where = SceneFilter(acquired_after=after, acquired_before=before, months=months)
        expected = sorted(i for i, t in acquired.items() if where.passes(i, SceneMeta(acquired=t)))
        assert catalog.allowed_ids(where).tolist() == expected, where
        with Session(reader) as session:
            in_sql = session.scalars(select(Scene.id).where(*scene_where(session, where)))
            assert sorted(in_sql) == expected, where
        checked += bool(expected)
    assert checked > 50  # most windows keep some scenes
    assert len(catalog.allowed_ids(SceneFilter(months=[11]))) == 18  # 2022-11-30 23:30 UTC
    assert len(catalog.allowed_ids(SceneFilter(months=[12]))) == 0
    # another connection's correction shows in the next search
    target = min(i for i, t in acquired.items() if t is None)
    with Session(reader) as session, session.begin():
        moment = datetime(2001, 12, 24, tzinfo=UTC)
        session.execute(update(Scene).where(Scene.id == target).values(acquired=moment))
    assert catalog.allowed_ids(SceneFilter(months=[12])).tolist() == [target]
    engine.dispose()
    reader.dispose()


def test_a_geotiff_scene_gives_its_date(ucm_root: Path, tmp_path: Path) -> None:
    """ACQUISITIONDATETIME (GDAL's IMAGERY domain) wins over TIFFTAG_DATETIME; a scene
    without either has none; a tag that does not parse is an error naming the tag."""
    scenes = ucm_scenes(ucm_root, 1)
    both = make_mosaic(
        tmp_path / "both.tif", scenes, grid=(1, 1),
        tags={"": {"TIFFTAG_DATETIME": "2021:05:04 10:00:00"},
              "IMAGERY": {"ACQUISITIONDATETIME": "2021-05-03T09:15:00Z"}},
    )  # fmt: skip
    tiff = make_mosaic(
        tmp_path / "tiff.tif", scenes, grid=(1, 1), cog=True,
        tags={"": {"TIFFTAG_DATETIME": "2021:05:04 10:00:00"}},
    )  # fmt: skip
    plain = make_mosaic(tmp_path / "plain.tif", scenes, grid=(1, 1))
    bad = make_mosaic(
        tmp_path / "bad.tif", scenes, grid=(1, 1), tags={"": {"TIFFTAG_DATETIME": "yesterday"}}
    )
    assert acquired_of_file(both.path) == datetime(2021, 5, 3, 9, 15, tzinfo=UTC)
    assert acquired_of_file(tiff.path) == datetime(2021, 5, 4, 10, tzinfo=UTC)
    assert acquired_of_file(plain.path) is None
    with pytest.raises(RasterError, match=r"bad\.tif: TIFFTAG_DATETIME: 'yesterday' is not"):
        acquired_of_file(bad.path)


def test_grn_import_reads_tags_and_refuses_a_bad_date(ucm_root: Path, tmp_path: Path) -> None:
    """As typed: an archive of GeoTIFF scenes imports each one's date; a labels.csv date
    that does not parse stops the import (exit 1, one line naming the line) and writes
    nothing."""
    archive = tmp_path / "archive"
    scenes = ucm_scenes(ucm_root, 2)
    make_mosaic(archive / "a.tif", scenes[:1], grid=(1, 1),
                tags={"": {"TIFFTAG_DATETIME": "2018:02:03 04:05:06"}})  # fmt: skip
    make_mosaic(archive / "b.tif", scenes[1:], grid=(1, 1))
    (archive / "labels.csv").write_text(
        "image,scene,split,acquired,water\na,x,train,,1\nb,x,train,2017-07-01,0\n"
    )
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    env = {"GRN_DATABASE_URL": url}
    assert grn("db", "upgrade", env=env).returncode == 0
    (tmp_path / "bad.csv").write_text(
        "image,scene,split,acquired,water\na,x,train,,1\nb,x,train,2017-13-01,0\n"
    )
    refused = grn("import", str(archive), "--labels", str(tmp_path / "bad.csv"), env=env)
    assert refused.returncode == 1, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.csv:3: acquired: '2017-13-01' is not an ISO 8601" in lines[0]
    engine = make_engine(url)
    with Session(engine) as session:
        assert session.scalars(select(Scene.id)).all() == []  # nothing half-imported
    done = grn("import", str(archive), "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    with Session(engine) as session:
        stored = {n: utc(t) for n, t in session.execute(select(Scene.name, Scene.acquired))}
    assert stored == {
        "a": datetime(2018, 2, 3, 4, 5, 6, tzinfo=UTC),
        "b": datetime(2017, 7, 1, tzinfo=UTC),
    }
    engine.dispose()
    with pytest.raises(ArchiveError, match="acquired"):
        load_archive(archive, tmp_path / "bad.csv")


def kept(archive: Archive, **conditions: Any) -> set[int]:
    """The scenes of the archive the reference meaning keeps."""
    where = SceneFilter(**conditions)
    return {
        scene_id(s.name)
        for s in archive.scenes
        if where.passes(scene_id(s.name), SceneMeta(acquired=s.acquired))
    }


def test_searches_listings_and_writes_filter_by_acquisition(
    dated: tuple[LiveServer, Archive], ucm_root: Path, tmp_path: Path
) -> None:
    server, archive = dated
    query = str(scene_id(archive.scenes[0].name))
    cases = [
        ({"month": [6, 7, 8]}, {"months": [6, 7, 8]}),
        ({"month": [11], "acquired_after": "2020-01-15"}, {"months": [11]}),
        ({"acquired_after": "2020-01-15", "acquired_before": "2021-09-01T01:00:00+02:00"},
         {"acquired_after": datetime(2020, 1, 15, tzinfo=UTC),
          "acquired_before": datetime(2021, 8, 31, 23, tzinfo=UTC)}),
        ({"acquired_before": "2020-01-15"}, {"acquired_before": datetime(2020, 1, 15, tzinfo=UTC)}),
    ]  # fmt: skip
    with server.client() as client:
        for given, meaning in cases:
            expected = kept(archive, **meaning)
            assert 0 < len(expected) < 126, given
            found = client.post(
                "/search", json={"scene_id": query, "k": 1000, "include_query": True, **given}
            )
            assert found.status_code == 200, found.text
            assert {int(hit["id"]) for hit in found.json()["hits"]} == expected, given
            as_text = {k: ",".join(map(str, v)) if isinstance(v, list) else v
                       for k, v in given.items()}  # fmt: skip
            page = client.get("/scenes", params={**as_text, "limit": 1000}).json()
            assert {int(s["id"]) for s in page["scenes"]} == expected, given
            assert page["total"] == len(expected)
        first = client.get(f"/scenes/{query}").json()
        assert first["acquired"] == (
            archive.scenes[0].acquired.isoformat().replace("+00:00", "Z")
            if archive.scenes[0].acquired else None
        )  # fmt: skip
        # bad values: a 422 naming the field, nothing searched
        for params, field in (
            ({"month": "13"}, "month"),
            ({"acquired_after": "yesterday"}, "acquired_after"),
            ({"acquired_after": "2024-01-01", "acquired_before": "2023-01-01"}, "acquired_before"),
        ):
            refused = client.get("/scenes", params=params)
            assert refused.status_code == 422 and field in refused.json()["message"], params

        # corrected: December has no scene until one is said to be from there
        target = min(kept(archive) - kept(archive, acquired_after=datetime(1, 1, 1, tzinfo=UTC)))
        assert client.get("/scenes", params={"month": "12"}).json()["total"] == 0
        writer = {"X-API-Key": WRITE_KEY}
        patched = client.patch(f"/scenes/{target}", json={"acquired": "2001-12-24"}, headers=writer)
        assert patched.status_code == 200 and patched.json()["acquired"] == "2001-12-24T00:00:00Z"
        december = client.post("/search", json={"scene_id": query, "k": 1000, "month": [12]})
        assert [int(h["id"]) for h in december.json()["hits"]] == [target]
        bad = client.patch(f"/scenes/{target}", json={"acquired": "soon"}, headers=writer)
        assert bad.status_code == 422 and "acquired" in bad.json()["message"]
        cleared = client.patch(f"/scenes/{target}", json={"acquired": None}, headers=writer)
        assert cleared.json()["acquired"] is None

        # added: a GeoTIFF gives its own date, a form field says another
        (scene,) = ucm_scenes(ucm_root, 1, seed=3)
        tif = make_mosaic(tmp_path / "new.tif", [scene], grid=(1, 1),
                          tags={"": {"TIFFTAG_DATETIME": "2016:12:05 10:00:00"}})  # fmt: skip
        data = tif.path.read_bytes()
        added = client.post(
            "/scenes", files={"file": ("new.tif", data)}, data={"name": "new"}, headers=writer
        )
        assert added.status_code == 201, added.text
        assert added.json()["scenes"][0]["acquired"] == "2016-12-05T10:00:00Z"
        said = client.post(
            "/scenes", files={"file": ("other.jpg", scene.read_bytes())},
            data={"name": "said", "acquired": "2015-12-31T23:00:00-02:00"}, headers=writer,
        )  # fmt: skip
        assert said.status_code == 201, said.text
        assert said.json()["scenes"][0]["acquired"] == "2016-01-01T01:00:00Z"
        december = client.get("/scenes", params={"month": "12"}).json()
        assert [s["image"] for s in december["scenes"]] == ["new"]
    # as typed: grn search takes the same conditions, here and through the service
    for where in ([], ["--url", server.url]):
        done = grn("search", "--scene", query, "--k", "1000", "--include-query", "--json",
                   "--month", "6,7,8", *where, env=server.env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert {int(h["id"]) for h in json.loads(done.stdout)["hits"]} == kept(
            archive, months=[6, 7, 8]
        )
    bad_cli = grn("search", "--scene", query, "--month", "june", env=server.env)
    assert bad_cli.returncode == 2 and bad_cli.stderr.startswith("error: month")


def walked(client: Any, order: str, limit: int, **params: str) -> list[dict[str, Any]]:
    """Every scene of `GET /scenes` in `order`, page after page by cursor."""
    scenes: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        asked = {"order": order, "limit": str(limit), **params}
        page = client.get("/scenes", params={**asked, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        scenes += page.json()["scenes"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return scenes


def by_time(scenes: list[dict[str, Any]], newest_first: bool) -> list[str]:
    """The ids of `scenes` by acquisition time, unknown last, ties by id (as SQL sorts)."""

    def key(scene: dict[str, Any]) -> tuple[bool, float, int]:
        when = scene["acquired"]
        seconds = datetime.fromisoformat(when).timestamp() if when else 0.0
        return (when is None, -seconds if newest_first else seconds, int(scene["id"]))

    return [s["id"] for s in sorted(scenes, key=key)]


def test_listings_and_searches_sort_by_acquisition(dated: tuple[LiveServer, Archive]) -> None:
    """`GET /scenes?order=acquired|-acquired` pages (by cursor across runs of equal times and
    into the scenes of unknown time, and by offset) in time order; `POST /search` with
    `order` gives the same k hits as by score, by time, equal times in their rank's order."""
    server, archive = dated
    with server.client() as client:
        every = client.get("/scenes", params={"limit": 1000}).json()["scenes"]
        times = {s["acquired"] for s in every}
        assert len(times) >= 7 and None in times
        for order, newest in (("acquired", False), ("-acquired", True)):
            expected = by_time(every, newest)
            assert [s["id"] for s in walked(client, order, 7)] == expected, order
            offsets = [client.get("/scenes", params={"order": order, "limit": 25, "offset": o})
                       .json()["scenes"] for o in range(0, len(every), 25)]  # fmt: skip
            assert [s["id"] for page in offsets for s in page] == expected, order
            summer = walked(client, order, 5, month="6,7,8")
            assert [s["id"] for s in summer] == by_time(
                [s for s in every if s["acquired"] and s["acquired"][5:7] in ("06", "07", "08")],
                newest,
            )
        other = client.get("/scenes", params={"order": "name", "limit": 5}).json()["next_cursor"]
        mixed = client.get("/scenes", params={"order": "acquired", "cursor": other})
        assert mixed.status_code == 400 and "order=name" in mixed.json()["message"]
        bad = client.get("/scenes", params={"order": "when"})
        assert bad.status_code == 422 and "order" in bad.json()["message"]

        query = str(scene_id(archive.scenes[0].name))
        best = search_ok(server, scene_id=query, k=40)["hits"]
        rank = {hit["id"]: n for n, hit in enumerate(best)}
        for order, newest in (("acquired", False), ("-acquired", True)):
            pages = [search_ok(server, scene_id=query, k=40, order=order, offset=start, limit=15)
                     for start in (0, 15, 30)]  # fmt: skip
            hits = [hit for page in pages for hit in page["hits"]]
            assert sorted(h["id"] for h in hits) == sorted(rank)  # the same 40
            times = [h["acquired"] for h in hits]
            known = [datetime.fromisoformat(t) for t in times if t]
            assert known == sorted(known, reverse=newest) and None not in times[: len(known)]
            for a, b in itertools.pairwise(hits):
                if a["acquired"] == b["acquired"]:
                    assert rank[a["id"]] < rank[b["id"]]  # equal times: best first
        refused = client.post("/search", json={"scene_id": query, "order": "name"})
        assert refused.status_code == 422 and "order" in refused.json()["message"]
