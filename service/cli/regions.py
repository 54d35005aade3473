"""`grn search`'s regions and match maps (`service.usecases.regions`): the options, their
fields as POST /search takes them, and the maps printed as a person reads them."""

from __future__ import annotations

from typing import Annotated, Any

import typer

RegionOpt = Annotated[
    str | None,
    typer.Option(
        "--region", metavar="X0,Y0,X1,Y1",
        help="Search by this pixel box of the image (or of the --scene's image): columns X0 to "
        "X1, rows Y0 to Y1, each side at least 16 px.",
    ),
]  # fmt: skip
MatchMapsOpt = Annotated[
    bool,
    typer.Option(
        "--match-maps",
        help="Show where in each hit the query matches: a grid of cosine similarities (at "
        "most 10 hits).",
    ),
]
MatchGridOpt = Annotated[int, typer.Option("--match-grid", help="Match map cells per side, 3-8.")]


def region_fields(region: str | None, match_maps: bool, grid: int) -> dict[str, Any]:
    """The options as POST /search's fields (checked with the others, as the API checks
    them: a wrong region is a usage error naming it)."""
    fields: dict[str, Any] = {}
    if region is not None:
        parts = [part.strip() for part in region.split(",")]
        fields["region"] = [int(part) if part.lstrip("-").isdigit() else part for part in parts]
    if match_maps:
        fields |= {"match_maps": True, "match_grid": grid}
    return fields


def map_json(found: Any) -> dict[str, Any]:
    """A `service.usecases.regions.MatchMap` as POST /search answers it in a hit."""
    return {
        "rows": found.rows, "cols": found.cols, "width": found.width, "height": found.height,
        "window_width": found.window_width, "window_height": found.window_height,
        "values": found.values,
    }  # fmt: skip


def print_match_maps(hits: list[dict[str, Any]]) -> None:
    """Each hit's match map under a line that names the hit: rows of similarities, top row
    first, the best cell marked with *."""
    for rank, hit in enumerate(hits, start=1):
        found = hit.get("match_map")
        if not found:
            continue
        values = found["values"]
        best = max(value for row in values for value in row)
        typer.echo(
            f"\nmatch map {rank}: {hit['image']} (id {hit['id']}), {found['rows']} x "
            f"{found['cols']} cells of {found['width']} x {found['height']} px, cosine "
            "similarity to the query (* the best)"
        )
        for row in values:
            typer.echo(
                "  " + " ".join(f"{value:6.3f}{'*' if value == best else ' '}" for value in row)
            )
