"""The scenes SQL holds, as an `Archive` the embedding jobs read: every import's scenes and
those added through the API, each with its file under its import's root (or the archive
store), folder, split and labels as SQL has them now. `grn reindex --catalog`, `grn
reconcile --repair` and `POST /admin/reindex` build from it, so the index follows SQL, the
source of truth, corrections and API additions included."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from model.archive import Archive, ArchiveEntry
from service.storage.db import ArchiveImport, Label, Scene, SceneLabel


class EmptyCatalogError(ValueError):
    """SQL holds no scenes."""


def catalog_archive(engine: Engine) -> Archive:
    """Every scene of SQL, by name. A scene with no label at all counts as not labelled
    (SQL keeps no other mark; a land-cover scene always shows something)."""
    with Session(engine) as session:
        label_names = list(session.scalars(select(Label.name).order_by(Label.name)))
        rows = session.execute(
            select(Scene.id, Scene.name, Scene.folder, Scene.split, Scene.path, ArchiveImport.root)
            .join(ArchiveImport, Scene.archive_id == ArchiveImport.id)
            .order_by(Scene.name)
        ).all()
        pairs = session.execute(
            select(SceneLabel.scene_id, Label.name).join(Label, SceneLabel.label_id == Label.id)
        ).all()
    if not rows:
        raise EmptyCatalogError("SQL holds no scenes: run `grn import` or add scenes first")
    column = {name: i for i, name in enumerate(label_names)}
    carried: dict[int, list[int]] = {}  # a 0/1 row per labelled scene
    for scene, label in pairs:
        carried.setdefault(scene, [0] * len(label_names))[column[label]] = 1
    bases = {root: Path(root) for root in {row[-1] for row in rows}}  # each root parsed once
    scenes = [
        ArchiveEntry(
            name=name,
            folder=folder,
            split=split,
            labels=tuple(carried[scene]) if scene in carried else (),
            path=bases[root] / path,
        )
        for scene, name, folder, split, path, root in rows
    ]
    roots = sorted(bases)
    return Archive(
        root=Path(roots[0]), label_names=label_names, scenes=scenes,
        sources=tuple(Path(root) for root in roots),
    )  # fmt: skip


def write_snapshot(archive: Archive, folder: Path) -> Path:
    """The archive as a folder `grn train` and `grn evaluate` read: `images/` with a link to
    each scene's file and `labels.csv` with SQL's folders, splits and labels as they are now
    (empty label cells for a scene that is not labelled). Returns the folder."""
    if folder.exists():
        shutil.rmtree(folder)
    images = folder / "images"
    images.mkdir(parents=True)
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "scene", "split", *archive.label_names])
        for scene in archive.scenes:
            os.symlink(scene.path.resolve(), images / f"{scene.name}{scene.path.suffix.lower()}")
            cells = (
                [str(v) for v in scene.labels] if scene.labels else [""] * len(archive.label_names)
            )
            writer.writerow([scene.name, scene.folder, scene.split, *cells])
    return folder
