"""Re-ranking with the backbone's descriptors (model/rerank.py): a head-mode model's index
version keeps each scene's descriptor, the frozen ImageNet backbone's pooled features; a
search of content the model did not train on takes the index's nearest and re-orders them by
the blended score, through the real server as through `service.usecases.search`; `off` and a model
with a fine-tuned backbone leave the GRN order alone."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from commands import grn
from servers import LiveServer, Served, head_model_served, server_env

from index.stores.faiss import FaissVersions, Searcher
from index.stores.faiss_build import ReindexSettings, reindex
from index.stores.faiss_versions import IndexStore
from model import rerank
from model.archive import load_archive, scene_id
from model.card import load_model, read_card
from model.imageio import read_image
from model.inference import normalize, predict, prepare_batch
from service.storage.catalog import Catalog
from service.storage.db import make_engine
from service.usecases.search import Rerank, SearchQuery, search_scenes


@pytest.fixture(scope="module")
def head_served(
    ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Served, str, Path]:
    """A head-mode model (UCM's label names, trained on no folder of this archive), its
    index over the 126-scene subset, and SQL holding those scenes."""
    return head_model_served(tmp_path_factory.mktemp("rerank"), ucm_root, ucm_subset)


def backbone_descriptors(model: Path, images: list[np.ndarray]) -> np.ndarray:
    """The frozen backbone's pooled features, on the unit sphere, computed in torch."""
    net, card = load_model(model, engine="torch")
    batch = normalize(prepare_batch(images, card.input_size), card.mean, card.std)
    with torch.inference_mode():
        features = net.backbone(batch)
    return torch.nn.functional.normalize(features, dim=1).numpy()


def test_the_version_keeps_the_backbones_descriptors(
    head_served: tuple[Served, str, Path], ucm_root: Path, ucm_subset: Path
) -> None:
    served, _, _ = head_served
    loaded = IndexStore(served.index_root).load()
    assert loaded.descriptors is not None
    assert loaded.descriptors.dtype == np.int8 and loaded.manifest.descriptors_dtype == "int8"
    assert loaded.manifest.stats["seen_share"] == 0.0  # the model trained on none of it
    assert loaded.seen is not None and len(loaded.seen) == 0
    current = FaissVersions(served.index_root).current()  # what `grn status` prints
    assert current is not None
    assert "0% seen content; descriptors kept (int8)" in current.description
    archive = load_archive(ucm_root, ucm_subset)
    scenes = archive.scenes[:6]
    expected = backbone_descriptors(served.model, [read_image(s.path) for s in scenes])
    got = Searcher(loaded).descriptors([scene_id(s.name) for s in scenes])
    assert got is not None and got.shape == (6, 1280)
    # int8 on disk: half a step of 1/127 of a row's largest value (at most 0.4 here)
    np.testing.assert_allclose(got, expected, atol=3e-3)


def test_a_fine_tuned_backbone_keeps_no_descriptors(served: Served) -> None:
    loaded = IndexStore(served.index_root).load()
    assert loaded.descriptors is None
    assert Searcher(loaded).descriptors([int(Searcher(loaded).ids[0])]) is None


def test_an_incremental_reindex_keeps_the_parents_descriptors(
    head_served: tuple[Served, str, Path], ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """From a float16 parent (as versions were before int8), the incremental build keeps
    int8 codes (the default) of every scene: those of a full int8 build."""
    served, _, _ = head_served
    archive = load_archive(ucm_root, ucm_subset)
    names = [s.name for s in archive.scenes]
    common = dict(labels_csv=ucm_subset, device="cpu", progress=False)
    float16 = ReindexSettings(factory="Flat", descriptors="float16")
    reindex(served.model, ucm_root, tmp_path, names=names[:40], settings=float16, **common)  # type: ignore[arg-type]
    first = IndexStore(tmp_path).load()
    reindex(served.model, ucm_root, tmp_path, incremental=True,  # type: ignore[arg-type]
            settings=ReindexSettings(factory="Flat"), **common)  # fmt: skip
    grown = IndexStore(tmp_path).load()
    assert grown.manifest.parent == first.manifest.version
    assert first.descriptors is not None and grown.descriptors is not None
    assert first.descriptors.dtype == np.float16 and grown.descriptors.dtype == np.int8
    assert len(grown.descriptors.ids) == len(names)
    whole = Searcher(IndexStore(served.index_root).load())
    ids = [scene_id(n) for n in names]
    np.testing.assert_array_equal(Searcher(grown).descriptors(ids), whole.descriptors(ids))


def expected_order(
    index: Searcher, query: int, k: int, pool: int, weight: float
) -> tuple[list[int], list[float]]:
    """The re-ranked hits worked out by hand: the GRN cosines of every other scene, the
    `pool` nearest blended with the descriptors' cosines."""
    ids = index.ids[index.ids != query]
    grn = index.vectors(ids) @ index.vectors([query])[0]
    nearest = np.argsort(-grn, kind="stable")[:pool]
    descriptors = index.descriptors(ids[nearest])
    query_descriptor = index.descriptors([query])
    assert descriptors is not None and query_descriptor is not None
    blend = weight * grn[nearest] + (1 - weight) * descriptors @ query_descriptor[0]
    order = np.argsort(-blend, kind="stable")[:k]
    return [int(i) for i in ids[nearest][order]], [float(s) for s in blend[order]]


def test_a_search_by_scene_is_re_ranked(head_served: tuple[Served, str, Path]) -> None:
    from service.runtime import Runtime
    from service.settings import Settings

    served, url, base = head_served
    settings = Settings(database_url=url, model_path=served.model, index_root=served.index_root,
                        thumbnail_dir=base / "thumbnails", device="cpu")  # fmt: skip
    runtime = Runtime(settings)
    assert runtime.refresh(), runtime.problem
    snapshot = runtime.current()
    catalog = Catalog(make_engine(url))
    index = Searcher(IndexStore(served.index_root).load())
    query = int(index.ids[7])

    def hits(mode: str, **query_fields: Any) -> tuple[list[int], list[float], bool]:
        page = search_scenes(
            snapshot, catalog, SearchQuery(**query_fields), scene_id=query,
            rerank=Rerank(mode, weight=0.3, pool=40),
        )  # fmt: skip
        return [h.scene.id for h in page.hits], [h.score for h in page.hits], page.reranked

    ids, scores, reranked = hits("auto", k=10)  # unseen content: auto re-ranks
    want_ids, want_scores = expected_order(index, query, 10, 40, 0.3)
    assert reranked and ids == want_ids
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    plain, _, reranked = hits("off", k=10)
    assert not reranked and plain != ids
    assert plain == expected_order(index, query, 10, 40, 1.0)[0]  # the GRN order
    # paging and min_score work on the blended scores
    assert hits("on", k=10, offset=5, limit=5)[0] == want_ids[5:]
    cut = want_scores[3]
    above = [i for i, s in zip(ids, scores, strict=True) if s >= cut]
    assert hits("on", k=10, min_score=cut)[0] == above
    runtime.store.close()


def test_an_upload_is_re_ranked_through_the_server(
    head_served: tuple[Served, str, Path], ucm_root: Path, ucm_subset: Path
) -> None:
    """What a user sees: POST /search with an image answers `reranked` and the hits in the
    order of the blended score, worked out here from the image's own descriptor."""
    served, url, base = head_served
    archive = load_archive(ucm_root, ucm_subset)
    path = archive.scenes[3].path
    net, card = load_model(served.model)
    out = predict(net, card, [read_image(path)], torch.device("cpu"))
    index = Searcher(IndexStore(served.index_root).load())
    grn = index.vectors(index.ids) @ out.embeddings[0]
    nearest = np.argsort(-grn, kind="stable")[: rerank.POOL]
    described = index.descriptors(index.ids[nearest])
    assert described is not None
    blend = rerank.blended(grn[nearest], out.descriptors[0], described)
    want = [str(i) for i in index.ids[nearest][np.argsort(-blend, kind="stable")][:10]]
    env = server_env(served, url, base)
    with LiveServer(env, base / "server.log") as server:
        body = upload(server, path)
        assert body["reranked"] is True
        assert [hit["id"] for hit in body["hits"]] == want
        assert abs(body["hits"][0]["score"] - float(np.sort(blend)[-1])) < 1e-4
    with LiveServer({**env, "GRN_BACKBONE_RERANK": "off"}, base / "off.log") as server:
        body = upload(server, path)
        assert body["reranked"] is False
        order = [str(i) for i in index.ids[np.argsort(-grn, kind="stable")][:10]]
        assert [hit["id"] for hit in body["hits"]] == order


def test_the_cli_says_when_it_re_ranked(head_served: tuple[Served, str, Path]) -> None:
    """`grn search --scene` as typed: the table says on stderr that the hits were re-ranked
    (this archive is unseen content for the random heads), and says nothing when re-ranking
    is off; stdout keeps only the hits."""
    served, url, base = head_served
    query = str(int(Searcher(IndexStore(served.index_root).load()).ids[7]))
    env = {**os.environ, **server_env(served, url, base)}
    said = []
    for mode in ("auto", "off"):
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "search", "--scene", query, "--k", "5"],
            cwd=Path(__file__).parents[2], env={**env, "GRN_BACKBONE_RERANK": mode},
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == 6 and "re-ranked" not in done.stdout  # + header
        said.append("re-ranked by the backbone's descriptors" in done.stderr)
    assert said == [True, False]


def upload(server: LiveServer, path: Path) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/search", files={"file": (path.name, io.BytesIO(path.read_bytes()))},
        data={"k": "10"}, timeout=60,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_auto_re_ranks_unseen_content_only() -> None:
    yes, no = np.ones(10, bool), np.zeros(10, bool)
    assert rerank.applies("auto", no) and rerank.applies("auto", np.arange(10) < 4)
    assert not rerank.applies("auto", np.arange(10) < 5) and not rerank.applies("auto", yes)
    assert not rerank.applies("auto", None)  # a version from before seen scenes were recorded
    assert rerank.applies("on", yes) and not rerank.applies("off", no)
    with pytest.raises(ValueError, match="re-ranking must be one of"):
        rerank.applies("sometimes", no)


def test_seen_content_is_not_re_ranked_by_default(head_served: tuple[Served, str, Path]) -> None:
    """The same index with every scene recorded as content the model trained on: `auto`
    leaves a search by a scene, and by a vector whose nearest scenes are seen, in GRN
    order; `on` still re-ranks them."""
    import dataclasses
    from types import SimpleNamespace

    from model.card import read_card

    served, url, _ = head_served
    loaded = IndexStore(served.index_root).load()
    everything = Searcher(dataclasses.replace(loaded, seen=np.load(loaded.path.parent / "ids.npy")))
    snapshot: Any = SimpleNamespace(
        card=read_card(served.model),
        searcher=everything,
        model_version=loaded.manifest.model_version,
        index_version=loaded.manifest.version,
    )
    catalog = Catalog(make_engine(url))
    query = int(everything.ids[7])
    descriptor = everything.descriptors([query])
    assert descriptor is not None
    for mode, expected in (("auto", False), ("on", True)):
        for by in (
            {"scene_id": query},
            {"vector": everything.vectors([query])[0], "descriptor": descriptor[0]},
        ):
            page = search_scenes(snapshot, catalog, SearchQuery(k=10), rerank=Rerank(mode), **by)
            assert page.reranked is expected, (mode, by.keys())


SCORE_TOLERANCE = 3e-3
"""How far an int8 version's blended scores may be from a float16 one's: 0.7 of a cosine
whose error is at most 4e-3 (both descriptors coded; bench/descriptor_quant.py)."""


def test_a_float16_version_typed_re_ranks_as_the_int8_one(
    head_served: tuple[Served, str, Path], ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """`grn reindex --descriptors float16` as typed keeps float16 descriptors, and searches
    re-ranked with them agree with the int8 version's (the default): each hit's blended score
    within SCORE_TOLERANCE, at each rank int8 puts a scene float16 scores at most twice that
    below float16's own scene of that rank, and most top 10s are the same. An unknown dtype
    is a usage error."""
    served, url, _ = head_served
    root = tmp_path / "index"
    typed = ("reindex", "--model", str(served.model), "--archive", str(ucm_root), "--labels",
             str(ucm_subset), "--index-root", str(root), "--factory", "Flat", "--device", "cpu",
             "--quiet")  # fmt: skip
    bad = grn(*typed, "--descriptors", "int4")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: --descriptors is one of int8, float16, not int4"
    done = grn(*typed, "--descriptors", "float16")
    assert done.returncode == 0, done.stderr
    catalog = Catalog(make_engine(url))
    card = read_card(served.model)

    halves = IndexStore(root).load()
    assert halves.descriptors is not None and halves.descriptors.dtype == np.float16
    ids = Searcher(halves).ids
    others = len(ids) - 1  # every other scene is re-ranked

    def hits(index_root: Path, query: int, k: int) -> dict[int, float]:
        loaded = IndexStore(index_root).load()
        snapshot: Any = SimpleNamespace(
            card=card, searcher=Searcher(loaded), model_version=loaded.manifest.model_version,
            index_version=loaded.manifest.version,
        )  # fmt: skip
        page = search_scenes(
            snapshot, catalog, SearchQuery(k=k), scene_id=query,
            rerank=Rerank("on", pool=others),
        )  # fmt: skip
        assert page.reranked
        return {h.scene.id: h.score for h in page.hits}

    same = 0
    for query in ids[::9].tolist():
        every = hits(root, query, others)  # float16: every scene's blended score
        best = sorted(every.values(), reverse=True)[:10]
        codes = hits(served.index_root, query, 10)
        assert all(abs(every[i] - score) <= SCORE_TOLERANCE for i, score in codes.items())
        for rank, scene in enumerate(codes):
            assert every[scene] >= best[rank] - 2 * SCORE_TOLERANCE, (query, rank)
        same += list(codes) == sorted(every, key=every.__getitem__, reverse=True)[:10]
    assert same >= len(ids[::9]) * 2 // 3  # most top 10s are float16's exactly (12 of 14)
