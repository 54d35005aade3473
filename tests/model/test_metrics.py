from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from model.metrics import (
    classification_metrics,
    knn_label_scores,
    ranking_metrics,
    retrieval_metrics,
    tune_thresholds,
)


def _case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    query = np.array([[1.0, 0.0]])
    query_labels = np.array([[1, 0, 0]])
    # ranked by similarity: b (1.0), a (0.8), c (0.0)
    archive = np.array([[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]])  # a, b, c
    archive_labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    return query, query_labels, archive, archive_labels


def test_ranking_metrics_score_a_given_order() -> None:
    _, query_labels, _, archive_labels = _case()
    # a re-ranking that puts a and c (both relevant) before b
    m = ranking_metrics(np.array([[0, 2, 1]]), query_labels, archive_labels, ks=(1, 2, 3))
    assert m["map"] == pytest.approx(1.0)
    assert m["p_at_k"] == pytest.approx({"1": 1.0, "2": 1.0, "3": 2 / 3})
    # the similarity order itself gives retrieval_metrics' figures
    assert ranking_metrics(np.array([[1, 0, 2]]), query_labels, archive_labels, ks=(1, 2, 3)) == (
        retrieval_metrics(*_case(), ks=(1, 2, 3))
    )


def test_retrieval_metrics_by_hand() -> None:
    m = retrieval_metrics(*_case(), ks=(1, 2, 3))
    # relevance down the ranking: b no, a yes, c yes
    assert m["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["p_at_k"] == pytest.approx({"1": 0.0, "2": 0.5, "3": 2 / 3})
    assert m["map_at_k"] == pytest.approx({"1": 0.0, "2": 0.5, "3": (1 / 2 + 2 / 3) / 2})
    assert m["acg_at_k"] == pytest.approx({"1": 0.0, "2": 0.5, "3": 2 / 3})
    d3 = 1 / math.log2(3)
    assert m["ndcg_at_k"]["2"] == pytest.approx(d3 / (1 + d3))
    assert m["ndcg_at_k"]["3"] == pytest.approx((d3 + 1 / math.log2(4)) / (1 + d3))


def test_perfect_ranking_scores_one() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (30, 5))
    labels[:, 0] = 1  # everything relevant to everything
    emb = rng.normal(size=(30, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    m = retrieval_metrics(emb[:5], labels[:5], emb[5:], labels[5:], ks=(5,))
    assert m["map"] == pytest.approx(1.0) and m["p_at_k"]["5"] == pytest.approx(1.0)


def test_knn_scores_are_distance_weighted() -> None:
    query, _, archive, archive_labels = _case()
    scores = knn_label_scores(query, archive, archive_labels, k=2, temperature=0.05)
    # neighbours b (sim 1.0) and a (sim 0.8); only a has label 0
    assert scores[0, 0] == pytest.approx(1 / (1 + math.exp(4)))
    assert scores[0, 1] == pytest.approx(math.exp(4) / (1 + math.exp(4)))
    assert scores[0, 2] == 0.0


def test_knn_can_leave_self_out() -> None:
    emb = np.eye(3)
    labels = np.array([[1, 0], [0, 1], [0, 1]])
    scores = knn_label_scores(emb, emb, labels, k=1, exclude_self=True)
    assert scores.shape == (3, 2)
    assert not np.allclose(scores, labels)  # without leave-one-out each scene finds itself


def test_classification_metrics_agree_with_sklearn() -> None:
    rng = np.random.default_rng(3)
    truth = (rng.random((200, 7)) < 0.3).astype(int)
    truth[:, 6] = 0  # a label that never occurs
    probabilities = np.clip(truth * 0.6 + rng.random((200, 7)) * 0.5, 0, 1)
    probabilities[:5] = 0.0  # some scenes with no predicted labels
    truth[:2] = 0  # and a couple with no true labels
    ours = classification_metrics(probabilities, truth)
    predicted = (probabilities >= 0.5).astype(int)
    assert ours["sample_f1"] == pytest.approx(
        skm.f1_score(truth, predicted, average="samples", zero_division=1.0)
    )
    assert ours["micro_f1"] == pytest.approx(skm.f1_score(truth, predicted, average="micro"))
    assert ours["macro_f1"] == pytest.approx(
        skm.f1_score(truth, predicted, average="macro", zero_division=0.0)
    )
    assert ours["hamming_loss"] == pytest.approx(skm.hamming_loss(truth, predicted))


def test_tuned_thresholds_never_hurt_on_the_data_they_were_tuned_on() -> None:
    rng = np.random.default_rng(5)
    truth = (rng.random((300, 4)) < 0.4).astype(int)
    probabilities = np.clip(truth * 0.3 + rng.random((300, 4)) * 0.6, 0, 1)
    thresholds = tune_thresholds(probabilities, truth)
    assert thresholds.shape == (4,) and ((thresholds >= 0.05) & (thresholds <= 0.95)).all()
    assert (
        classification_metrics(probabilities, truth, thresholds)["sample_f1"]
        >= classification_metrics(probabilities, truth, 0.5)["sample_f1"]
    )


def test_a_label_moves_off_the_shared_threshold_only_for_a_clear_gain() -> None:
    # label 0 needs a threshold above 0.4, label 1 one at or below 0.25: no shared one fits
    truth = np.array([[1, 1], [1, 0], [0, 1], [0, 0]] * 25)
    probabilities = np.array([[0.9, 0.25], [0.8, 0.1], [0.4, 0.28], [0.3, 0.05]] * 25)
    thresholds = tune_thresholds(probabilities, truth)
    assert 0.4 < thresholds[0] <= 0.8 and 0.1 < thresholds[1] <= 0.25
    assert classification_metrics(probabilities, truth, thresholds)["sample_f1"] == 1.0
    shared = tune_thresholds(probabilities, truth, min_gain=1.0)
    assert shared[0] == shared[1]


def test_a_re_ranking_reorders_only_its_pool() -> None:
    from model.metrics import knn_from_similarities, knn_label_scores
    from model.rerank import blended_similarities, reranked

    rng = np.random.default_rng(3)
    grn, descriptors = rng.normal(size=(5, 40)), rng.normal(size=(5, 40))
    plain = np.argsort(-grn, axis=1, kind="stable")
    np.testing.assert_array_equal(reranked(grn, descriptors, pool=10, weight=1.0), plain)
    by_descriptors = np.argsort(-descriptors, axis=1, kind="stable")
    np.testing.assert_array_equal(reranked(grn, descriptors, 40, 0.0), by_descriptors)
    order = reranked(grn, descriptors, pool=10, weight=0.3)
    np.testing.assert_array_equal(order[:, 10:], plain[:, 10:])  # beyond the pool: GRN order
    for row in range(5):
        assert set(order[row, :10]) == set(plain[row, :10])
        blend = 0.3 * grn[row] + 0.7 * descriptors[row]
        assert np.all(np.diff(blend[order[row, :10]]) <= 0)
    sims = blended_similarities(grn, descriptors, pool=10, weight=0.3)
    assert np.isinf(sims).sum() == 5 * 30
    # the k-NN vote over similarities is the embeddings' vote when they are the cosines
    queries, archive = rng.normal(size=(4, 8)), rng.normal(size=(30, 8))
    labels = rng.integers(0, 2, size=(30, 3))
    voted = knn_from_similarities(queries @ archive.T, labels)
    np.testing.assert_allclose(voted, knn_label_scores(queries, archive, labels))
