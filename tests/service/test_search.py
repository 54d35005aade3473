"""Search over the whole UCM archive (2100 real scenes): every k the API allows works, by
scene id and by upload, with and without filters, through a real server; `grn search` and
the HTTP route answer the same, as both call `service.usecases.search.search_scenes`."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from servers import REPO, LiveServer, Served, prepared_database, server_env
from servers import search_ok as search

from index.filters import SceneFilter
from index.stores.faiss_build import ReindexSettings, reindex
from model.archive import Archive, load_archive, scene_id

SCENES = 2100


@pytest.fixture(scope="module")
def archive(ucm_root: Path) -> Archive:
    return load_archive(ucm_root)


@pytest.fixture(scope="module")
def whole(
    served: Served, ucm_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    """A server over every UCM scene: the tiny model's index of all 2100, SQL holding all."""
    workdir = tmp_path_factory.mktemp("whole-archive")
    index_root = workdir / "index"
    reindex(
        served.model, ucm_root, index_root, settings=ReindexSettings(factory="Flat"),
        device="cpu", progress=False,
    )  # fmt: skip
    url = f"sqlite:///{workdir / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_root / "labels.csv")
    env = server_env(Served(served.model, index_root), url, workdir)
    with LiveServer(env, workdir / "server.log") as server:
        yield server, env


