from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image

from model.archive import ArchiveError, BrokenFile, iter_images, load_archive, scene_id
from model.archive_columns import SceneColumns
from model.imageio import InvalidImageError


def _make_archive(root: Path, rows: list[str], header: str = "image,scene,split,a,b") -> Path:
    (root / "images" / "s").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 50, np.uint8)).save(
            root / "images" / "s" / f"x{i}.png"
        )
    (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def test_ucm_archive_has_the_papers_split(ucm_root: Path) -> None:
    archive = load_archive(ucm_root)
    assert len(archive) == 2100 and len(archive.label_names) == 17
    assert archive.label_names[0] == "airplane" and archive.label_names[-1] == "water"
    assert [len(archive.indices(s)) for s in ("train", "val", "test")] == [1470, 210, 420]
    labels = archive.label_matrix()
    assert labels.shape == (2100, 17) and labels.sum(axis=1).min() >= 1
    assert all(s.path.suffix == ".jpg" for s in archive.scenes)  # tif-samples never shadow


def test_label_names_come_from_the_header(tmp_path: Path) -> None:
    archive = load_archive(
        _make_archive(
            tmp_path, ["x0,s,train,1,0", "x1,s,val,0,1"], header="image,scene,split,river,forest"
        )
    )
    assert archive.label_names == ["river", "forest"]
    assert archive.label_matrix().tolist() == [[1, 0], [0, 1]]


def test_an_archive_without_label_columns_loads_with_no_labelled_scene(tmp_path: Path) -> None:
    archive = load_archive(
        _make_archive(tmp_path, ["x0,s,train", "x1,s,val", "x2,s,test"], header="image,scene,split")
    )
    assert archive.label_names == [] and len(archive) == 3
    assert [s.labelled for s in archive.scenes] == [False, False, False]
    assert archive.indices("train") == [0] and archive.indices(labelled_only=True) == []
    assert archive.label_matrix([]).shape == (0, 0)
    with pytest.raises(ArchiveError, match=r"3 of the 3 scenes asked for are not labelled"):
        archive.label_matrix()


def test_empty_label_cells_mean_not_labelled_and_zeros_mean_none_apply(tmp_path: Path) -> None:
    archive = load_archive(
        _make_archive(tmp_path, ["x0,s,train,1,0", "x1,s,train,,", "x2,s,train,0,0"])
    )
    assert [s.labelled for s in archive.scenes] == [True, False, True]
    assert archive.scenes[1].labels == () and archive.scenes[2].labels == (0, 0)
    assert archive.indices("train") == [0, 1, 2]
    assert archive.indices("train", labelled_only=True) == [0, 2]
    assert archive.indices("val", labelled_only=True) == []
    assert archive.label_matrix([0, 2]).tolist() == [[1, 0], [0, 0]]
    # unknown labels are never handed out as zeros
    with pytest.raises(ArchiveError, match=r"1 of the 3 scenes asked for is not labelled.*'x1'"):
        archive.label_matrix()


def test_a_half_filled_label_row_is_refused_with_file_line_and_columns(tmp_path: Path) -> None:
    root = _make_archive(
        tmp_path, ["x0,s,train,1,0,1", "x1,s,train,,1,"], header="image,scene,split,a,b,c"
    )
    with pytest.raises(ArchiveError) as caught:
        load_archive(root)
    assert str(caught.value).startswith(
        f"{root / 'labels.csv'}:3: the label cells of a, c are empty while the others are filled"
    )


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (["x0,s,train,1,0"], "name,scene,split,a,b", "header"),
        (["x0,s,train,1"], "image,scene,split,a,b", "expected 5 fields"),
        (["x0,s,dev,1,0"], "image,scene,split,a,b", "split"),
        (["x0,s,train,2,0"], "image,scene,split,a,b", "0 or 1"),
        (["x9,s,train,1,0"], "image,scene,split,a,b", "no image with stem 'x9'"),
        (["x0,s,train,1,0", "x0,s,val,1,0"], "image,scene,split,a,b", "listed twice"),
        (["x0,s,train,1,"], "image,scene,split,a,", "has no name"),
        (["x0,s,train"], "image,scene", "header"),
    ],
)
def test_malformed_labels_are_rejected(
    tmp_path: Path, rows: list[str], header: str, message: str
) -> None:
    with pytest.raises(ArchiveError, match=message):
        load_archive(_make_archive(tmp_path, rows, header))


