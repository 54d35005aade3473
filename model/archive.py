"""Archives: a folder of scene images plus a `labels.csv` describing them.

`labels.csv` has the columns `image` (file stem), `scene` (a grouping, usually the folder),
`split` (`train`, `val` or `test`), then optionally where each scene lies (`model.geo`'s
columns: `footprint`, `lon`, `lat`, `crs`, `source`, `window`) and when it was taken
(`acquired`, ISO 8601: `model.times`), then one 0/1 column per
label, if any; the label names come from the header. A row whose label cells are all empty
is a scene that is not labelled (its labels are unknown), which differs from a row of zeros
(labelled, none of the labels apply); an archive with no label columns has no labelled
scenes. Images are found by stem under the archive's `images/` folder when it has one, else
anywhere under the archive folder; a stem must name one file.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from model.archive_columns import SPLITS, ArchiveEntry, ListingBuilder, SceneColumns
from model.geo import GEO_COLUMNS, GeoError, SceneGeo
from model.imageio import IMAGE_SUFFIXES, InvalidImageError, ReadOptions, read_image
from model.times import TimeError, parse_instant

FIXED_COLUMNS = ("image", "scene", "split")
ACQUIRED = "acquired"
OPTIONAL_COLUMNS = (*GEO_COLUMNS, ACQUIRED)
"""The columns that may follow image,scene,split, any subset in any order, before the
labels."""
LISTED = ""
"""`_find_images`' path of an image once its row is read (no path is empty)."""


class ArchiveError(ValueError):
    """An archive folder or its labels file is malformed."""


