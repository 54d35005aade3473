"""Versioned, atomic index storage.

    ROOT/
      current                 the name of the version in service (replaced atomically)
      versions/<version>/
        index.faiss           the FAISS index (scene ids inside)
        ids.npy               the ids it holds, sorted
        probabilities.npy     the classifier's label probabilities of each scene, rows in
                              the order of ids.npy (ranks label queries)
        descriptors.npy       the backbone's descriptors of each scene, rows in the order
                              of ids.npy (re-rank searches, model/rerank.py), as int8 codes
                              or float16 (index/descriptors.py); only for a model trained
                              in head mode
        seen.npy              the sorted ids of the scenes whose content the model trained
                              on (`model.rerank.seen_content`)
        manifest.json         written last: model version, dim, metric, factory, count,
                              index checksum, creation time, recall of the build

A build writes a new version folder, then its manifest, then switches `current`: a build
killed at any point leaves the previous version in service, and a folder without a manifest
is never loaded (and is pruned). Old versions are pruned by a keep-N policy that never
touches the current one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.descriptors import LEGACY as LEGACY_DESCRIPTORS
from index.descriptors import kept_as
from index.results import in_sorted
from index.row_files import save_rows
from index.stores.base import IndexModelMismatchError, IndexNotReadyError
from index.vectors import FullVectors, VectorFile, stored_ids
from model.faults import kill_point

MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
VECTORS_FILE = "vectors.npy"
PROBABILITIES_FILE = "probabilities.npy"
DESCRIPTORS_FILE = "descriptors.npy"
SEEN_FILE = "seen.npy"
CURRENT = "current"
MANIFEST_FORMAT = 1

log = logging.getLogger("grn.index")


class IndexWriteError(OSError):
    """A new index version could not be written (disk full, file size limit, permissions);
    the version in service is untouched."""


@dataclass
class Manifest:
    version: str
    model_version: str
    dim: int
    metric: str
    factory: str
    count: int
    checksum: str
    created: str
    parent: str | None = None
    """The version an incremental build started from (None for a full build)."""
    vectors_checksum: str | None = None
    """Of vectors.npy, the full vectors kept beside a compressed index for re-ranking."""
    stats: dict[str, Any] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT
    probabilities_checksum: str | None = None
    """Of probabilities.npy (None: a version built before they were kept)."""
    descriptors_checksum: str | None = None
    """Of descriptors.npy (None: not kept)."""
    descriptors_dtype: str | None = None
    """How descriptors.npy keeps them, one of `index.descriptors.DTYPES` (None: not kept,
    or a version built before int8 was offered, whose descriptors are float16)."""
    seen_checksum: str | None = None
    """Of seen.npy (None: a version built before it was recorded)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Write a file so that a crash leaves the old one or the new one, whole."""
    # a name of its own: two processes may write the same file at once
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _save_rows(path: Path, rows: FullVectors | None, ids: np.ndarray, what: str) -> str | None:
    """Write rows kept per scene beside an index (their checksum), if any."""
    if rows is None:
        return None
    if not np.array_equal(rows.ids, ids):
        raise ValueError(f"the {what} must hold exactly the index's ids")
    with path.open("wb") as handle:
        save_rows(handle, rows.vectors, rows.dtype)  # a chunk at a time: memory stays flat
    return _sha256(path)


def _checked(folder: Path, name: str, checksum: str) -> Path:
    """A file beside an index, checked against the manifest's checksum."""
    path = folder / name
    if not path.is_file() or _sha256(path) != checksum:
        raise IndexNotReadyError(f"index version {folder.name}: {name} is damaged")
    return path


def _load_rows(folder: Path, name: str, checksum: str | None) -> FullVectors | None:
    """Rows kept per scene beside an index (read on demand), checked against the manifest."""
    if checksum is None:
        return None
    path = _checked(folder, name, checksum)
    return FullVectors(np.load(folder / IDS_FILE), VectorFile(path))


