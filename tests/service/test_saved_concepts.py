"""Saved concepts (`service.usecases.saved_concepts`) on SQLite and PostgreSQL: saved with
their probe and model version, counted and used as a filter, applied to scenes added later,
refined, renamed and deleted, re-fitted when another model is served or marked stale when
its positives are gone; through the use cases, the real server and `grn concept` as typed.

Two head-mode models with random heads (64- and 32-dimensional embeddings: two model
versions) and their Flat indexes over the 126-scene UCM subset."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from commands import grn
from PIL import Image
from servers import LiveServer, Served, empty_database, head_model_served, prepared_database
from servers import server_env as base_env

from index.filters import SceneFilter
from index.id_mask import IdMask
from index.stores import ModelIndex, UnknownSceneError, open_store
from service.settings import Settings
from service.storage.catalog import Catalog
from service.storage.concepts import ConceptExistsError, ConceptNotFoundError, ConceptStore
from service.storage.db import make_engine
from service.usecases.local_search import open_index_only
from service.usecases.saved_concepts import (
    ConceptChange,
    ConceptNameError,
    ConceptStaleError,
    ScoreCache,
    concept_allowed,
    concept_facet,
    concept_scores,
    current_concept,
    refine_concept,
    save_concept,
)
from service.usecases.search import SearchQuery, search_scenes
from service.usecases.writes import NewScene, SceneWriter

KEY = "concept-key-0123456789abcdef"
SHOTS = 5


@pytest.fixture(scope="module")
def models(
    ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Served, Served]:
    """Model A (64-d embeddings) and model B (32-d), each with its index over the subset."""
    first, _, _ = head_model_served(
        tmp_path_factory.mktemp("concepts-a"), ucm_root, ucm_subset, embedding_dim=64
    )
    second, _, _ = head_model_served(
        tmp_path_factory.mktemp("concepts-b"), ucm_root, ucm_subset, embedding_dim=32
    )
    return first, second


@pytest.fixture
def archive(database_url: str, ucm_root: Path, ucm_subset: Path) -> str:
    """A fresh database (SQLite, PostgreSQL) holding the subset."""
    prepared_database(database_url, ucm_root, ucm_subset)
    return database_url


def served(model: Served, tmp_path: Path) -> Iterator[ModelIndex]:
    settings = Settings(model_path=model.model, index_root=model.index_root,
                        thumbnail_dir=tmp_path / "thumbnails", device="cpu")  # fmt: skip
    store = open_store(settings.store)
    try:
        yield open_index_only(settings, store)
    finally:
        store.close()


@pytest.fixture
def snapshot_a(models: tuple[Served, Served], tmp_path: Path) -> Iterator[ModelIndex]:
    yield from served(models[0], tmp_path)


@pytest.fixture
def snapshot_b(models: tuple[Served, Served], tmp_path: Path) -> Iterator[ModelIndex]:
    yield from served(models[1], tmp_path)


def examples(catalog: Catalog, label: str) -> tuple[list[int], list[int], set[int]]:
    """SHOTS scenes carrying `label`, SHOTS without it, and every scene carrying it."""
    table = catalog.table()
    rows = table.rows([int(i) for i in table.allowed_ids(SceneFilter())])
    carrying = sorted(i for i, row in rows.items() if label in row.labels)
    others = sorted(i for i, row in rows.items() if label not in row.labels)
    return carrying[:SHOTS], others[:SHOTS], set(carrying)


def test_a_saved_concept_scores_counts_and_filters_every_scene(
    archive: str, snapshot_a: ModelIndex, tmp_path: Path
) -> None:
    catalog, store = Catalog(make_engine(archive)), ConceptStore(make_engine(archive))
    positives, negatives, water = examples(catalog, "water")
    saved = save_concept(snapshot_a, catalog, store, " water ", positives, negatives)
    assert saved.name == "water" and store.get("water").positives == tuple(positives)
    assert saved.model_version == snapshot_a.model_version
    assert saved.index_version == snapshot_a.index_version
    assert saved.weights.shape == (64,) and saved.created == saved.updated
    ids, scores = concept_scores(snapshot_a, catalog, saved)
    assert len(ids) == 126
    cache = ScoreCache()  # as of the catalog's generation: the scene added below is scored
    facet = concept_facet(snapshot_a, catalog, store, saved, cache)
    allowed = concept_allowed(snapshot_a, catalog, store, ["water"], cache=cache)
    assert not facet.stale and facet.scenes == 126
    assert facet.count == len(allowed) == int((scores >= 0.5).sum())
    assert set(allowed.ids.tolist()) == set(ids[scores >= 0.5].tolist())
    # a mask over the catalog's ids (as a label filter's), kept: a search by it finds what
    # a search by its ids finds
    assert isinstance(allowed, IdMask) and allowed.universe is catalog.table().ids
    assert concept_allowed(snapshot_a, catalog, store, ["water"], cache=cache) is allowed
    for scene in positives[:3]:
        pages = [
            search_scenes(snapshot_a, catalog, SearchQuery(k=10, where=where), scene_id=scene)
            for where in (SceneFilter().allowing(allowed), SceneFilter(allow_ids=allowed.ids))
        ]
        assert [h.scene.id for h in pages[0].hits] == [h.scene.id for h in pages[1].hits]
        assert [h.score for h in pages[0].hits] == pytest.approx([h.score for h in pages[1].hits])
        assert {h.scene.id for h in pages[0].hits} <= set(allowed.ids.tolist())
    # what it keeps is richer in its label than the archive (measured: 4 of 15 kept scenes
    # carry water, 0.27, against 12 of 126, 0.095)
    assert len(set(allowed.ids.tolist()) & water) / len(allowed) > 2 * len(water) / 126
    # the positives score as the concept, the negatives not
    by_id = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    assert min(by_id[i] for i in positives) > max(by_id[i] for i in negatives)
    # a floor of its own, and two concepts at once: the scenes both keep
    assert len(concept_allowed(snapshot_a, catalog, store, ["water"], -10.0)) == 126
    trees, not_trees, _ = examples(catalog, "trees")
    save_concept(snapshot_a, catalog, store, "trees", trees, not_trees)
    both = concept_allowed(snapshot_a, catalog, store, ["water", "trees"])
    alone = concept_allowed(snapshot_a, catalog, store, ["trees"])
    assert set(both.ids.tolist()) == set(allowed.ids.tolist()) & set(alone.ids.tolist())
    # a scene added later (its embedding that of a positive) is scored as that positive
    twin = positives[int(np.argmax([by_id[i] for i in positives]))]
    added = add_scene(archive, tmp_path, snapshot_a, catalog, twin)
    ids, scores = concept_scores(snapshot_a, catalog, store.get("water"))
    assert len(ids) == 127
    assert scores[ids == added][0] == pytest.approx(by_id[twin], abs=1e-5)
    assert added in concept_allowed(snapshot_a, catalog, store, ["water"])
    assert added in concept_allowed(snapshot_a, catalog, store, ["water"], cache=cache)


def add_scene(url: str, tmp_path: Path, snapshot: ModelIndex, catalog: Catalog, like: int) -> int:
    """A scene added through the writer (as POST /scenes adds one) with the embedding of
    the scene `like`; its id."""
    image = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(image, format="PNG")
    vector = catalog.live(snapshot.searcher, catalog.table(snapshot.model_version)).vectors([like])[
        0
    ]
    scene = NewScene(data=image.getvalue(), height=8, width=8, embedding=vector,
                     probabilities=None, name="added-later")  # fmt: skip
    (added,) = SceneWriter(make_engine(url), tmp_path / "store").add(
        [scene], snapshot.model_version
    )
    return int(added.scene.id)


def test_refine_rename_delete_and_what_is_refused(archive: str, snapshot_a: ModelIndex) -> None:
    catalog, store = Catalog(make_engine(archive)), ConceptStore(make_engine(archive))
    positives, negatives, _ = examples(catalog, "buildings")
    first = save_concept(snapshot_a, catalog, store, "houses", positives[:3], negatives[:2])
    cache = ScoreCache()  # as of each version of the concept
    before = concept_allowed(snapshot_a, catalog, store, ["houses"], cache=cache)
    refined = refine_concept(
        snapshot_a, catalog, store, "houses",
        ConceptChange(add_positives=positives[3:], add_negatives=[*negatives[2:], positives[0]]),
    )  # fmt: skip
    assert refined.positives == tuple(positives[1:])  # the first moved to the negatives
    assert refined.negatives == (*negatives, positives[0])
    assert not np.allclose(refined.weights, first.weights)  # re-fitted
    assert refined.created == first.created and refined.updated > first.updated
    after = concept_allowed(snapshot_a, catalog, store, ["houses"], cache=cache)
    assert np.array_equal(after, concept_allowed(snapshot_a, catalog, store, ["houses"]))
    assert not np.array_equal(after, before)
    kept = refine_concept(snapshot_a, catalog, store, "houses", ConceptChange(threshold=0.8))
    assert kept.threshold == 0.8 and np.array_equal(kept.weights, refined.weights)
    renamed = refine_concept(snapshot_a, catalog, store, "houses", ConceptChange(name="roofs"))
    assert renamed.name == "roofs" and renamed.positives == refined.positives
    with pytest.raises(ConceptNotFoundError, match="no saved concept is called 'houses'"):
        store.get("houses")
    save_concept(snapshot_a, catalog, store, "other", positives[:1])
    saved = [(c.name, c.updated) for c in store.all()]
    for refused, error, says in (
        (lambda: save_concept(snapshot_a, catalog, store, "roofs", positives[:1]),
         ConceptExistsError, "'roofs' is saved already"),
        (lambda: refine_concept(snapshot_a, catalog, store, "other", ConceptChange(name="roofs")),
         ConceptExistsError, "'roofs' is saved already"),
        (lambda: save_concept(snapshot_a, catalog, store, "a,b", positives[:1]),
         ConceptNameError, "cannot name a concept"),
        (lambda: save_concept(snapshot_a, catalog, store, "new", [12345]),
         UnknownSceneError, "scene 12345 is not in the index"),
        (lambda: save_concept(snapshot_a, catalog, store, "new", []),
         ValueError, "at least one positive"),
        (lambda: refine_concept(snapshot_a, catalog, store, "roofs",
                                ConceptChange(remove=list(renamed.positives))),
         ValueError, "at least one positive"),
        (lambda: concept_allowed(snapshot_a, catalog, store, ["nothing"]),
         ConceptNotFoundError, "'nothing'"),
    ):  # fmt: skip
        with pytest.raises(error, match=says):
            refused()
    assert [(c.name, c.updated) for c in store.all()] == saved  # nothing half-done
    store.delete("roofs")
    assert [c.name for c in store.all()] == ["other"]
    with pytest.raises(ConceptNotFoundError):
        store.delete("roofs")


def test_another_model_refits_the_concept_or_marks_it_stale(
    archive: str, snapshot_a: ModelIndex, snapshot_b: ModelIndex, tmp_path: Path
) -> None:
    """Model B served after A (a promotion): the concept is re-fitted from its examples on
    B's embeddings and saved so; once its positives are removed from the archive, a concept
    fitted with A cannot be re-fitted: stale, refused as a filter, until refined."""
    catalog, store = Catalog(make_engine(archive)), ConceptStore(make_engine(archive))
    positives, negatives, _ = examples(catalog, "water")
    save_concept(snapshot_a, catalog, store, "water", positives, negatives)
    save_concept(snapshot_a, catalog, store, "gone", positives[:2], negatives)
    again = current_concept(snapshot_b, catalog, store, store.get("water"))
    assert again.model_version == snapshot_b.model_version != snapshot_a.model_version
    assert again.weights.shape == (32,) and store.get("water").weights.shape == (32,)
    assert again.positives == tuple(positives)
    assert len(concept_allowed(snapshot_b, catalog, store, ["water"])) > 0
    writer = SceneWriter(make_engine(archive), tmp_path / "store")
    for scene in positives[:2]:
        writer.delete(scene)
    facet = concept_facet(snapshot_b, catalog, store, store.get("gone"))
    assert facet.stale and facet.count is None and facet.scenes == 124
    assert store.get("gone").model_version == snapshot_a.model_version  # left as it was
    with pytest.raises(ConceptStaleError, match="none of its positives is in the index"):
        concept_allowed(snapshot_b, catalog, store, ["gone"])
    fresh = refine_concept(
        snapshot_b, catalog, store, "gone", ConceptChange(add_positives=positives[2:])
    )
    assert (
        fresh.positives == tuple(positives[2:]) and fresh.model_version == snapshot_b.model_version
    )
    assert not concept_facet(snapshot_b, catalog, store, fresh).stale


@pytest.fixture(params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, models: tuple[Served, Served], ucm_root: Path,
    ucm_subset: Path, tmp_path: Path,
) -> Iterator[tuple[LiveServer, dict[str, str], str]]:  # fmt: skip
    """A server of model A over a fresh database, writes allowed with KEY."""
    with empty_database(request.param, tmp_path) as url:
        prepared_database(url, ucm_root, ucm_subset)
        env = base_env(models[0], url, tmp_path, GRN_API_KEY=KEY)
        with LiveServer(env, tmp_path / "server.log") as server:
            yield server, env, url


def test_the_api_and_the_cli_save_use_and_forget_a_concept(
    live: tuple[LiveServer, dict[str, str], str],
) -> None:
    server, env, url = live
    positives, negatives, _ = examples(Catalog(make_engine(url)), "water")
    ids = [str(i) for i in positives]
    keyed = {"X-API-Key": KEY}
    body = {"name": "water", "positives": ids, "negatives": [str(i) for i in negatives]}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.post("/concepts", json=body).status_code == 401
        saved = client.post("/concepts", json=body, headers=keyed)
        assert saved.status_code == 201, saved.text
        concept = saved.json()
        assert concept["positives"] == ids and concept["stale"] is False
        assert 0 < concept["count"] <= concept["scenes"] == 126
        listed = client.get("/concepts").json()
        assert [c["name"] for c in listed["concepts"]] == ["water"]
        assert listed["concepts"][0]["count"] == concept["count"]
        # a filter on the listing and on a search, like a label
        page = client.get("/scenes", params={"concepts": "water", "limit": 1000}).json()
        assert page["total"] == concept["count"] == len(page["scenes"])
        kept = {int(s["id"]) for s in page["scenes"]}
        hits = client.post("/search", json={"scene_id": ids[0], "k": 1000, "concepts": ["water"]})
        assert hits.status_code == 200, hits.text
        assert {int(h["id"]) for h in hits.json()["hits"]} == kept - {positives[0]}
        exported = client.get("/scenes/export", params={"concepts": "water"})
        assert exported.status_code == 200 and len(exported.text.splitlines()) == 1 + len(kept)
        everything = client.get("/scenes", params={"concepts": "water", "concept_min_score": -10})
        assert everything.json()["total"] == 126
        for method, path, sent, status, says in (
            ("POST", "/concepts", body, 409, "saved already"),
            ("POST", "/concepts", {**body, "name": "a,b"}, 422, "name"),
            ("POST", "/concepts", {**body, "name": "x", "positives": ["abc"]}, 422, "positives"),
            ("POST", "/concepts", {**body, "name": "x", "positives": ["12345"]}, 404,
             "scene 12345 is not in the index"),
            ("POST", "/concepts", {**body, "name": "x", "positives": []}, 400,
             "at least one positive"),
            ("PATCH", "/concepts/water", {}, 422, "nothing to change"),
            ("PATCH", "/concepts/nothing", {"threshold": 0.2}, 404, "'nothing'"),
            ("GET", "/concepts/nothing", None, 404, "'nothing'"),
        ):  # fmt: skip
            refused = client.request(method, path, json=sent, headers=keyed)
            assert refused.status_code == status, (path, sent, refused.text)
            assert says in refused.json()["message"]
        assert client.get("/scenes", params={"concepts": "nothing"}).status_code == 404
        assert client.get("/concepts").json()["concepts"][0]["positives"] == ids
        # `grn search --concepts` as typed, here and against the server: the API's hits
        wanted = client.post("/search", json={"scene_id": ids[0], "k": 20, "concepts": ["water"]})
        for where in ([], ["--url", server.url]):
            searched = grn("search", "--scene", ids[0], "--k", "20", "--concepts", "water",
                           "--json", *where, env=env)  # fmt: skip
            assert searched.returncode == 0, searched.stderr
            found = [h["id"] for h in json.loads(searched.stdout)["hits"]]
            assert found == [h["id"] for h in wanted.json()["hits"]] and found
            assert {int(i) for i in found} <= kept
        for where in ([], ["--url", server.url]):
            unknown = grn("search", "--scene", ids[0], "--concepts", "nothing", *where, env=env)
            assert unknown.returncode == 1 and "'nothing'" in unknown.stderr, unknown.stderr
        # the CLI as typed, here and against the server
        refined = grn("concept", "refine", "water", "--negative", str(positives[-1]), "--json",
                      env=env)  # fmt: skip
        assert refined.returncode == 0, refined.stderr
        assert json.loads(refined.stdout)["negatives"][-1] == str(positives[-1])
        assert client.get("/concepts/water").json()["positives"] == ids[:-1]
        shown = grn("concept", "show", "water", "--url", server.url, env=env)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("water: ") and "4 positives, 6 negatives" in shown.stdout
        renamed = grn("concept", "rename", "water", "lakes", "--url", server.url, env=env)
        assert renamed.returncode == 0, renamed.stderr
        listed_cli = grn("concept", "list", env=env)
        assert listed_cli.returncode == 0, listed_cli.stderr
        assert listed_cli.stdout.splitlines()[0].split() == [
            "name", "scenes", "threshold", "positives", "negatives", "model"
        ]  # fmt: skip
        assert listed_cli.stdout.splitlines()[1].split()[0] == "lakes"
        saved_cli = grn("concept", "save", "pools", "--positive", ids[0], "--json", env=env)
        assert saved_cli.returncode == 0 and json.loads(saved_cli.stdout)["name"] == "pools"
        for args, code, says in (
            (["save", "pools", "--positive", ids[0]], 1, "'pools' is saved already"),
            (["save", "x", "--positive", "12345"], 1, "scene 12345 is not in the index"),
            (["save", "x"], 2, "give at least one --positive"),
            (["save", "x", "--positive", "abc"], 2, "takes a scene id"),
            (["save", "a,b", "--positive", ids[0]], 2, "name"),
            (["show", "nothing"], 1, "'nothing'"),
            (["delete", "nothing", "--url", server.url], 1, "404"),
            (["refine", "lakes"], 2, "give --positive, --negative, --remove or --threshold"),
        ):  # fmt: skip
            refused_cli = grn("concept", *args, env=env)
            assert refused_cli.returncode == code, (args, refused_cli.stderr)
            assert says in refused_cli.stderr and len(refused_cli.stderr.strip().splitlines()) == 1
        gone = grn("concept", "delete", "pools", env=env)
        assert gone.returncode == 0, gone.stderr
        assert client.delete("/concepts/lakes", headers=keyed).status_code == 204
        assert client.get("/concepts").json()["concepts"] == []
        assert client.delete("/concepts/lakes", headers=keyed).status_code == 404
