"""The one filter, end to end, through real server processes on SQLite and PostgreSQL over
FAISS: the time a scene entered the archive (`added_after`, `added_before`) filters a search
by JSON and by form, the listing by query parameters and the CSV export alike, zones and
edges included, and a bad time is a 422 naming its field. The archive is dated in thirds
(`servers.date_scenes`): k = 1000 returns every scene that passes, so each answer is compared
with the exact set of scenes the window holds."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from commands import grn
from servers import (
    MIDDLE,
    OLD,
    LiveServer,
    Served,
    dated_database,
    postgres_schema,
    server_env,
)

from model.archive import Archive, scene_id

Groups = tuple[set[int], set[int], set[int]]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dated(
    request: pytest.FixtureRequest,
    served: Served,
    ucm_root: Path,
    ucm_subset: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, Groups]]:
    """A server over the UCM subset whose scenes entered the archive at three times."""
    workdir = tmp_path_factory.mktemp(f"dated-{request.param}")
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'grn.db'}"
    else:
        schema = postgres_schema()
        url = schema.__enter__()
    try:
        groups = dated_database(url, ucm_root, ucm_subset)
        with LiveServer(server_env(served, url, workdir), workdir / "server.log") as server:
            yield server, groups
    finally:
        if schema is not None:
            schema.__exit__()


def windows(groups: Groups) -> list[tuple[dict[str, str], set[int]]]:
    """Time windows and the scenes in each: dates, zones, and both edges (after: at or after;
    before: strictly before)."""
    old, middle, rest = groups
    return [
        ({"added_before": "2021-01-01"}, old),
        ({"added_after": "2024-06-15"}, middle | rest),  # a date: from its first moment
        ({"added_after": "2024-06-16"}, rest),
        ({"added_after": "2024-01-01", "added_before": "2025-01-01"}, middle),
        ({"added_after": "2024-06-15T10:30:00+02:00"}, middle | rest),  # 08:30 UTC: at it
        ({"added_after": "2024-06-15T08:30:00.000001Z"}, rest),
        ({"added_before": "2024-06-15T10:30:00+02:00"}, old),  # before: not at it
        ({"added_before": "2024-06-15T08:30:00.000001"}, old | middle),  # no zone: UTC
    ]


def search_ids(server: LiveServer, **request: Any) -> set[int]:
    with server.client() as client:
        response = client.post("/search", json=request)
    assert response.status_code == 200, response.text
    ids = [int(hit["id"]) for hit in response.json()["hits"]]
    assert len(ids) == len(set(ids))
    return set(ids)


def test_the_times_are_those_set(dated: tuple[LiveServer, Groups]) -> None:
    server, (old, middle, rest) = dated
    with server.client() as client:
        scenes = client.get("/scenes", params={"limit": 1000}).json()["scenes"]
    added = {int(s["id"]): datetime.fromisoformat(s["added"]) for s in scenes}
    assert len(added) == 126 == len(old | middle | rest)
    assert {added[i] for i in old} == {OLD} and {added[i] for i in middle} == {MIDDLE}
    assert min(added[i] for i in rest) > datetime.fromisoformat("2025-01-01T00:00Z")


def test_added_filters_a_search_by_json(dated: tuple[LiveServer, Groups], subset: Archive) -> None:
    server, groups = dated
    query = scene_id(subset.scenes[0].name)
    water = subset.label_names.index("water")
    watery = {scene_id(s.name) for s in subset.scenes if s.labels[water]}
    for window, expected in windows(groups):
        got = search_ids(server, scene_id=str(query), k=1000, include_query=True, **window)
        assert got == expected, window
        # with the other conditions, at once
        got = search_ids(server, scene_id=str(query), k=1000, labels_any=["water"], **window)
        assert got == (expected & watery) - {query}, window
        assert search_ids(server, scene_id=str(query), k=5, **window) <= expected
    unfiltered = search_ids(server, scene_id=str(query), k=1000, include_query=True)
    assert len(unfiltered) == 126


def test_added_filters_a_search_by_form(dated: tuple[LiveServer, Groups], subset: Archive) -> None:
    server, groups = dated
    image = subset.scenes[3].path
    for window, expected in windows(groups)[:4]:
        with server.client() as client:
            response = client.post(
                "/search",
                files={"file": (image.name, image.read_bytes())},
                data={"k": "1000", **window},
            )
        assert response.status_code == 200, response.text
        assert {int(h["id"]) for h in response.json()["hits"]} == expected, window


def test_grn_search_takes_the_window_here_and_through_the_service(
    dated: tuple[LiveServer, Groups], subset: Archive
) -> None:
    """`grn search --added-after/--added-before` as typed, answered in its own process from
    the server's settings and by the running service (--url), keeps the scenes the API keeps;
    a time it cannot read is a usage error (exit 2) that names the option's field."""
    server, groups = dated
    query = str(scene_id(subset.scenes[0].name))
    for window, expected in windows(groups)[:4]:
        options = [f"--{key.replace('_', '-')}={value}" for key, value in window.items()]
        for where in ([], ["--url", server.url]):
            done = grn(
                "search", "--scene", query, "--k", "1000", "--include-query", "--json",
                *options, *where, env=server.env,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert {int(hit["id"]) for hit in json.loads(done.stdout)["hits"]} == expected
    bad = grn("search", "--scene", query, "--added-after", "yesterday", env=server.env)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: added_after: 'yesterday' is not an ISO 8601 date")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_added_filters_the_listing(dated: tuple[LiveServer, Groups], subset: Archive) -> None:
    server, groups = dated
    test_split = {scene_id(s.name) for s in subset.scenes if s.split == "test"}
    with server.client() as client:
        for window, expected in windows(groups):
            page = client.get("/scenes", params={**window, "limit": 1000}).json()
            assert page["total"] == len(expected), window
            assert {int(s["id"]) for s in page["scenes"]} == expected, window
            both = client.get("/scenes", params={**window, "split": "test", "limit": 1000})
            assert {int(s["id"]) for s in both.json()["scenes"]} == expected & test_split
        # paged: the pages of a window make the window
        window, expected = windows(groups)[1]
        pages = [
            client.get("/scenes", params={**window, "offset": offset, "limit": 30}).json()
            for offset in range(0, len(expected), 30)
        ]
        assert {int(s["id"]) for p in pages for s in p["scenes"]} == expected
        assert pages[-1]["next_offset"] is None


def test_the_csv_export_honours_the_filter(
    dated: tuple[LiveServer, Groups], subset: Archive
) -> None:
    server, (old, _, _) = dated
    query = str(scene_id(subset.scenes[10].name))
    request = {"scene_id": query, "k": 1000, "added_before": "2021-01-01", "format": "csv"}
    with server.client() as client:
        table = client.post("/search", json=request)
        answer = client.post("/search", json={**request, "format": "json"}).json()
    assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert {int(row["id"]) for row in rows} == old - {int(query)}
    assert [row["id"] for row in rows] == [hit["id"] for hit in answer["hits"]]
    assert {datetime.fromisoformat(row["added"]) for row in rows} == {OLD}


def test_a_bad_time_is_a_422_naming_its_field(
    dated: tuple[LiveServer, Groups], subset: Archive
) -> None:
    server, _ = dated
    query = str(scene_id(subset.scenes[0].name))
    image = subset.scenes[0].path
    with server.client() as client:
        answers = {
            "added_after": client.post(
                "/search", json={"scene_id": query, "added_after": "2024-02-30"}
            ),
            "added_before": client.post(
                "/search",
                files={"file": (image.name, image.read_bytes())},
                data={"added_before": "soon"},
            ),
            "query.added_after": client.get("/scenes", params={"added_after": "yesterday"}),
            "query.added_before": client.get(
                "/scenes", params={"added_after": "2024-06-15", "added_before": "2024-06-15"}
            ),
        }
        number = client.post("/search", json={"scene_id": query, "added_after": 1700000000})
    for field, answer in answers.items():
        assert answer.status_code == 422, answer.text
        body = answer.json()
        assert body["error"] == "invalid_request"
        assert body["message"].startswith(f"{field}: "), body["message"]
        assert body["details"][0]["loc"] == field.split(".")
    said = answers["added_after"].json()["message"]  # the validator's sentence, no prefix
    assert said.startswith("added_after: ") and "ISO 8601" in said and "Value error" not in said
    assert "not later than added_after" in answers["query.added_before"].json()["message"]
    assert number.status_code == 422 and "added_after" in number.json()["message"]
