"""The served model's life, from the settings: train on the scenes SQL holds, promote a
candidate through the gate, retrain (both), roll back, and list the models served. The
mechanics (the gate, the history, the index of each model) are `service.usecases.promotion`;
these functions find the parts the settings name: the vector store, SQL's scenes as an
archive, and the served model file (GRN_MODEL_PATH)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.card import resolve_model_path
from service.settings import Settings
from service.usecases.promotion import Verdict, judge, models, promote, rollback

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from index.stores import VectorStore
    from model.archive import Archive
    from model.train import TrainResult

Tell = Callable[[str], None]
"""Where a use case says what it decided, as it goes (the CLI prints each line)."""


def _quiet(_: str) -> None:
    pass


def served_model_file(settings: Settings) -> Path:
    """The model file in service: GRN_MODEL_PATH, or model.safetensors in that folder."""
    served = settings.model.model_path
    return served / "model.safetensors" if served.is_dir() else served


def catalog_snapshot(engine: Engine, out: Path) -> Path:
    """SQL's scenes and labels now, written as an archive folder in OUT/catalog to train on.
    Raises `EmptyCatalogError` when SQL holds no scenes."""
    from service.storage.catalog_archive import catalog_archive, write_snapshot

    return write_snapshot(catalog_archive(engine), out / "catalog")


def training_summary(result: TrainResult) -> str:
    best = result.best_val.get("val_knn_sample_f1", float("nan"))
    return (
        f"best epoch {result.best_epoch}: val k-NN sample-F1 {best:.4f}; model {result.model_path}"
    )


@dataclass(frozen=True)
class Promotion:
    verdict: Verdict
    done: str | None
    """What happened, in one line; None when the gate refused the candidate."""


def _parts(settings: Settings, engine: Engine) -> tuple[VectorStore, Archive, Path]:
    """SQL's scenes as an archive (`EmptyCatalogError` when none), the vector store and the
    served model file."""
    from index.stores import open_store
    from service.storage.catalog_archive import catalog_archive

    archive = catalog_archive(engine)
    return open_store(settings.store), archive, served_model_file(settings)


def promote_candidate(
    settings: Settings,
    engine: Engine,
    candidate: Path,
    *,
    force: bool = False,
    tolerance: float = 0.0,
    device: str = "auto",
    tell: Tell = _quiet,
) -> Promotion:
    """Judge `candidate` against the served model on SQL's val scenes and, when it passes
    (or `force`), put it in service with an index of its own (`promotion.promote`). The
    verdict's lines are told before the (long) promotion starts."""
    store, archive, served = _parts(settings, engine)
    try:
        verdict = judge(
            resolve_model_path(candidate), served, archive, tolerance=tolerance, device=device
        )
        for line in verdict.lines():
            tell(line)
        if not (verdict.passed or force):
            return Promotion(verdict, None)
        if not verdict.passed:
            tell("promoted anyway (--force)")
        done = promote(candidate, served, store, archive, verdict=verdict, device=device)
        return Promotion(verdict, done)
    finally:
        store.close()


def retrain_folder(settings: Settings) -> Path:
    """retrain-<UTC time> beside the served model's training folder."""
    served = settings.model.model_path
    base = served if served.is_dir() else served.parent
    return base.parent / f"retrain-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"


def train_on_catalog(
    engine: Engine, out: Path, *, mode: str = "head", epochs: int | None = None,
    device: str = "auto", progress: bool = True, **overrides: Any,
) -> TrainResult:  # fmt: skip
    """Train (or resume training) a model in `out` on the scenes and labels SQL holds now
    (`catalog_snapshot`), with `mode`'s defaults and the given overrides."""
    from model.train import fit
    from model.train_config import config_for_mode

    archive = catalog_snapshot(engine, out)
    config = config_for_mode(
        mode, str(archive), str(out), epochs=epochs, device=device, progress=progress,
        **overrides,
    )  # fmt: skip
    return fit(config, resume=True)


def retrain(
    settings: Settings,
    engine: Engine,
    *,
    out: Path | None = None,
    mode: str = "head",
    epochs: int | None = None,
    force: bool = False,
    tolerance: float = 0.0,
    device: str = "auto",
    progress: bool = True,
    on_trained: Callable[[TrainResult], None] | None = None,
    tell: Tell = _quiet,
) -> Promotion:
    """Train a model on SQL's scenes (in `out`, default `retrain_folder`), then promote it
    through the gate (`promote_candidate`); `on_trained` hears of the training first."""
    out = out or retrain_folder(settings)
    result = train_on_catalog(engine, out, mode=mode, epochs=epochs, device=device,
                              progress=progress)  # fmt: skip
    if on_trained is not None:
        on_trained(result)
    return promote_candidate(
        settings, engine, out, force=force, tolerance=tolerance, device=device, tell=tell
    )


def roll_back(settings: Settings, engine: Engine, *, device: str = "auto") -> str:
    """Serve the model served before the current one again (`promotion.rollback`); what
    happened, in one line."""
    store, archive, served = _parts(settings, engine)
    try:
        return rollback(served, store, archive, device=device)
    finally:
        store.close()


def served_models(settings: Settings) -> list[dict[str, Any]]:
    """The served model and those kept in its history, newest first, with the val figures
    the gate measured (`promotion.models`)."""
    return models(served_model_file(settings))
