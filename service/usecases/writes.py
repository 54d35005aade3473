"""Scenes added, corrected and removed through the API (`POST`, `PATCH`, `DELETE /scenes`).

Adding: each image is stored in the archive store (`GRN_STORE_DIR`), content-addressed
(`<sha256[:2]>/<sha256>.<ext>`, written to a temporary name, synced and renamed), then its
row, its labels and its embedding under the served model go to SQL in one transaction. The
same file twice is one scene: an upload whose SHA-256 a scene already has comes back as that
scene, marked `duplicate`, and nothing is written. Once the transaction commits every process
of the service searches the scene (`service.storage.live_index`: the written embeddings join the
index version's), so a search sent after the response sees it.

A crash between the steps loses nothing and duplicates nothing: a file without a row is
harmless (the same upload later reuses it) and a row always has its embedding beside it.

Removing: the row goes (its labels and embedding with it, ON DELETE CASCADE), so no search
returns the scene from the moment the call returns; then its file, when the archive store
holds it and no other scene uses it. A scene imported from an archive folder keeps its file
there (the folder is the user's): `grn import` of that folder would bring it back.

Correcting: labels, scene folder, split and metadata change in one transaction; label filters
and the classifier's view follow with the next request.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from index.stores.faiss_versions import write_durably
from model.archive import scene_id
from model.faults import kill_point
from model.geo import SceneGeo
from model.rasters import RasterError, acquired_of_file, footprint_of_file
from service.errors import BadRequestError, SceneNotFoundError
from service.storage.db import ArchiveImport, Label, Scene, SceneFootprint, SceneLabel, SceneVector
from service.storage.spatial import footprint_row

API_ARCHIVE_STATUS = "api"
"""The status of the `archives` row that stands for the archive store."""

MEDIA_TYPES = {
    b"\xff\xd8\xff": ("image/jpeg", ".jpg"),
    b"\x89PNG": ("image/png", ".png"),
    b"II*\x00": ("image/tiff", ".tif"),
    b"MM\x00*": ("image/tiff", ".tif"),
    b"II+\x00": ("image/tiff", ".tif"),
    b"MM\x00+": ("image/tiff", ".tif"),
    b"GIF8": ("image/gif", ".gif"),
    b"BM": ("image/bmp", ".bmp"),
}


class SceneConflictError(ValueError):
    """A scene name another scene already has (HTTP 409)."""


class ArchiveStoreError(OSError):
    """The archive store cannot be written (HTTP 503): nothing was added."""


class DuplicateScenesError(ValueError):
    """Every image of a request is a scene already (HTTP 409); `details` names them."""

    def __init__(self, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.details = details


def sniff(data: bytes) -> tuple[str, str]:
    """The media type and file extension of an image file, from its first bytes."""
    for magic, kind in MEDIA_TYPES.items():
        if data.startswith(magic):
            return kind
    if data[8:12] == b"WEBP":
        return "image/webp", ".webp"
    return "application/octet-stream", ".bin"


@dataclass(frozen=True)
class NewScene:
    """One image to add, with what is known of it."""

    data: bytes
    height: int
    width: int
    embedding: np.ndarray
    probabilities: np.ndarray | None
    name: str | None = None
    """The scene's name (its image stem); default: the first 20 characters of its SHA-256."""
    folder: str = "uploads"
    split: str = "train"
    labels: Sequence[str] = ()
    meta: dict[str, Any] | None = None
    geo: SceneGeo | None = None
    """Where it lies (a GeoTIFF's own georeferencing is read when this is None)."""
    acquired: datetime | None = None
    """When its pixels were taken (a GeoTIFF's date tags are read when this is None)."""

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Added:
    scene: Scene
    duplicate: bool
    """The same file was already a scene: nothing was written."""


@dataclass(frozen=True)
class SceneChanges:
    """What a PATCH sets (None: left as it is)."""

    labels: Sequence[str] | None = None
    folder: str | None = None
    split: str | None = None
    meta: dict[str, Any] | None = None
    clear_meta: bool = False
    geo: SceneGeo | None = None
    clear_geo: bool = False
    acquired: datetime | None = None
    clear_acquired: bool = False