def upload(server: LiveServer, path: Path, **fields: str) -> dict[str, Any]:
    with server.client() as client:
        response = client.post(
            "/search", files={"file": (path.name, path.read_bytes())}, data=fields
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ranked(body: dict[str, Any]) -> list[int]:
    ids = [int(hit["id"]) for hit in body["hits"]]
    scores = [hit["score"] for hit in body["hits"]]
    assert len(set(ids)) == len(ids)
    assert all(a >= b - 1e-6 for a, b in itertools.pairwise(scores))
    return ids


def test_every_k_by_scene_id(whole: tuple[LiveServer, dict[str, str]], archive: Archive) -> None:
    server, _ = whole
    with server.client() as client:
        assert client.get("/readyz").json()["index_count"] == SCENES
    query = scene_id(archive.scenes[0].name)
    for k in (1, 2, 10, 999, 1000):
        ids = ranked(search(server, scene_id=query, k=k))
        assert len(ids) == k and query not in ids, k  # the query itself is left out
    with_query = ranked(search(server, scene_id=query, k=1000, include_query=True))
    assert len(with_query) == 1000 and with_query[0] == query
    # at most 1000 excluded ids on top of the query's own: 1000 of the other 1099 scenes
    excluded = [scene_id(s.name) for s in archive.scenes[1:1001]]
    ids = ranked(search(server, scene_id=query, k=1000, exclude_ids=excluded))
    assert len(ids) == 1000
    assert not set(ids) & {query, *excluded}
    # pages of the 1000 hits give them all, in order
    pages = [
        search(server, scene_id=query, k=1000, offset=o, limit=300) for o in (0, 300, 600, 900)
    ]
    assert [int(h["id"]) for p in pages for h in p["hits"]] == ranked(
        search(server, scene_id=query, k=1000)
    )
    assert pages[-1]["next_offset"] is None and pages[0]["next_offset"] == 300


def test_every_k_with_filters(whole: tuple[LiveServer, dict[str, str]], archive: Archive) -> None:
    server, _ = whole
    query = scene_id(archive.scenes[0].name)
    trees = archive.label_names.index("trees")
    with_trees = {
        scene_id(s.name) for s in archive.scenes if s.labels[trees] and scene_id(s.name) != query
    }
    assert len(with_trees) > 1000 > 10  # k = 1000 is a full answer here
    for k in (1, 1000):
        ids = ranked(search(server, scene_id=query, k=k, labels_all=["trees"]))
        assert len(ids) == k and set(ids) <= with_trees
    folder = archive.scenes[0].folder
    ids = ranked(search(server, scene_id=query, k=1000, scene=folder))
    assert len(ids) == 99 and query not in ids  # the other 99 scenes of its folder


def test_every_k_by_upload(whole: tuple[LiveServer, dict[str, str]], archive: Archive) -> None:
    server, _ = whole
    image = archive.scenes[5].path
    for k in ("1", "1000"):
        ids = ranked(upload(server, image, k=k))
        assert len(ids) == int(k)
    best = upload(server, image, k="5")["hits"]  # the scene itself, or an exact twin of it
    assert scene_id(archive.scenes[5].name) in [
        int(h["id"]) for h in best if h["score"] >= best[0]["score"] - 1e-5
    ]
    filtered = ranked(upload(server, image, k="1000", labels_any="ship,tanks"))
    ship, tanks = archive.label_names.index("ship"), archive.label_names.index("tanks")
    either = {scene_id(s.name) for s in archive.scenes if s.labels[ship] or s.labels[tanks]}
    assert len(filtered) == len(either) and set(filtered) == either


def test_k_over_the_limit_is_refused(whole: tuple[LiveServer, dict[str, str]]) -> None:
    server, _ = whole
    with server.client() as client:
        response = client.post("/search", json={"scene_id": 1, "k": 1001})
    assert response.status_code == 422 and response.json()["error"] == "invalid_request"


def test_the_cli_answers_what_the_api_answers(
    whole: tuple[LiveServer, dict[str, str]], archive: Archive
) -> None:
    server, env = whole
    query = scene_id(archive.scenes[42].name)
    expected = search(server, scene_id=query, k=1000, labels_any=["water"])
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "search", "--scene", str(query), "--k", "1000",
         "--labels-any", "water", "--json"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert [h["id"] for h in got["hits"]] == [h["id"] for h in expected["hits"]]
    np.testing.assert_allclose(
        [h["score"] for h in got["hits"]], [h["score"] for h in expected["hits"]], atol=1e-5
    )
    assert got["index_version"] == expected["index_version"]
    # by image file, as a person types it
    image = archive.scenes[42].path
    by_file = subprocess.run(
        [sys.executable, "-m", "service.cli", "search", str(image), "--k", "3"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert by_file.returncode == 0, by_file.stderr
    header, *rows = [line.split() for line in by_file.stdout.splitlines()]
    assert header == ["rank", "score", "id", "image", "labels"]
    assert len(rows) == 3 and [row[0] for row in rows] == ["1", "2", "3"]
    # the scene itself (or an exact twin of it) comes first
    assert str(query) in [row[2] for row in rows if float(row[1]) >= float(rows[0][1]) - 1e-4]
    unknown = subprocess.run(
        [sys.executable, "-m", "service.cli", "search", "--scene", "12345"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == f"error: scene 12345 is not in index {got['index_version']}"


def grn(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip


def test_the_cli_asks_a_running_service_or_answers_itself(
    whole: tuple[LiveServer, dict[str, str]], archive: Archive
) -> None:
    """`grn search` and `grn classify`, against the service (--url) and locally, agree with
    the API, in table, JSON and CSV."""
    server, env = whole
    query = str(scene_id(archive.scenes[77].name))
    local = grn("search", "--scene", query, "--k", "7", "--format", "json", env=env)
    remote = grn("search", "--scene", query, "--k", "7", "--format", "json", "--url", server.url,
                 env=env)  # fmt: skip
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    assert [h["id"] for h in json.loads(local.stdout)["hits"]] == [
        h["id"] for h in json.loads(remote.stdout)["hits"]
    ]
    table = grn("search", "--scene", query, "--k", "7", "--format", "csv", "--url", server.url,
                env=env)  # fmt: skip
    rows = table.stdout.splitlines()
    assert rows[0] == "rank,id,image,scene,score,labels" and len(rows) == 8
    assert [r.split(",")[1] for r in rows[1:]] == [
        h["id"] for h in json.loads(local.stdout)["hits"]
    ]

    images = [str(archive.scenes[i].path) for i in (3, 400)]
    with server.client() as client:
        files = [("file", (Path(p).name, Path(p).read_bytes())) for p in images]
        api = client.post("/classify", files=files).json()["results"]
    for extra in ([], ["--url", server.url]):
        done = grn("classify", *images, "--format", "json", *extra, env=env)
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        assert [r["predicted"] for r in got] == [r["predicted"] for r in api]
        np.testing.assert_allclose(
            [[s["probability"] for s in r["labels"]] for r in got],
            [[s["probability"] for s in r["labels"]] for r in api],
            atol=1e-4,
        )
    plain = grn("classify", *images, env=env)
    assert plain.stdout.splitlines()[0].split() == ["file", "predicted"]
    assert plain.stdout.splitlines()[1].startswith(f"{Path(images[0]).name}  ")
    down = grn("classify", images[0], "--url", "http://127.0.0.1:9", env=env)
    assert down.returncode == 1 and "cannot be reached" in down.stderr
    bad = grn("search", "--scene", query, "--format", "xml", env=env)
    assert bad.returncode == 2 and "table, json or csv" in bad.stderr


def test_relevance_feedback_moves_the_query(
    whole: tuple[LiveServer, dict[str, str]], archive: Archive
) -> None:
    """More like these, less like those: the API ranks by Rocchio's vector (checked against
    exact search over the index's own vectors), leaves the judged scenes out, and the CLI
    and an upload take the same feedback."""
    from index.results import exact_search
    from index.stores.faiss import Searcher
    from index.stores.faiss_versions import IndexStore

    server, env = whole
    served = Searcher(IndexStore(env["GRN_INDEX_ROOT"]).load())
    ids = np.sort(served.ids)
    vectors = served.vectors(ids)
    names = {scene_id(s.name): s for s in archive.scenes}
    query = scene_id(archive.scenes[0].name)
    harbours = [i for i, s in names.items() if s.folder == "harbor"][:3]
    rivers = [i for i, s in names.items() if s.folder == "river"][:2]
    body = search(
        server, scene_id=str(query), k=30, more_like=[str(i) for i in harbours],
        less_like=[str(i) for i in rivers],
    )  # fmt: skip
    got = [int(h["id"]) for h in body["hits"]]
    assert not set(got) & {query, *harbours, *rivers}
    moved = served.vectors([query])[0] + 0.75 * served.vectors(harbours).mean(axis=0)
    moved -= 0.25 * served.vectors(rivers).mean(axis=0)
    moved /= np.linalg.norm(moved)
    keep = ~np.isin(ids, [query, *harbours, *rivers])
    truth = exact_search(vectors[keep], ids[keep], moved[None], 30)
    np.testing.assert_allclose([h["score"] for h in body["hits"]], truth.scores[0], atol=1e-5)
    plain = [int(h["id"]) for h in search(server, scene_id=str(query), k=30)["hits"]]
    folder_of = lambda hits: sum(names[i].folder == "harbor" for i in hits)  # noqa: E731
    assert folder_of(got) > folder_of(plain)  # pulled towards the harbours

    # with no query at all: scenes like these
    only = search(server, more_like=[str(i) for i in harbours], k=5)
    assert only["query_id"] is None and len(only["hits"]) == 5
    with server.client() as client:
        missing = client.post("/search", json={"k": 3})
        assert missing.status_code == 422 and "more_like" in missing.json()["message"]
    # an upload takes the feedback as form fields; the CLI as options
    image = archive.scenes[0].path
    uploaded = upload(server, image, k="30", more_like=",".join(map(str, harbours)),
                      less_like=",".join(map(str, rivers)))  # fmt: skip
    assert not {int(h["id"]) for h in uploaded["hits"]} & {*harbours, *rivers}
    cli = grn("search", "--scene", str(query), "--k", "30", "--format", "json",
              *[f"--more-like={i}" for i in harbours], *[f"--less-like={i}" for i in rivers],
              env=env)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert [int(h["id"]) for h in json.loads(cli.stdout)["hits"]] == got


def test_query_by_labels(whole: tuple[LiveServer, dict[str, str]], archive: Archive) -> None:
    """No image, no scene: "airplane and pavement, not buildings" ranks the scenes that
    match by the classifier's probability that they meet the conditions and by their
    closeness to the labels' region (the mean vector of the scenes that carry the labels),
    checked against exact search over the index's own vectors and probabilities."""
    from index.stores.faiss import Searcher
    from index.stores.faiss_versions import IndexStore
    from model.card import read_card
    from service.usecases.search import LABEL_WEIGHT

    server, env = whole
    served = Searcher(IndexStore(env["GRN_INDEX_ROOT"]).load())
    names = {scene_id(s.name): s for s in archive.scenes}
    label = archive.label_names.index

    def carries(entry: Any, wanted: list[str]) -> bool:
        return all(entry.labels[label(name)] for name in wanted)

    body = search(server, k=100, labels_all=["airplane", "pavement"], labels_none=["buildings"])
    hits = ranked(body)
    matching = [
        i for i, s in names.items()
        if carries(s, ["airplane", "pavement"]) and not s.labels[label("buildings")]
    ]  # fmt: skip
    assert body["query_id"] is None and len(hits) == min(100, len(matching)) > 10
    assert set(hits) <= set(matching)
    assert body["score_kind"] == "label_match"  # the scores are probabilities, said so
    assert search(server, k=5, scene_id=str(hits[0]))["score_kind"] == "similarity"
    region = np.sort(np.asarray([i for i, s in names.items()
                                 if carries(s, ["airplane", "pavement"])]))  # fmt: skip
    centre = served.vectors(region).mean(axis=0)
    centre /= np.linalg.norm(centre)
    allowed = np.asarray(matching)
    column = read_card(env["GRN_MODEL_PATH"]).label_names.index
    probabilities = served.probabilities(allowed)
    assert probabilities is not None
    match = (
        probabilities[:, column("airplane")] * probabilities[:, column("pavement")]
        * (1 - probabilities[:, column("buildings")])
    )  # fmt: skip
    similarity = (served.vectors(allowed) @ centre + 1) / 2
    truth = LABEL_WEIGHT * match + (1 - LABEL_WEIGHT) * similarity
    best = np.argsort(-truth)[: len(hits)]
    # the best scores, in order, and each hit scored as computed here (near-ties may swap)
    np.testing.assert_allclose([h["score"] for h in body["hits"]], truth[best], atol=1e-5)
    own = dict(zip(allowed.tolist(), truth.tolist(), strict=True))
    np.testing.assert_allclose(
        [h["score"] for h in body["hits"]], [own[i] for i in hits], atol=1e-5
    )
    # the probabilities change the order the region alone would give
    assert hits != allowed[np.argsort(-similarity)[: len(hits)]].tolist()
    # labels no scene carries together: nothing, said plainly
    none = search(server, k=10, labels_all=["ship", "airplane"])
    assert none["hits"] == [] and none["total"] == 0
    cli = grn("search", "--labels-all", "airplane,pavement", "--labels-none", "buildings",
              "--k", "100", "--format", "json", env=env)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert [int(h["id"]) for h in json.loads(cli.stdout)["hits"]] == hits


def test_a_version_without_probabilities_ranks_labels_by_the_region(
    whole: tuple[LiveServer, dict[str, str]],
) -> None:
    """An index version built before probabilities were kept still answers a query by
    labels: by closeness to the labels' region alone."""
    import dataclasses
    from types import SimpleNamespace

    from index.stores.faiss import Searcher
    from index.stores.faiss_versions import IndexStore
    from model.card import read_card
    from service.storage.catalog import Catalog
    from service.storage.db import make_engine
    from service.usecases.search import label_region, rank, rank_by_labels

    _, env = whole
    loaded = IndexStore(env["GRN_INDEX_ROOT"]).load()
    old = Searcher(dataclasses.replace(loaded, probabilities=None))
    assert old.probabilities([int(old.ids[0])]) is None
    table = Catalog(make_engine(env["GRN_DATABASE_URL"])).table()
    snapshot: Any = SimpleNamespace(card=read_card(env["GRN_MODEL_PATH"]), searcher=old)
    where = SceneFilter(labels_all=["airplane", "pavement"])
    region = label_region(old, table, where.labels_all)
    assert region is not None
    got, matched = rank_by_labels(snapshot, old, table, region, 20, where)
    plain = rank(old, table, region, 20, where)
    assert [h.scene.id for h in got] == [h.scene.id for h in plain]
    assert [h.score for h in got] == [h.score for h in plain] and not matched
    kept: Any = SimpleNamespace(card=snapshot.card, searcher=Searcher(loaded))
    blended, matched = rank_by_labels(kept, kept.searcher, table, region, 20, where)
    assert [h.score for h in blended] != [h.score for h in plain] and matched


def test_text_is_read_onto_the_labels(
    whole: tuple[LiveServer, dict[str, str]], archive: Archive
) -> None:
    """A free phrase becomes labels and a scene folder to find and labels to exclude, said
    back in `understood`; what nothing reads is reported, never guessed."""
    server, env = whole
    body = search(server, text="storage tanks, no trees", k=50)
    assert body["understood"] == {
        "labels_all": [], "labels_none": ["trees"], "folders": ["storagetanks"],
        "words_not_understood": [], "not_understood": [],
    }  # fmt: skip
    same = search(server, scene="storagetanks", labels_none=["trees"], k=50)
    assert [h["id"] for h in body["hits"]] == [h["id"] for h in same["hits"]] and body["hits"]
    for hit in body["hits"]:
        assert hit["scene"] == "storagetanks" and "trees" not in hit["labels"]
    partly = search(server, text="parked aircraft beside a volcano", k=5)
    assert partly["understood"]["labels_all"] == ["airplane"]
    assert partly["understood"]["words_not_understood"] == ["parked", "volcano"]
    with server.client() as client:
        nothing = client.post("/search", json={"text": "a volcano at dusk"})
    assert nothing.status_code == 400 and nothing.json()["error"] == "text_not_understood"
    assert "airplane" in nothing.json()["message"]  # it lists the vocabulary
    # with a scene, the text filters its neighbours
    query = str(scene_id(archive.scenes[0].name))
    filtered = search(server, scene_id=query, text="houses", k=10)
    assert all("buildings" in h["labels"] for h in filtered["hits"])
    cli = grn("search", "--text", "storage tanks, no trees", "--k", "50", env=env)
    assert cli.returncode == 0, cli.stderr
    assert "understood: folder storagetanks; not trees" in cli.stderr
    rows = cli.stdout.splitlines()[1:]  # under the header row
    assert [row.split()[2] for row in rows] == [h["id"] for h in body["hits"]]