def _read_index(path: Path, mapped: bool) -> faiss.Index:
    if mapped:
        try:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError as exc:  # a kind FAISS cannot map: read it whole
            log.info("index %s is read into memory, not mapped: %s", path, exc)
    return faiss.read_index(str(path))


@dataclass
class LoadedIndex:
    index: faiss.Index
    manifest: Manifest
    path: Path
    full_vectors: FullVectors | None = None
    """Memory-mapped full vectors of a compressed index, for exact re-ranking."""
    probabilities: FullVectors | None = None
    """The classifier's label probabilities of the scenes (read on demand), when kept."""
    descriptors: FullVectors | None = None
    """The backbone's descriptors of the scenes (read on demand), when kept."""
    seen: np.ndarray | None = None
    """The sorted ids of the scenes whose content the model trained on, when recorded."""


class IndexStore:
    """The index versions under one root folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions = self.root / "versions"

    def current_version(self) -> str | None:
        try:
            name = (self.root / CURRENT).read_text().strip()
        except FileNotFoundError:
            return None
        return name or None

    def manifest(self, version: str) -> Manifest:
        path = self.versions / version / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise IndexNotReadyError(f"index version {version} has no readable manifest") from exc
        return Manifest(**data)

    def complete_versions(self) -> list[str]:
        """Versions whose manifest was written, oldest first."""
        if not self.versions.is_dir():
            return []
        return sorted(p.name for p in self.versions.iterdir() if (p / MANIFEST).is_file())

    def write_version(
        self,
        index: faiss.Index,
        *,
        model_version: str,
        factory: str,
        parent: str | None = None,
        stats: dict[str, Any] | None = None,
        full_vectors: FullVectors | None = None,
        probabilities: FullVectors | None = None,
        descriptors: FullVectors | None = None,
        seen: np.ndarray | None = None,
    ) -> Manifest:
        """Write an index as a new version (not yet in service; see `activate`), with the
        full vectors beside it when given (sorted by id, for re-ranking) and the scenes'
        label probabilities, backbone descriptors and seen scenes' ids when given (`seen`
        may name scenes the index does not hold: they are left out). Descriptors come as
        the version keeps them: int8 codes or float16 (`index.descriptors.encoded`)."""
        descriptors_dtype = None if descriptors is None else kept_as(descriptors.vectors)
        # names sort in creation order: UTC time to the nanosecond, then a random tag
        now = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9))
        version = f"{stamp}.{now % 10**9:09d}-{os.urandom(3).hex()}"
        folder = self.versions / version
        folder.mkdir(parents=True)
        index_path = folder / INDEX_FILE
        try:
            faiss.write_index(index, str(index_path))
        except RuntimeError as exc:  # FAISS reports a failed write as a RuntimeError
            raise IndexWriteError(
                f"could not write {index_path} ({exc}); is the disk full? the index in "
                "service is unchanged"
            ) from exc
        kill_point("index-written")
        ids = np.sort(stored_ids(index))
        with (folder / IDS_FILE).open("wb") as handle:
            np.save(handle, ids)
        vectors_checksum = _save_rows(folder / VECTORS_FILE, full_vectors, ids, "full vectors")
        probabilities_checksum = _save_rows(
            folder / PROBABILITIES_FILE, probabilities, ids, "probabilities"
        )
        descriptors_checksum = _save_rows(
            folder / DESCRIPTORS_FILE, descriptors, ids, "descriptors"
        )
        seen_checksum = None
        if seen is not None:  # those of the given scenes the index holds
            seen = np.asarray(seen, dtype=np.int64)
            with (folder / SEEN_FILE).open("wb") as handle:
                np.save(handle, np.sort(seen[in_sorted(ids, seen)]))
            seen_checksum = _sha256(folder / SEEN_FILE)
        manifest = Manifest(
            version=version,
            model_version=model_version,
            dim=int(index.d),
            metric="inner_product",
            factory=factory,
            count=int(index.ntotal),
            checksum=_sha256(index_path),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            parent=parent,
            vectors_checksum=vectors_checksum,
            stats=stats or {},
            probabilities_checksum=probabilities_checksum,
            descriptors_checksum=descriptors_checksum,
            descriptors_dtype=descriptors_dtype,
            seen_checksum=seen_checksum,
        )
        write_durably(folder / MANIFEST, json.dumps(asdict(manifest), indent=2).encode())
        kill_point("manifest-written")
        return manifest

    def activate(self, version: str) -> None:
        """Put a complete version in service, atomically."""
        self.manifest(version)  # refuses a version without a manifest
        write_durably(self.root / CURRENT, f"{version}\n".encode())

    def load(
        self,
        version: str | None = None,
        *,
        expected_model: str | None = None,
        mapped: bool = False,
    ) -> LoadedIndex:
        """Load a version (the current one by default), verifying its checksum and, when
        `expected_model` is given, that it was built from that model's embeddings. `mapped`:
        the vectors (flat codes, inverted lists) stay in the file, memory-mapped read-only,
        so that processes serving the same version share one copy in the page cache; only for
        an index that is searched, never changed (a version's files are never rewritten)."""
        version = version or self.current_version()
        if version is None:
            raise IndexNotReadyError(
                f"no index has been built under {self.root}; run `grn reindex`"
            )
        manifest = self.manifest(version)
        if expected_model is not None and manifest.model_version != expected_model:
            raise IndexModelMismatchError(
                f"index {version} was built from model {manifest.model_version}, but the model "
                f"in use is {expected_model}; run a full `grn reindex` with this model"
            )
        folder = self.versions / version
        path = folder / INDEX_FILE
        if not path.is_file() or _sha256(path) != manifest.checksum:
            raise IndexNotReadyError(f"index version {version} is damaged (checksum mismatch)")
        full_vectors = _load_rows(folder, VECTORS_FILE, manifest.vectors_checksum)
        probabilities = _load_rows(folder, PROBABILITIES_FILE, manifest.probabilities_checksum)
        descriptors = _load_rows(folder, DESCRIPTORS_FILE, manifest.descriptors_checksum)
        named = manifest.descriptors_dtype or LEGACY_DESCRIPTORS
        if descriptors is not None and descriptors.dtype.name != named:
            raise IndexNotReadyError(
                f"index version {version}: {DESCRIPTORS_FILE} holds {descriptors.dtype.name} "
                f"rows, its manifest names {named}"
            )
        seen = None
        if manifest.seen_checksum is not None:
            seen = np.load(_checked(folder, SEEN_FILE, manifest.seen_checksum))
        return LoadedIndex(
            _read_index(path, mapped), manifest, path, full_vectors, probabilities, descriptors,
            seen,
        )  # fmt: skip

    def prune(self, keep: int, stale_after: float = 3600.0) -> list[str]:
        """Delete all but the newest `keep` complete versions (never the current one), and
        folders without a manifest (left by a killed build) untouched for `stale_after`
        seconds, so a build still running elsewhere keeps its folder. Returns what went."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        current = self.current_version()
        complete = self.complete_versions()
        doomed = [v for v in complete[:-keep] if v != current]
        if self.versions.is_dir():
            now = time.time()
            doomed += [
                p.name
                for p in self.versions.iterdir()
                if not (p / MANIFEST).is_file() and now - p.stat().st_mtime >= stale_after
            ]
        for name in doomed:
            shutil.rmtree(self.versions / name, ignore_errors=True)
        return sorted(doomed)

    def ids(self, version: str) -> np.ndarray:
        """The sorted scene ids a version holds (its ids.npy, without loading the index)."""
        return np.load(self.versions / version / IDS_FILE)

    def size_on_disk(self, version: str) -> int:
        return sum(p.stat().st_size for p in (self.versions / version).iterdir() if p.is_file())
