"""Searches restricted by an `IdMask` (a mask over the catalog's sorted ids) read the index's
vectors in place (`index.masked_scan`): they must answer what brute force over the allowed
scenes answers (exact) or what FAISS's own selector search answers (probed lists), on
memory-mapped and in-memory indexes, Flat and inverted files, with the catalog holding
scenes the index lacks and lacking scenes the index holds, and never return fewer hits
than the allowed scenes allow."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from index import masked_scan
from index.filters import SceneFilter, SceneMeta
from index.id_mask import IdMask
from index.masked_scan import MaskedScan
from index.results import exact_search
from index.stores import faiss as faiss_store
from index.stores.faiss import Searcher
from index.stores.faiss_versions import IndexStore
from index.synthetic import clustered_unit_vectors
from index.vectors import SearchSettings, build_index

N, DIM, K = 3000, 24, 10


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    vectors = clustered_unit_vectors(N, DIM, centres=30, spread=0.3, seed=11)
    ids = np.random.default_rng(11).choice(2**62, size=N, replace=False).astype(np.int64)
    return ids, vectors


def served(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], factory: str, mapped: bool
) -> Searcher:
    ids, vectors = data
    versions = IndexStore(tmp_path / factory.replace(",", "_") / str(mapped))
    built = versions.write_version(
        build_index(factory, ids, vectors), model_version="m", factory=factory
    )
    return Searcher(versions.load(built.version, mapped=mapped), SearchSettings(nprobe=3))


def catalog(ids: np.ndarray) -> np.ndarray:
    """The catalog's sorted ids: the index's less every 9th, plus 50 scenes it lacks."""
    extra = np.random.default_rng(2).choice(2**62, size=50, replace=False).astype(np.int64)
    return np.sort(np.concatenate([ids[np.arange(len(ids)) % 9 != 0], extra]))


def brute_force(
    data: tuple[np.ndarray, np.ndarray], allowed: IdMask, query: np.ndarray, k: int
) -> tuple[list[int], np.ndarray]:
    ids, vectors = data
    rows = np.flatnonzero(allowed.contains(ids))
    truth = exact_search(vectors[rows], ids[rows], query[None], k)
    return truth.ids[0].tolist(), truth.scores[0]


def test_an_id_mask_is_an_allow_list() -> None:
    universe = np.asarray([3, 5, 8, 13, 21], dtype=np.int64)
    allowed = IdMask(universe, np.asarray([True, False, True, True, False]))
    assert len(allowed) == 3 and list(allowed) == [3, 8, 13]
    assert np.asarray(allowed, dtype=np.int64).tolist() == [3, 8, 13]
    assert allowed.contains([8, 5, 4, 13, 99]).tolist() == [True, False, False, True, False]
    fewer = allowed.excluding([8, 99])
    assert list(fewer) == [3, 13] and list(allowed) == [3, 8, 13]  # the original untouched
    assert allowed.excluding([5, 99]) is allowed  # nothing allowed removed: no copy
    assert SceneFilter(allow_ids=allowed).passes(8, SceneMeta())
    assert not SceneFilter(allow_ids=allowed).passes(5, SceneMeta())
    with pytest.raises(ValueError, match="one boolean per id"):
        IdMask(universe, np.ones(4, bool))


@pytest.mark.parametrize("mapped", [True, False])
@pytest.mark.parametrize("factory", ["IVF16,Flat", "Flat"])
def test_the_scan_reads_the_index_vectors(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], factory: str, mapped: bool
) -> None:
    searcher = served(tmp_path, data, factory, mapped)
    scan = searcher.scan
    assert scan is not None
    ids, vectors = data
    assert np.array_equal(np.sort(scan.entry_ids), np.sort(ids))
    entries = np.random.default_rng(0).choice(len(ids), 200, replace=False)
    rows = np.searchsorted(np.sort(ids), scan.entry_ids[entries])
    expected = vectors[np.argsort(ids)][rows]
    np.testing.assert_array_equal(scan.vectors(entries), expected)


def test_compressed_indexes_have_no_scan(data: tuple[np.ndarray, np.ndarray]) -> None:
    ids, vectors = data
    assert MaskedScan.of(build_index("IVF16,SQ8", ids, vectors)) is None
    assert MaskedScan.of(build_index("HNSW8", ids, vectors)) is None


@pytest.mark.parametrize("mapped", [True, False])
@pytest.mark.parametrize("factory", ["IVF16,Flat", "Flat"])
@pytest.mark.parametrize("share", [0.002, 0.01, 0.1, 0.5, 1.0])
def test_a_masked_search_is_brute_force_over_the_allowed_scenes(
    tmp_path: Path,
    data: tuple[np.ndarray, np.ndarray],
    factory: str,
    mapped: bool,
    share: float,
) -> None:
    """Up to EXACT_ALLOWED allowed scenes (all of these): exactly brute force's ids and
    scores, excluded ids left out, and min(k, allowed scenes the index holds) hits."""
    searcher = served(tmp_path, data, factory, mapped)
    ids, vectors = data
    universe = catalog(ids)
    rng = np.random.default_rng(int(share * 1000))
    allowed = IdMask(universe, rng.random(len(universe)) < share)
    for row in rng.choice(N, 5, replace=False):
        query = vectors[row]
        where = SceneFilter(allow_ids=allowed, exclude_ids=[int(ids[row])])
        found = searcher.search(query[None], K, where)
        truth_ids, truth_scores = brute_force(data, allowed.excluding([ids[row]]), query, K)
        assert found.ids[0][: len(truth_ids)].tolist() == truth_ids
        np.testing.assert_allclose(found.scores[0][: len(truth_ids)], truth_scores, rtol=1e-5)
        assert (found.ids[0][len(truth_ids) :] == -1).all()  # only where none is left
        assert int(ids[row]) not in found.ids[0]


@pytest.mark.parametrize("share", [0.01, 0.5, 1.0])
def test_past_the_exact_size_the_probed_lists_answer_as_faiss_does(
    tmp_path: Path,
    data: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    share: float,
) -> None:
    """Many allowed scenes: the lists FAISS probes, scored exactly, are FAISS's own
    selector search (same ids, same scores); where those lists hold fewer than k allowed
    scenes, FAISS's search over WIDEN times as many lists (and so on, up to every list:
    brute force's page) answers, and the page is full."""
    monkeypatch.setattr(faiss_store, "EXACT_ALLOWED", 20)
    searcher = served(tmp_path, data, "IVF16,Flat", True)
    ids, vectors = data
    universe = catalog(ids)
    rng = np.random.default_rng(7)
    allowed = IdMask(universe, rng.random(len(universe)) < share)
    held = allowed.ids[np.isin(allowed.ids, ids)]
    selector = faiss.IDSelectorBatch(held)
    widened = 0
    for row in rng.choice(N, 20, replace=False):
        query = vectors[row : row + 1]
        found = searcher.search(query, K, SceneFilter(allow_ids=allowed))
        nprobe = 3
        while True:
            params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
            scores, faiss_ids = searcher.index.search(query, K, params=params)
            if (faiss_ids[0] >= 0).all() or nprobe >= 16:
                break
            nprobe *= masked_scan.WIDEN
        widened += nprobe > 3
        assert set(found.ids[0].tolist()) == set(faiss_ids[0].tolist())
        np.testing.assert_allclose(np.sort(found.scores[0]), np.sort(scores[0]), rtol=1e-5)
        if nprobe >= 16:  # every list probed: brute force's page
            assert found.ids[0].tolist() == brute_force(data, allowed, query[0], K)[0]
        assert (found.ids[0] >= 0).all()
    assert share > 0.1 or widened  # the 1% mask leaves the probed lists short


def test_a_mask_over_a_compressed_index_is_an_allow_list(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """No scan (SQ8 codes): the mask is listed and FAISS's selectors search it."""
    ids, vectors = data
    versions = IndexStore(tmp_path)
    full = build_index("IVF16,SQ8", ids, vectors)
    built = versions.write_version(full, model_version="m", factory="IVF16,SQ8")
    searcher = Searcher(versions.load(built.version), SearchSettings(nprobe=16))
    assert searcher.scan is None
    allowed = IdMask(catalog(ids), np.random.default_rng(1).random(len(catalog(ids))) < 0.3)
    found = searcher.search(vectors[:1], K, SceneFilter(allow_ids=allowed))
    assert (found.ids[0] >= 0).all() and allowed.contains(found.ids[0]).all()
