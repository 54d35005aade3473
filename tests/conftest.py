"""Shared fixtures: the real UCM archive from ../shared and small subsets of it."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from model.train_config import TrainConfig, config_for_mode

if TYPE_CHECKING:
    from bench.milvus_server import MilvusServer

REPO = Path(__file__).resolve().parents[1]
UCM = Path(
    os.environ.get("GRN_UCM_ARCHIVE", REPO.parent / "shared" / "datasets" / "ucm-multilabel")
)


@pytest.fixture(scope="session")
def ucm_root() -> Path:
    if not (UCM / "labels.csv").is_file():
        pytest.skip(f"the UCM archive is not at {UCM} (set GRN_UCM_ARCHIVE)")
    return UCM


def write_subset(root: Path, target: Path, per_split: dict[str, int]) -> Path:
    """A labels file listing the first N scenes of each scene folder and split."""
    with (root / "labels.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    counts: dict[tuple[str, str], int] = {}
    kept = [rows[0]]
    for row in rows[1:]:
        key = (row[1], row[2])
        counts[key] = counts.get(key, 0) + 1
        if counts[key] <= per_split.get(row[2], 0):
            kept.append(row)
    with target.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)
    return target


@pytest.fixture(scope="session")
def ucm_wide_val(ucm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """189 UCM scenes: 4 train, 4 val and 1 test from each of the 21 scene folders."""
    target = tmp_path_factory.mktemp("ucm-wide-val") / "labels.csv"
    return write_subset(ucm_root, target, {"train": 4, "val": 4, "test": 1})


@pytest.fixture(scope="session")
def ucm_subset(ucm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """126 UCM scenes: 4 train, 1 val and 1 test from each of the 21 scene folders."""
    target = tmp_path_factory.mktemp("subset") / "labels.csv"
    return write_subset(ucm_root, target, {"train": 4, "val": 1, "test": 1})


@pytest.fixture(scope="session")
def ucm_unlabelled(ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 126 scenes of `ucm_subset` with no label columns: header image,scene,split."""
    with ucm_subset.open(newline="") as handle:
        rows = [row[:3] for row in csv.reader(handle)]
    target = tmp_path_factory.mktemp("unlabelled") / "labels.csv"
    with target.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return target


PARTLY_LABELLED = {"train": 4, "val": 3}
"""In `ucm_partly_labelled`, every Nth scene of these splits (the 1st, N+1th, ...) is not
labelled: 21 of the 84 train scenes and 7 of the 21 val scenes."""


@pytest.fixture(scope="session")
def ucm_partly_labelled(ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ucm_subset` with the label cells of some scenes left empty (PARTLY_LABELLED)."""
    with ucm_subset.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    seen: dict[str, int] = {}
    for row in rows:
        every = PARTLY_LABELLED.get(row[2])
        count = seen.get(row[2], 0)
        seen[row[2]] = count + 1
        if every and count % every == 0:
            row[3:] = [""] * (len(row) - 3)
    target = tmp_path_factory.mktemp("partly") / "labels.csv"
    with target.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return target


@pytest.fixture(scope="session")
def tiny_config(ucm_root: Path, ucm_subset: Path) -> Callable[..., TrainConfig]:
    """Settings for a seconds-long full-mode run of the tiny backbone on the UCM subset;
    keyword arguments override them."""

    def make(out: Path, **overrides: Any) -> TrainConfig:
        settings: dict[str, Any] = {
            "labels_csv": str(ucm_subset),
            "backbone": "tiny",
            "pretrained": False,
            "epochs": 1,
            "batch_size": 32,
            "input_size": 32,
            "progress": False,
        }
        return config_for_mode("full", str(ucm_root), str(out), **{**settings, **overrides})

    return make


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """A real Milvus standalone server (PyPI `milvus`), reached at `.uri` on 127.0.0.1 only,
    shared by the session's tests (each uses collections of its own); stopped at the end."""
    pytest.importorskip("milvus")
    from bench.milvus_server import MilvusServer

    with MilvusServer(tmp_path_factory.mktemp("milvus-server")) as server:
        yield server
