"""`grn synth`: a synthetic archive of any size, for trying the service at archive scale
(index/synth_archive.py; docs/scaling.md, "Synthetic archives")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.app import QuietOpt, app, fail, user_errors

UCM = Path("../shared/datasets/ucm-multilabel")


ScenesOpt = Annotated[int, typer.Option("--scenes", min=1, help="How many scenes.")]
OutOpt = Annotated[Path, typer.Option("--out", help="A new (or empty) archive folder.")]
ParamsOpt = Annotated[Path | None, typer.Option(help="Fitted parameters (default: UCM's).")]
ModelOpt = Annotated[Path | None, typer.Option(help="The model in use (default GRN_MODEL_PATH).")]
ImagesOpt = Annotated[Path, typer.Option(help="The archive the parameters were fitted on.")]
SeedOpt = Annotated[int, typer.Option(help="Scenes are named synthSEED_NNNNNNN.")]
NoDescriptorsOpt = Annotated[
    bool, typer.Option("--no-descriptors", help="Leave out the re-ranking descriptors.")
]


@app.command()
def synth(
    scenes: ScenesOpt,
    out: OutOpt,
    params: ParamsOpt = None,
    model: ModelOpt = None,
    images: ImagesOpt = UCM,
    seed: SeedOpt = 0,
    no_descriptors: NoDescriptorsOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a synthetic archive that `grn import` (or `grn import --bulk`) loads: vectors
    drawn from a distribution fitted to a real archive's for the model in use, that
    archive's labels and images, footprints, added and acquired dates."""
    from index.synth_archive import SynthError, write_synthetic_archive
    from index.synth_params import DEFAULT_PARAMS, SynthParams, SynthParamsError
    from model.card import read_card
    from service.settings import get_settings

    try:
        fitted = SynthParams.load(params or DEFAULT_PARAMS)
        card = read_card(model or get_settings().model.model_path)
        fitted.check_model(card.version, card.vector_dim)
        report = write_synthetic_archive(
            fitted, out, scenes, images=images, seed=seed, descriptors=not no_descriptors,
            progress=not quiet,
        )  # fmt: skip
    except user_errors(SynthError, SynthParamsError) as exc:
        fail(exc)
    typer.echo(report.summary())
