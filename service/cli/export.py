"""`grn export`: the archive's scenes as a file other tools read (GeoParquet), filtered as
`GET /scenes` filters them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from service.cli.app import DatabaseOpt, app, engine, fail, message, usage_error, user_errors

FilterOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        metavar="FIELD=VALUE",
        help="A filter field of GET /scenes (labels_any=water, month=6,7,8, bbox=W,S,E,N, "
        "acquired_after=2020-01-01, ...); repeat for several.",
    ),
]
EmbeddingsOpt = Annotated[bool, typer.Option("--embeddings", help="Each scene's embedding too.")]


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="The file to write.")],
    format: Annotated[
        Literal["geoparquet"], typer.Option("--format", help="geoparquet (GeoParquet 1.1).")
    ] = "geoparquet",
    where: FilterOpt = None,
    embeddings: EmbeddingsOpt = False,
    database_url: DatabaseOpt = None,
) -> None:
    """Write the scenes that pass the filters to OUT as GeoParquet: footprint, id, labels,
    dates, properties and the model's label scores (when a model and its index are there),
    read by GeoPandas, DuckDB and QGIS."""
    from pydantic import ValidationError

    from service.api.schemas.archive import SceneSelection

    fields: dict[str, list[str]] = {}
    for given in where or []:
        key, equals, value = given.partition("=")
        if not equals or not key.strip():
            usage_error(f"--filter takes FIELD=VALUE; found {given!r}")
        fields.setdefault(key.strip(), []).append(value)
    unknown = sorted(set(fields) - set(SceneSelection.model_fields))
    if unknown:
        usage_error(f"unknown filter field(s) {', '.join(unknown)}")
    try:
        selection = SceneSelection.from_text(fields)
        chosen = selection.to_filter()
    except (ValidationError, ValueError) as exc:
        usage_error(message(exc))
    from service.settings import get_settings
    from service.usecases.geoparquet import export_here
    from service.usecases.local_search import NothingToSearchError

    try:
        rows, scored = export_here(
            get_settings(), engine(database_url), chosen, out, name=selection.q,
            order=selection.order, embeddings=embeddings,
        )  # fmt: skip
    except user_errors(NothingToSearchError, OSError) as exc:
        fail(exc)
    by = f"scored by {scored}" if scored else "without scores (no model and index here)"
    typer.echo(f"wrote {rows} scenes to {out} ({format}, {by})")
