"""Archives: a folder of scene images plus a `labels.csv` describing them.

`labels.csv` has the columns `image` (file stem), `scene` (a grouping, usually the folder),
`split` (`train`, `val` or `test`), then one 0/1 column per label; the label names come from
the header. Images are found by stem under the archive's `images/` folder when it has one,
else anywhere under the archive folder; a stem must name one file.
"""

from __future__ import annotations

import csv
import hashlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.imageio import IMAGE_SUFFIXES, InvalidImageError, ReadOptions, read_image

FIXED_COLUMNS = ("image", "scene", "split")
SPLITS = ("train", "val", "test")


class ArchiveError(ValueError):
    """An archive folder or its labels file is malformed."""


def scene_id(name: str) -> int:
    """A stable 63-bit id for an image stem: the same scene keeps its id across reindexes
    and archive edits, with no side table. SQL's primary key and the vector stores' ids."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") & (2**63 - 1)


@dataclass(frozen=True)
class ArchiveEntry:
    """One scene of an archive: a row of labels.csv and its image file."""

    name: str
    """The image stem."""
    folder: str
    """The `scene` column: the scene folder (class) it belongs to."""
    split: str
    labels: tuple[int, ...]
    path: Path


@dataclass
class Archive:
    root: Path
    label_names: list[str]
    scenes: list[ArchiveEntry]
    _by_name: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {s.name: i for i, s in enumerate(self.scenes)}

    def __len__(self) -> int:
        return len(self.scenes)

    def indices(self, split: str | None = None) -> list[int]:
        """Positions of the scenes of one split (all scenes when split is None or 'all')."""
        if split in (None, "all"):
            return list(range(len(self.scenes)))
        if split not in SPLITS:
            raise ArchiveError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or all")
        return [i for i, s in enumerate(self.scenes) if s.split == split]

    def index_of(self, name: str) -> int:
        return self._by_name[name]

    def label_matrix(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """An (n, labels) float32 0/1 matrix for the given scenes (all by default)."""
        rows = self.scenes if indices is None else [self.scenes[i] for i in indices]
        return np.asarray([s.labels for s in rows], dtype=np.float32).reshape(
            len(rows), len(self.label_names)
        )


def _find_images(root: Path) -> dict[str, Path]:
    """Image files by stem: under `root/images/` when that folder exists (so samples or
    derived files elsewhere in the archive never shadow the scenes), else under `root`."""
    found: dict[str, Path] = {}
    search = root / "images" if (root / "images").is_dir() else root
    for path in sorted(search.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in found:
            raise ArchiveError(
                f"two images share the stem {path.stem!r}: {found[path.stem]} and {path}; "
                "image stems must be unique within an archive"
            )
        found[path.stem] = path
    return found


def load_archive(root: str | Path, labels_csv: str | Path | None = None) -> Archive:
    """Read an archive folder and its labels file (default `ROOT/labels.csv`)."""
    root = Path(root)
    if not root.is_dir():
        raise ArchiveError(f"archive folder {root} does not exist")
    labels_path = Path(labels_csv) if labels_csv else root / "labels.csv"
    if not labels_path.is_file():
        raise ArchiveError(f"labels file {labels_path} does not exist")
    with labels_path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header[:3]) != FIXED_COLUMNS or len(header) < 4:
            raise ArchiveError(
                f"{labels_path}: the header must be image,scene,split followed by one column "
                f"per label; found {header}"
            )
        label_names = header[3:]
        if len(set(label_names)) != len(label_names):
            raise ArchiveError(f"{labels_path}: label names repeat in the header")
        rows = list(reader)
    images = _find_images(root)
    scenes: list[ArchiveEntry] = []
    seen: set[str] = set()
    for line_no, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ArchiveError(
                f"{labels_path}:{line_no}: expected {len(header)} fields, got {len(row)}"
            )
        name, scene, split = row[0], row[1], row[2]
        if name in seen:
            raise ArchiveError(f"{labels_path}:{line_no}: image {name!r} is listed twice")
        seen.add(name)
        if split not in SPLITS:
            raise ArchiveError(f"{labels_path}:{line_no}: split {split!r} is not one of {SPLITS}")
        try:
            labels = tuple(int(v) for v in row[3:])
        except ValueError as exc:
            raise ArchiveError(f"{labels_path}:{line_no}: label values must be 0 or 1") from exc
        if any(v not in (0, 1) for v in labels):
            raise ArchiveError(f"{labels_path}:{line_no}: label values must be 0 or 1")
        path = images.get(name)
        if path is None:
            raise ArchiveError(f"{labels_path}:{line_no}: no image with stem {name!r} under {root}")
        scenes.append(ArchiveEntry(name, scene, split, labels, path))
    if not scenes:
        raise ArchiveError(f"{labels_path}: lists no images")
    return Archive(root=root, label_names=label_names, scenes=scenes)


@dataclass
class BrokenFile:
    name: str
    path: str
    error: str


def iter_images(
    archive: Archive,
    indices: Sequence[int],
    *,
    skip_broken: bool = False,
    broken: list[BrokenFile] | None = None,
    options: ReadOptions | None = None,
    workers: int = 1,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, RGB array) for each scene, in order; broken files raise or, when skipped,
    are appended to `broken`. With `workers` > 1, files are decoded by that many threads
    (decoders release the GIL), a bounded window ahead of the consumer."""

    def read(i: int) -> tuple[int, np.ndarray | None, InvalidImageError | None]:
        try:
            return i, read_image(archive.scenes[i].path, options), None
        except InvalidImageError as exc:
            return i, None, exc

    def results() -> Iterator[tuple[int, np.ndarray | None, InvalidImageError | None]]:
        if workers <= 1:
            yield from map(read, indices)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            window: deque[Future[tuple[int, np.ndarray | None, InvalidImageError | None]]] = deque()
            for i in indices:
                window.append(pool.submit(read, i))
                if len(window) >= 4 * workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()

    for i, image, error in results():
        if image is not None:
            yield i, image
            continue
        scene = archive.scenes[i]
        if not skip_broken:
            raise InvalidImageError(
                f"{error} (scene {scene.name!r}; pass --skip-broken to skip unreadable files)"
            ) from error
        if broken is not None:
            broken.append(BrokenFile(scene.name, str(scene.path), str(error)))
