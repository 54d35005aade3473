"""Which model serves: promote a candidate through the gate, retrain and promote, roll back,
and list the models served (`service.usecases.lifecycle`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli.app import (
    DatabaseOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    QuietOpt,
    app,
    engine,
    fail,
    print_json,
    print_table,
    show_log,
    user_errors,
)

if TYPE_CHECKING:
    from service.usecases.lifecycle import Promotion

ToleranceOpt = Annotated[
    float, typer.Option(help="How much lower a gated val figure may be and still pass.")
]


def gated(promote: Callable[[], Promotion]) -> None:
    """Run a promotion through the gate: its line and exit 0 when the model went into
    service, exit 3 when the gate refused it, one line and exit 1 when it could not run."""
    from service.storage.catalog_archive import EmptyCatalogError
    from service.usecases.promotion import PromotionError

    try:
        promotion = promote()
    except user_errors(PromotionError, EmptyCatalogError) as exc:
        fail(exc)
    if promotion.done is None:
        raise typer.Exit(code=3)
    typer.echo(promotion.done)


@app.command()
def promote(
    model: ModelOpt,
    force: Annotated[
        bool, typer.Option("--force", help="Promote whatever the val figures say.")
    ] = False,
    tolerance: ToleranceOpt = 0.0,
    database_url: DatabaseOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Put MODEL in service (GRN_MODEL_PATH) with an index of its own, when it is not worse
    than the served model on the val scenes of SQL (k-NN sample-F1, mAP, classifier F1), or
    with --force. Exit 0 when promoted, 3 when the gate refused it."""
    from service.settings import get_settings
    from service.usecases.lifecycle import promote_candidate

    gated(
        lambda: promote_candidate(
            get_settings(), engine(database_url), model, force=force, tolerance=tolerance,
            device=device, tell=typer.echo,
        )
    )  # fmt: skip


@app.command()
def retrain(
    out: Annotated[
        Path | None,
        typer.Option(help="Training folder (default: retrain-<UTC time> beside the model's)."),
    ] = None,
    mode: Annotated[str, typer.Option(help="head or full.")] = "head",
    epochs: Annotated[int | None, typer.Option(help="Default: the mode's.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Promote whatever the gate says.")] = False,
    tolerance: ToleranceOpt = 0.0,
    database_url: DatabaseOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Train a model on the scenes and labels SQL holds now (`grn train --catalog`), then
    `grn promote` it: into service with its own index when it is not worse than the served
    model on the val split (exit 3 when the gate refuses it)."""
    from service.cli.training import print_trained
    from service.settings import get_settings
    from service.usecases import lifecycle

    show_log("grn.train")  # how many scenes are labelled and how many are left out
    gated(
        lambda: lifecycle.retrain(
            get_settings(), engine(database_url), out=out, mode=mode, epochs=epochs,
            force=force, tolerance=tolerance, device=device, progress=not quiet,
            on_trained=print_trained, tell=typer.echo,
        )
    )  # fmt: skip


@app.command()
def rollback(database_url: DatabaseOpt = None, device: DeviceOpt = "auto") -> None:
    """Serve the model served before the current one again, with its index (the kept
    version when the store still has it)."""
    from service.settings import get_settings
    from service.storage.catalog_archive import EmptyCatalogError
    from service.usecases.lifecycle import roll_back
    from service.usecases.promotion import PromotionError

    try:
        typer.echo(roll_back(get_settings(), engine(database_url), device=device))
    except user_errors(PromotionError, EmptyCatalogError) as exc:
        fail(exc)


FIGURES = ("knn_sample_f1", "map")


@app.command()
def models(as_json: JsonOpt = False) -> None:
    """The served model (*) and those served before it (kept for `grn rollback`), newest
    first, with the val figures the gate measured."""
    from service.settings import get_settings
    from service.usecases.lifecycle import served_model_file, served_models

    settings = get_settings()
    rows = served_models(settings)
    if as_json:
        print_json({"model_path": str(served_model_file(settings)), "models": rows})
        return
    if not rows:
        typer.echo(f"no model at {served_model_file(settings)}")
        return
    table = []
    for row in rows:
        figures = row.get("val_figures") or {}
        shown = [f"{figures[name]:.4f}" if name in figures else "-" for name in FIGURES]
        table.append(["*" if row["served"] else "", row["version"], *shown,
                      row.get("served_at", "")])  # fmt: skip
    print_table(["served", "version", *FIGURES, "served_at"], table, right=" ".join(FIGURES))