def scene_id(name: str) -> int:
    """A stable 63-bit id for an image stem: the same scene keeps its id across reindexes
    and archive edits, with no side table. SQL's primary key and the vector stores' ids."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") & (2**63 - 1)


@dataclass
class Archive:
    root: Path
    label_names: list[str]
    scenes: Sequence[ArchiveEntry]
    """A list of entries, or (`load_archive`) `SceneColumns`, which makes each when asked."""
    labels_path: Path | None = None
    """The labels file it was read from."""
    sources: tuple[Path, ...] = ()
    """Other folders its scenes came from (every import's root, for the scenes SQL holds),
    where vectors they carry are looked for (`index.given_vectors`)."""
    _by_name: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.scenes)

    def indices(self, split: str | None = None, *, labelled_only: bool = False) -> list[int]:
        """Positions of the scenes of one split (all scenes when split is None or 'all');
        with `labelled_only`, of its labelled scenes only (what training and evaluation
        may pass to `label_matrix`)."""
        every = split in (None, "all")
        if not every and split not in SPLITS:
            raise ArchiveError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or all")
        if every and not labelled_only:
            return list(range(len(self.scenes)))
        if isinstance(self.scenes, SceneColumns):
            return self.scenes.positions(None if every else split, labelled_only)
        return [
            i
            for i, s in enumerate(self.scenes)
            if (every or s.split == split) and (s.labelled or not labelled_only)
        ]

    def names_of(self, positions: Sequence[int] | None = None) -> list[str]:
        """The names of the scenes at `positions` (all by default), read from the columns
        when the archive has them: no entry is made."""
        if isinstance(self.scenes, SceneColumns):
            return self.scenes.names_of(positions)
        chosen = range(len(self.scenes)) if positions is None else positions
        return [self.scenes[i].name for i in chosen]

    def folders_of(self, positions: Sequence[int] | None = None) -> list[str]:
        """The folders of the scenes at `positions` (all by default), as `names_of`."""
        if isinstance(self.scenes, SceneColumns):
            return self.scenes.folders_of(positions)
        chosen = range(len(self.scenes)) if positions is None else positions
        return [self.scenes[i].folder for i in chosen]

    def ids_of(self, positions: Sequence[int] | None = None) -> np.ndarray:
        """The scene ids (`scene_id`, int64) of the scenes at `positions` (all by default)."""
        return np.asarray([scene_id(name) for name in self.names_of(positions)], dtype=np.int64)

    def names_digest(self, indices: Sequence[int]) -> str:
        """SHA-256 of the scenes' names, in order: names a set of scenes (training's memory
        bank rows) so a later run can tell whether it is the same set."""
        names = "\n".join(self.names_of(indices))
        return hashlib.sha256(names.encode()).hexdigest()

    def index_of(self, name: str) -> int:
        if self._by_name is None:  # made when first asked: a reindex of every scene never is
            self._by_name = {n: i for i, n in enumerate(self.names_of())}
        return self._by_name[name]

    def label_matrix(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """An (n, labels) float32 0/1 matrix for the given scenes (all by default). Refuses
        scenes that are not labelled rather than count their unknown labels as absent."""
        chosen = list(range(len(self.scenes)) if indices is None else indices)
        if isinstance(self.scenes, SceneColumns):
            labelled, matrix = self.scenes.labelled[chosen], self.scenes.labels[chosen]
        else:
            rows = [self.scenes[i] for i in chosen]
            labelled = np.asarray([s.labelled for s in rows], bool)
            matrix = np.asarray([s.labels for s in rows if s.labelled])
        if not labelled.all():
            unlabelled = np.flatnonzero(~labelled)
            raise ArchiveError(
                f"{self.labels_path or self.root}: {len(unlabelled)} of the {len(chosen)} scenes "
                f"asked for {'is' if len(unlabelled) == 1 else 'are'} not labelled (first: "
                f"{self.names_of([chosen[unlabelled[0]]])[0]!r}); their labels are "
                "unknown, so select labelled scenes with "
                "Archive.indices(split, labelled_only=True)"
            )
        return matrix.astype(np.float32).reshape(len(chosen), len(self.label_names))


def _find_images(root: Path) -> tuple[Path, dict[str, str]]:
    """The folder holding the images, and each image file's path relative to it by stem:
    under `root/images/` when that folder exists (so samples or derived files elsewhere in
    the archive never shadow the scenes), else under `root`. Walked in sorted order as
    `sorted(folder.rglob("*"))` would list them (a link to a folder is not followed), with
    names as strings: no `Path` a file."""
    search = root / "images" if (root / "images").is_dir() else root
    found: dict[str, str] = {}

    def walk(folder: str, prefix: str) -> None:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                walk(entry.path, f"{prefix}{entry.name}/")
            if not entry.name.lower().endswith(IMAGE_SUFFIXES):
                continue
            name = PurePosixPath(entry.name)
            if name.suffix.lower() not in IMAGE_SUFFIXES or not entry.is_file():
                continue
            if name.stem in found:
                raise ArchiveError(
                    f"two images share the stem {name.stem!r}: {search / found[name.stem]} and "
                    f"{search / (prefix + entry.name)}; image stems must be unique within an "
                    "archive"
                )
            found[name.stem] = prefix + entry.name

    walk(str(search), "")
    return search, found


def as_archive(source: str | Path | Archive, labels_csv: str | Path | None = None) -> Archive:
    """An archive given as itself (the scenes SQL holds, `service.storage.catalog_archive`)
    or as a folder with its labels file."""
    return source if isinstance(source, Archive) else load_archive(source, labels_csv)


def load_archive(root: str | Path, labels_csv: str | Path | None = None) -> Archive:
    """Read an archive folder and its labels file (default `ROOT/labels.csv`), row by row
    into columns (`model.archive_columns`): its scenes are `SceneColumns`."""
    root = Path(root)
    if not root.is_dir():
        raise ArchiveError(f"archive folder {root} does not exist")
    labels_path = Path(labels_csv) if labels_csv else root / "labels.csv"
    if not labels_path.is_file():
        raise ArchiveError(f"labels file {labels_path} does not exist")
    with labels_path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header[:3]) != FIXED_COLUMNS:
            raise ArchiveError(
                f"{labels_path}: the header must be image,scene,split, optionally followed by "
                f"columns of {', '.join(OPTIONAL_COLUMNS)} and one column per label; found "
                f"{header}"
            )
        optional = _optional_columns(header)
        label_names = header[3 + len(optional) :]
        if len(set(label_names)) != len(label_names):
            raise ArchiveError(f"{labels_path}: label names repeat in the header")
        if any(not name.strip() for name in label_names):
            raise ArchiveError(
                f"{labels_path}: a label column has no name in the header (a trailing comma?)"
            )
        search, images = _find_images(root)
        scenes = ListingBuilder(search, len(label_names), optional)
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ArchiveError(
                    f"{labels_path}:{line_no}: expected {len(header)} fields, got {len(row)}"
                )
            name, scene, split = row[0], row[1], row[2]
            if images.get(name) == LISTED:
                raise ArchiveError(f"{labels_path}:{line_no}: image {name!r} is listed twice")
            if split not in SPLITS:
                raise ArchiveError(
                    f"{labels_path}:{line_no}: split {split!r} is not one of {SPLITS}"
                )
            where = f"{labels_path}:{line_no}"
            labels = _row_labels(row[3 + len(optional) :], label_names, where)
            path = images.get(name)
            if path is None:
                raise ArchiveError(f"{where}: no image with stem {name!r} under {root}")
            cells = dict(zip(optional, row[3:], strict=False))
            try:
                geo = SceneGeo.from_cells(cells, where)
                text = cells.get(ACQUIRED, "")
                acquired = parse_instant(text) if text.strip() else None
            except TimeError as exc:
                raise ArchiveError(f"{where}: acquired: {exc}") from exc
            except GeoError as exc:
                raise ArchiveError(str(exc)) from exc
            scenes.add(name, scene, split, labels, path, geo, acquired)
            images[name] = LISTED  # no set of the names seen: the dict is there already
    if not len(scenes.names):
        raise ArchiveError(f"{labels_path}: lists no images")
    return Archive(
        root=root, label_names=label_names, scenes=scenes.columns(), labels_path=labels_path
    )


def _optional_columns(header: Sequence[str]) -> list[str]:
    """The optional columns that follow image,scene,split (`OPTIONAL_COLUMNS`, any subset,
    in any order)."""
    columns: list[str] = []
    for name in header[3:]:
        if name not in OPTIONAL_COLUMNS:
            break
        columns.append(name)
    return columns


def _row_labels(cells: Sequence[str], label_names: Sequence[str], where: str) -> tuple[int, ...]:
    """A row's label values: () when every cell is empty (not labelled), else one 0/1 each."""
    empty = [name for name, cell in zip(label_names, cells, strict=True) if not cell.strip()]
    if len(empty) == len(cells):
        return ()
    if empty:
        raise ArchiveError(
            f"{where}: the label cells of {', '.join(empty)} are empty while the others are "
            "filled; give every label column 0 or 1, or leave them all empty for a scene that "
            "is not labelled"
        )
    try:
        labels = tuple(int(v) for v in cells)
    except ValueError as exc:
        raise ArchiveError(f"{where}: label values must be 0 or 1") from exc
    if any(v not in (0, 1) for v in labels):
        raise ArchiveError(f"{where}: label values must be 0 or 1")
    return labels


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
