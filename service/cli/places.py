"""Place commands: `grn same-place`, the same place over time (what
`GET /scenes/{id}/same-place` answers), from the SQL of the settings
(`service.usecases.same_place`) or from a running service with --url
(`service.cli.remote`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from service.cli.app import (
    DatabaseOpt,
    UrlOpt,
    app,
    engine,
    fail,
    print_json,
    print_table,
    usage_error,
    user_errors,
)

MAX_SCENE_ID = 2**63 - 1


@app.command("same-place")
def same_place(
    scene_id: Annotated[
        int,
        typer.Argument(min=0, max=MAX_SCENE_ID, metavar="SCENE_ID", help="The archive scene's id."),
    ],
    min_overlap: Annotated[
        float,
        typer.Option(
            help="The share of the scene's footprint another must cover: area(both) / "
            "area(this scene's footprint), in (0, 1]."
        ),
    ] = 0.5,
    offset: Annotated[int, typer.Option(help="The first scene of the page (0-based).")] = 0,
    limit: Annotated[int, typer.Option(help="Scenes per page, 1 to 1000.")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="The API's answer (JSON) instead of a table.")
    ] = False,
    url: UrlOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """The same place over time: the other scenes whose footprint covers at least
    --min-overlap of this scene's, by acquisition time (unknown last), as
    GET /scenes/{id}/same-place answers (docs/geo.md): from the SQL of the GRN_ settings, or
    from a running service with --url. A table of id, image, acquired, overlap and labels
    under a header row, or --json. A scene without a footprint has none: its note, exit 0."""
    # imported once the command line is understood, so that a usage error answers at once
    from service.api.schemas.archive import SamePlaceQuery
    from service.storage.scene_reading import SchemaNotCurrentError

    try:  # checked as the route checks its query: a wrong value is a usage error naming it
        asked = SamePlaceQuery(min_overlap=min_overlap, offset=offset, limit=limit)
    except ValidationError as exc:  # each wrong value by its option
        usage_error("; ".join(
            f"--{'-'.join(map(str, error['loc'])).replace('_', '-')}: {error['msg']}"
            for error in exc.errors()
        ))  # fmt: skip
    try:
        if url is not None:
            from service.cli.remote import remote_get

            body = remote_get(url, f"/scenes/{scene_id}/same-place", asked.model_dump())
        else:
            body = _local_same_place(scene_id, asked, database_url)
    except user_errors(LookupError, OSError, SchemaNotCurrentError) as exc:
        fail(exc)
    if as_json:
        print_json(body)
        return
    if body["note"]:
        typer.echo(body["note"], err=True)
    if body["next_offset"] is not None:
        typer.echo(
            f"{body['total']} scenes at this place; the next page: --offset {body['next_offset']}",
            err=True,
        )
    if body["scenes"]:
        rows = [
            [item["id"], item["image"], item["acquired"] or "unknown", f"{item['overlap']:g}",
             ",".join(item["labels"])]
            for item in body["scenes"]
        ]  # fmt: skip
        print_table(["id", "image", "acquired", "overlap", "labels"], rows, right="id overlap")


def _local_same_place(scene_id: int, asked: Any, database_url: str | None) -> dict[str, Any]:
    """GET /scenes/{id}/same-place's body, computed here; a scene's image and thumbnail URLs
    are paths on the service (`/scenes/ID/image`), there being no service to prefix."""
    from service.api.routes.archive import router, same_place_page
    from service.settings import get_settings
    from service.storage.catalog import Catalog
    from service.usecases.same_place import same_place as same_place_here

    catalog = Catalog(engine(database_url), postgis=get_settings().database.postgis)
    try:
        found = same_place_here(
            catalog, scene_id, min_overlap=asked.min_overlap, offset=asked.offset,
            limit=asked.limit,
        )  # fmt: skip
    finally:
        catalog.engine.dispose()

    def paths(scene: int) -> tuple[str, str]:
        return (
            str(router.url_path_for("scene_image", scene_id=scene)),
            str(router.url_path_for("scene_thumbnail", scene_id=scene)),
        )

    body: dict[str, Any] = same_place_page(paths, asked, found).model_dump(mode="json")
    return body


def search_places(bbox: str | None, within: str | None, near: str | None) -> dict[str, Any]:
    """--bbox, --within and --near, checked, as POST /search's bbox, within and near."""
    from model.geo import parse_bbox, parse_near, polygon_from_geojson

    places: dict[str, Any] = {}
    if bbox:
        places["bbox"] = list(parse_bbox(bbox))
    if near:
        places["near"] = list(parse_near(near))
    if within:
        text = within if within.lstrip().startswith("{") else Path(within).read_text()
        places["within"] = json.loads(text)
        polygon_from_geojson(places["within"])
    return places