def test_duplicate_stems_are_rejected(tmp_path: Path) -> None:
    root = _make_archive(tmp_path, ["x0,s,train,1,0"])
    (root / "images" / "t").mkdir()
    shutil.copy(root / "images" / "s" / "x0.png", root / "images" / "t" / "x0.jpg")
    with pytest.raises(ArchiveError, match="share the stem"):
        load_archive(root)


def test_broken_files_raise_or_are_reported(tmp_path: Path) -> None:
    root = _make_archive(tmp_path, ["x0,s,train,1,0", "x1,s,train,0,1", "x2,s,val,1,1"])
    (root / "images" / "s" / "x1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    archive = load_archive(root)
    with pytest.raises(InvalidImageError, match=r"x1\.png.*--skip-broken"):
        list(iter_images(archive, archive.indices()))
    broken: list[BrokenFile] = []
    read = [i for i, _ in iter_images(archive, archive.indices(), skip_broken=True, broken=broken)]
    assert read == [0, 2]
    assert [b.name for b in broken] == ["x1"] and "x1.png" in broken[0].path


def test_parallel_decoding_keeps_order_and_reports_broken_files(
    tmp_path: Path, ucm_root: Path
) -> None:
    archive = load_archive(ucm_root)
    some = archive.indices("test")[:40]
    serial = list(iter_images(archive, some))
    parallel = list(iter_images(archive, some, workers=3))
    assert [i for i, _ in parallel] == some
    for (_, a), (_, b) in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)

    root = _make_archive(tmp_path, ["x0,s,train,1,0", "x1,s,train,0,1", "x2,s,val,1,1"])
    (root / "images" / "s" / "x1.png").write_bytes(b"broken")
    small = load_archive(root)
    broken: list[BrokenFile] = []
    read = [i for i, _ in iter_images(small, [0, 1, 2], skip_broken=True, broken=broken, workers=2)]
    assert read == [0, 2] and [b.name for b in broken] == ["x1"]
    with pytest.raises(InvalidImageError, match=r"x1\.png"):
        list(iter_images(small, [0, 1, 2], workers=2))


def test_the_listing_is_held_as_columns_and_gives_each_row_back(tmp_path: Path) -> None:
    """`load_archive` keeps columns, not an entry a scene (model.archive_columns): each scene
    made from them is the row as written, footprint, CRS, window and date included, and the
    columns' own readers agree with the entries."""
    polygon = [[[10.1, 50.1], [10.2, 50.1], [10.2, 50.2], [10.1, 50.2], [10.1, 50.1]]]
    footprint = json.dumps({"type": "Polygon", "coordinates": polygon}).replace('"', '""')
    rows = [
        f'x0,s,train,"{footprint}",,,EPSG:32632,r.tif,"0,0,8,8",2021-05-03T10:00:00+02:00,1,0',
        "x1,t,val,,5.5,45.25,,,,2020-01-01,,",
        "x2,s,test,,,,,,,,0,1",
    ]
    root = _make_archive(
        tmp_path, rows, header="image,scene,split,footprint,lon,lat,crs,source,window,acquired,a,b"
    )
    archive = load_archive(root)
    assert isinstance(archive.scenes, SceneColumns)
    first, second, third = archive.scenes
    assert (first.name, first.folder, first.split, first.labels) == ("x0", "s", "train", (1, 0))
    assert first.path == root / "images" / "s" / "x0.png"
    assert first.geo is not None and first.geo.footprint.equals(shapely.Polygon(polygon[0]))
    assert (first.geo.crs, first.geo.source, first.geo.window) == (
        "EPSG:32632",
        "r.tif",
        (0, 0, 8, 8),
    )
    assert first.acquired == datetime(2021, 5, 3, 8, tzinfo=UTC)
    assert second.geo is not None and second.geo.footprint.equals(shapely.Point(5.5, 45.25))
    assert (second.geo.crs, second.geo.window, second.labels) == (None, None, ())
    assert second.acquired == datetime(2020, 1, 1, tzinfo=UTC)
    assert third.geo is None and third.acquired is None and third.labels == (0, 1)
    assert archive.scenes[-1] == third and archive.scenes[1:] == [second, third]
    assert archive.names_of() == ["x0", "x1", "x2"] and archive.folders_of([2, 1]) == ["s", "t"]
    assert archive.ids_of([1]).tolist() == [scene_id("x1")] and archive.index_of("x2") == 2
    assert archive.indices(labelled_only=True) == [0, 2]
    assert archive.label_matrix([2, 0]).tolist() == [[0, 1], [1, 0]]
