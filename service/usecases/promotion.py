"""Which model serves: a retrained model is promoted only when it is not worse than the
served one on the val split, as SQL labels it now; promotion swaps model and index together;
the models served before are kept, so a rollback is one command.

- The gate embeds the labelled val scenes of SQL with each model and compares, on them
  alone (`val_figures`: so the figures judge by labels the candidate never trained on, even
  when the train labels changed), k-NN sample-F1 and mAP of each half of val searched among
  the other, and the classifier's sample-F1: the candidate passes when none is lower than
  the served model's by more than `tolerance`. Both are measured in the same run.
- Promotion: the served model file is kept under `<model folder>/history/<version>`, the
  store builds an index of every SQL scene with the candidate and puts it in service, then
  the candidate replaces the served model file in one rename. Between the two steps the
  service keeps serving the old pair (it takes up a model and an index only when they match);
  after the rename it takes up the new pair at its next poll (or `POST /admin/reload`).
- Rollback: the newest kept model that is not the one served goes back the same way; the
  index version it had is put back in service when the store still has it (FAISS keeps the
  last versions), else one is built.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.stores import ReindexOptions, VectorStore
from model.archive import Archive, scene_id
from model.card import read_card, resolve_model_path

GATED_RETRIEVAL = ("knn_sample_f1", "map")
GATED = (*GATED_RETRIEVAL, "classifier_sample_f1")
"""The val figures a candidate may not lose (the classifier's where both models have it)."""
HISTORY = "history"


class PromotionError(ValueError):
    """Nothing to promote or roll back to (says why)."""


@dataclass(frozen=True)
class Verdict:
    candidate: str
    served: str | None
    candidate_figures: dict[str, float]
    served_figures: dict[str, float] | None
    tolerance: float
    passed: bool
    reason: str

    def lines(self) -> list[str]:
        def show(figures: dict[str, float] | None) -> str:
            if figures is None:
                return "none served"
            return ", ".join(f"{name} {figures[name]:.4f}" for name in GATED if name in figures)

        return [
            f"candidate {self.candidate}: {show(self.candidate_figures)}",
            f"served    {self.served or '-'}: {show(self.served_figures)}",
            self.reason,
        ]


def val_figures(model_path: Path, archive: Archive, *, device: str = "auto") -> dict[str, float]:
    """A model's figures on the labelled val scenes alone, so that they judge it by labels
    it never trained on: the val scenes split in two halves (alternate scenes by name), each
    half searched among the other (k-NN sample-F1, mAP; averaged over both directions,
    weighted by queries), and the classifier's sample-F1 at its thresholds when the model
    knows the archive's labels."""
    from model.card import load_model
    from model.embedding import embed_scenes
    from model.figures import retrieval_figures, same_labels
    from model.inference import resolve_device
    from model.metrics import sample_f1

    torch_device = resolve_device(device)
    net, card = load_model(model_path, torch_device)
    val = sorted(archive.indices("val", labelled_only=True), key=lambda i: archive.scenes[i].name)
    if len(val) < 4:
        raise PromotionError("the gate needs at least 4 labelled val scenes in SQL")
    embedded = embed_scenes(net, card, archive, val, device=torch_device, progress=False)
    labels = archive.label_matrix(embedded.positions)
    halves = [np.arange(len(labels))[0::2], np.arange(len(labels))[1::2]]
    figures: dict[str, float] = {}
    for query, base in (halves, halves[::-1]):
        found = retrieval_figures(
            embedded.embeddings[query], labels[query], embedded.embeddings[base], labels[base]
        )
        for name in GATED_RETRIEVAL:
            figures[name] = figures.get(name, 0.0) + found[name] * len(query) / len(labels)
    if same_labels(card, archive):
        predicted = embedded.probabilities >= np.asarray(card.thresholds)
        figures["classifier_sample_f1"] = sample_f1(predicted, labels)
    return figures


def judge(
    candidate: Path, served: Path | None, archive: Archive, *, tolerance: float = 0.0,
    device: str = "auto",
) -> Verdict:  # fmt: skip
    """Measure both models on the same val scenes and say whether the candidate passes."""
    mine = val_figures(candidate, archive, device=device)
    version = read_card(candidate).version
    if served is None or not served.is_file():
        return Verdict(version, None, mine, None, tolerance, True, "no model is served: it passes")
    theirs = val_figures(served, archive, device=device)
    served_version = read_card(served).version
    compared = [name for name in GATED if name in mine and name in theirs]
    lost = [name for name in compared if mine[name] < theirs[name] - tolerance]
    if lost:
        reason = "not promoted: lower " + ", ".join(
            f"{name} ({mine[name]:.4f} against {theirs[name]:.4f})" for name in lost
        )
    else:
        reason = "passes: not worse on " + ", ".join(compared)
    return Verdict(version, served_version, mine, theirs, tolerance, not lost, reason)


def history_of(served: Path) -> Path:
    return served.parent / HISTORY


def _keep(model_file: Path, figures: dict[str, Any] | None, folder: Path) -> Path:
    """A copy of a model file in the history `folder` (with its figures beside it)."""
    card = read_card(model_file)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{card.version}.safetensors"
    if not target.is_file():
        _copy_durably(model_file, target)
    record = folder / f"{card.version}.json"
    entry = json.loads(record.read_text()) if record.is_file() else {"version": card.version}
    if figures is not None:
        entry["val_figures"] = figures
    entry.setdefault("order", 0)
    record.write_text(json.dumps(entry, indent=2) + "\n")
    return target


def _mark_served(served: Path, version: str) -> None:
    """Record that `version` goes into service now: the newest in the history's order."""
    folder = history_of(served)
    records = [json.loads(path.read_text()) for path in folder.glob("*.json")]
    record = folder / f"{version}.json"
    entry = json.loads(record.read_text())
    entry["order"] = max((r.get("order", 0) for r in records), default=0) + 1
    entry["served_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record.write_text(json.dumps(entry, indent=2) + "\n")


def _copy_durably(source: Path, target: Path) -> None:
    from index.stores.faiss_versions import write_durably  # FAISS: not for `grn models`

    write_durably(target, source.read_bytes())


def promote(
    candidate: Path,
    served: Path,
    store: VectorStore,
    archive: Archive,
    *,
    verdict: Verdict | None = None,
    device: str = "auto",
    progress: bool = False,
) -> str:
    """Put the candidate in service with an index of its own (see the module docstring).
    Returns what happened, in one line."""
    candidate = resolve_model_path(candidate)
    version = read_card(candidate).version
    if served.is_file():
        current = read_card(served).version
        if current == version:
            raise PromotionError(f"model {version} is the one served already")
        _keep(served, verdict.served_figures if verdict else None, history_of(served))
        if not json.loads((history_of(served) / f"{current}.json").read_text())["order"]:
            _mark_served(served, current)  # served before the history began
    _keep(candidate, verdict.candidate_figures if verdict else None, history_of(served))
    _index_for(candidate, version, store, archive, device=device, progress=progress)
    served.parent.mkdir(parents=True, exist_ok=True)
    _copy_durably(candidate, served)
    history_of(served).mkdir(parents=True, exist_ok=True)
    _mark_served(served, version)
    return f"model {version} in service, with an index of its own ({store.location})"


def _index_for(
    model_file: Path, version: str, store: VectorStore, archive: Archive, *, device: str,
    progress: bool,
) -> None:  # fmt: skip
    """Put an index built by this model in service: a version the store kept of it when it
    holds exactly SQL's scenes (`VectorStore.reuse`), else a new build."""
    wanted = np.sort(np.asarray([scene_id(s.name) for s in archive.scenes], dtype=np.int64))
    if store.reuse(version, wanted):
        return
    store.reindex(
        model_file, archive, ReindexOptions(replace=True, device=device, progress=progress)
    )


def models(served: Path) -> list[dict[str, Any]]:
    """The served model and those kept in its history, newest first, with their figures."""
    rows: list[dict[str, Any]] = []
    current = read_card(served).version if served.is_file() else None
    folder = history_of(served)
    if folder.is_dir():
        for record in folder.glob("*.json"):
            entry = json.loads(record.read_text())
            entry["served"] = entry["version"] == current
            rows.append(entry)
    if current is not None and not any(row["served"] for row in rows):
        rows.append({"version": current, "served": True})
    rows.sort(key=lambda row: row.get("order", 0), reverse=True)
    return rows


def rollback(
    served: Path, store: VectorStore, archive: Archive, *, device: str = "auto",
    progress: bool = False,
) -> str:  # fmt: skip
    """Serve the model that was served before the current one again."""
    current = read_card(served).version if served.is_file() else None
    earlier = [row for row in models(served) if row["version"] != current]
    if not earlier:
        raise PromotionError(f"no earlier model is kept in {history_of(served)}")
    previous = history_of(served) / f"{earlier[0]['version']}.safetensors"
    if not previous.is_file():
        raise PromotionError(f"{previous} is missing")
    _index_for(previous, earlier[0]["version"], store, archive, device=device, progress=progress)
    _copy_durably(previous, served)
    _mark_served(served, earlier[0]["version"])
    return f"model {earlier[0]['version']} in service again (was {current})"


def verdict_json(verdict: Verdict) -> str:
    return json.dumps(asdict(verdict), indent=2)