def store_file(store: Path, data: bytes, checksum: str) -> tuple[Path, bool]:
    """The file in the archive store, relative to the store, and whether this call wrote it
    (an existing file is reused)."""
    _, extension = sniff(data)
    relative = Path(checksum[:2]) / f"{checksum}{extension}"
    target = store / relative
    if target.is_file() and target.stat().st_size == len(data):
        return relative, False
    target.parent.mkdir(parents=True, exist_ok=True)
    write_durably(target, data)
    return relative, True


class SceneWriter:
    """Adds, corrects and removes scenes in SQL and the archive store."""

    def __init__(self, engine: Engine, store: Path) -> None:
        self.engine = engine
        self.store = store.resolve()

    def _store_archive(self, session: Session) -> ArchiveImport:
        root = str(self.store)
        found = session.scalars(
            select(ArchiveImport)
            .where(ArchiveImport.root == root, ArchiveImport.status == API_ARCHIVE_STATUS)
            .order_by(ArchiveImport.id)
        ).first()
        if found is None:
            found = ArchiveImport(
                root=root,
                labels_csv="",
                status=API_ARCHIVE_STATUS,
                scenes_added=0,
                scenes_skipped=0,
                broken="[]",
            )
            session.add(found)
            session.flush()
        return found

    def check_labels(self, names: Sequence[str]) -> None:
        """Raise the 400 of a label the archive does not have, naming the ones it has."""
        if not names:
            return
        with Session(self.engine) as session:
            _label_ids(session, names)

    def add(self, scenes: Sequence[NewScene], model_version: str) -> list[Added]:
        """Store and record the scenes (see the module docstring), in the order given."""
        with Session(self.engine) as session:
            for scene in scenes:
                _label_ids(session, scene.labels)  # a 400 before anything is written
        results: list[Added | None] = [None] * len(scenes)
        fresh: list[tuple[int, NewScene, str]] = []
        with Session(self.engine, expire_on_commit=False) as session:
            for position, scene in enumerate(scenes):
                checksum = scene.checksum
                existing = session.scalars(
                    select(Scene).where(Scene.checksum == checksum).order_by(Scene.id)
                ).first()
                if existing is not None:
                    results[position] = Added(existing, duplicate=True)
                else:
                    fresh.append((position, scene, checksum))
        names = [scene.name or checksum[:20] for _, scene, checksum in fresh]
        if len(set(names)) != len(names):
            raise BadRequestError("two images of the request have the same name", "duplicate_name")
        if not fresh:
            return [result for result in results if result is not None]
        with Session(self.engine) as session:
            self._check_free(session, names)
        stored: list[tuple[Path, bool]] = []
        try:
            for _, scene, checksum in fresh:
                stored.append(store_file(self.store, scene.data, checksum))
        except OSError as exc:
            self._forget(stored)
            raise ArchiveStoreError(
                f"cannot write to the archive store {self.store} ({exc.strerror or exc}); "
                "check GRN_STORE_DIR and who may write there"
            ) from exc
        paths = [path for path, _ in stored]
        try:  # a GeoTIFF keeps its georeferencing; one that cannot be placed is a 400
            places = [
                scene.geo or footprint_of_file(self.store / path)
                for (_, scene, _), path in zip(fresh, paths, strict=True)
            ]
            taken = [
                scene.acquired or acquired_of_file(self.store / path)
                for (_, scene, _), path in zip(fresh, paths, strict=True)
            ]
        except RasterError as exc:
            self._forget(stored)
            raise BadRequestError(str(exc).replace(str(self.store), "upload"), "bad_place") from exc
        kill_point("scene-stored")
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                archive = self._store_archive(session)
                self._check_free(session, names)
                rows = []
                for (_, scene, checksum), name, path, acquired in zip(
                    fresh, names, paths, taken, strict=True
                ):
                    media_type, _ = sniff(scene.data)
                    row = Scene(
                        id=scene_id(name),
                        name=name,
                        folder=scene.folder,
                        split=scene.split,
                        archive_id=archive.id,
                        path=str(path),
                        media_type=media_type,
                        width=scene.width,
                        height=scene.height,
                        checksum=checksum,
                        meta=None if scene.meta is None else json.dumps(scene.meta),
                        acquired=acquired,
                    )
                    session.add(row)
                    rows.append(row)
                session.flush()
                for row, place in zip(rows, places, strict=True):
                    if place is not None:
                        session.add(SceneFootprint(**footprint_row(row.id, place)))
                for row, (_, scene, _) in zip(rows, fresh, strict=True):
                    for label_id in _label_ids(session, scene.labels):
                        session.add(SceneLabel(scene_id=row.id, label_id=label_id))
                    session.add(
                        SceneVector(
                            scene_id=row.id,
                            model_version=model_version,
                            embedding=np.asarray(scene.embedding, np.float32).tobytes(),
                            probabilities=None
                            if scene.probabilities is None
                            else np.asarray(scene.probabilities, np.float32).tobytes(),
                        )
                    )
                archive.scenes_added += len(rows)
        except Exception as exc:
            self._forget(stored)  # nothing half-written
            if isinstance(exc, IntegrityError):  # another request added one meanwhile
                raise SceneConflictError(
                    "another request added one of these scenes at the same time; send it "
                    "again to get it back as a duplicate"
                ) from exc
            raise
        kill_point("scene-committed")
        added = self.scenes([scene_id(name) for name in names])
        for (position, _, _), name in zip(fresh, names, strict=True):
            results[position] = Added(added[scene_id(name)], duplicate=False)
        return [result for result in results if result is not None]

    def _forget(self, stored: Sequence[tuple[Path, bool]]) -> None:
        """Remove the files this call stored (not those it found there)."""
        for path, created in stored:
            if created:
                with contextlib.suppress(FileNotFoundError):
                    (self.store / path).unlink()

    @staticmethod
    def _check_free(session: Session, names: Sequence[str]) -> None:
        taken = set(session.scalars(select(Scene.name).where(Scene.name.in_(names))).all())
        if taken:
            raise SceneConflictError(
                f"a scene named {sorted(taken)[0]} exists already: choose another name"
            )

    def scenes(self, ids: Sequence[int]) -> dict[int, Scene]:
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.scalars(select(Scene).where(Scene.id.in_(list(ids)))).all()
            return {row.id: row for row in rows}

    def update(self, scene_id_: int, changes: SceneChanges) -> Scene:
        """Set the scene's labels, folder, split and metadata as `changes` says."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            scene = session.get(Scene, scene_id_)
            if scene is None:
                raise SceneNotFoundError(f"no scene with id {scene_id_}")
            if changes.labels is not None:
                label_ids = _label_ids(session, changes.labels)
                session.execute(delete(SceneLabel).where(SceneLabel.scene_id == scene_id_))
                for label_id in label_ids:
                    session.add(SceneLabel(scene_id=scene_id_, label_id=label_id))
            if changes.folder is not None:
                scene.folder = changes.folder
            if changes.split is not None:
                scene.split = changes.split
            if changes.clear_meta:
                scene.meta = None
            elif changes.meta is not None:
                scene.meta = json.dumps(changes.meta)
            if changes.clear_acquired or changes.acquired is not None:
                scene.acquired = changes.acquired
            if changes.clear_geo or changes.geo is not None:
                session.execute(delete(SceneFootprint).where(SceneFootprint.scene_id == scene_id_))
            if changes.geo is not None:
                session.add(SceneFootprint(**footprint_row(scene_id_, changes.geo)))
        return self.scenes([scene_id_])[scene_id_]

    def delete(self, scene_id_: int) -> None:
        """Remove the scene (see the module docstring)."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            scene = session.get(Scene, scene_id_)
            if scene is None:
                raise SceneNotFoundError(f"no scene with id {scene_id_}")
            archive, path = scene.archive, scene.path
            session.delete(scene)
        if archive.status != API_ARCHIVE_STATUS or Path(archive.root).resolve() != self.store:
            return
        with Session(self.engine) as session:
            shared = session.scalars(
                select(Scene.id).where(Scene.archive_id == archive.id, Scene.path == path)
            ).first()
        if shared is None:
            file = (self.store / path).resolve()
            if file.is_relative_to(self.store):
                with contextlib.suppress(FileNotFoundError):
                    file.unlink()


def _label_ids(session: Session, names: Sequence[str]) -> list[int]:
    """The labels' ids; a 400 naming the archive's labels for one it does not have."""
    if not names:
        return []
    known = {name: label_id for name, label_id in session.execute(select(Label.name, Label.id))}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise BadRequestError(
            f"unknown label(s) {', '.join(unknown)}; the archive's labels are: "
            + (", ".join(sorted(known)) or "none (it has no labels)"),
            code="unknown_label",
        )
    return sorted({known[name] for name in names})
