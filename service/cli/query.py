"""Query commands: `grn search` and `grn classify`, answered here from the settings' model,
store and SQL (`service.usecases.local_search`), or by a running service with --url
(`service.cli.remote`)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli import regions
from service.cli.app import (
    DatabaseOpt,
    FormatOpt,
    UrlOpt,
    app,
    engine,
    fail,
    message,
    output_format,
    print_json,
    print_table,
    scene_ids,
    split_commas,
    usage_error,
    user_errors,
)
from service.cli.hits import UNDERSTOOD, hit_json, print_hits
from service.cli.places import search_places


@app.command()
def search(
    image: Annotated[
        Path | None, typer.Argument(help="An image file to search by (or --scene).")
    ] = None,
    scene: Annotated[
        str | None,
        typer.Option("--scene", metavar="ID", help="Search by this archive scene's id."),
    ] = None,
    k: Annotated[int, typer.Option(help="Hits, 1 to 1000.")] = 10,
    labels_all: Annotated[
        list[str] | None, typer.Option("--labels-all", help="Labels that must all be present.")
    ] = None,
    labels_any: Annotated[
        list[str] | None, typer.Option("--labels-any", help="Labels of which one is present.")
    ] = None,
    labels_none: Annotated[
        list[str] | None, typer.Option("--labels-none", help="Labels that must be absent.")
    ] = None,
    folder: Annotated[str | None, typer.Option(help="Only scenes of this scene folder.")] = None,
    min_score: Annotated[float | None, typer.Option(help="Drop weaker hits.")] = None,
    include_query: Annotated[
        bool, typer.Option("--include-query", help="With --scene: keep the scene itself.")
    ] = False,
    more_like: Annotated[
        list[str] | None,
        typer.Option(
            "--more-like", metavar="ID", help="Relevance feedback: a scene id to be like (repeat)."
        ),
    ] = None,
    less_like: Annotated[
        list[str] | None,
        typer.Option(
            "--less-like", metavar="ID", help="Relevance feedback: a scene id not to be like."
        ),
    ] = None,
    text: Annotated[
        str | None,
        typer.Option(help='A phrase read onto the labels ("storage tanks, no trees").'),
    ] = None,
    positive: Annotated[
        list[str] | None,
        typer.Option(
            "--positive",
            metavar="ID",
            help="Concept search: a scene that shows the concept (repeat; POST /search/concept).",
        ),
    ] = None,
    negative: Annotated[
        list[str] | None,
        typer.Option(
            "--negative", metavar="ID", help="Concept search: a scene that does not (repeat)."
        ),
    ] = None,
    concept: Annotated[
        str | None, typer.Option(metavar="NAME", help="Rank the archive by this saved concept.")
    ] = None,
    output: FormatOpt = "table",
    bbox: Annotated[
        str | None,
        typer.Option(
            help="Only scenes whose footprint meets MIN_LON,MIN_LAT,MAX_LON,MAX_LAT (MIN_LON "
            "above MAX_LON: across the antimeridian)."
        ),
    ] = None,
    within: Annotated[
        str | None,
        typer.Option(
            help="Only scenes centred in this GeoJSON Polygon or MultiPolygon (text, or a file)."
        ),
    ] = None,
    near: Annotated[
        str | None, typer.Option(help="Only scenes centred within LON,LAT,METRES.")
    ] = None,
    added_after: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN",
            help="Only scenes that entered the archive at or after WHEN (ISO 8601 date or "
            "date and time; UTC unless it says otherwise).",
        ),
    ] = None,
    added_before: Annotated[
        str | None,
        typer.Option(metavar="WHEN", help="Only scenes that entered the archive before WHEN."),
    ] = None,
    acquired_after: Annotated[
        str | None,
        typer.Option(metavar="WHEN", help="Only scenes acquired at or after WHEN (ISO 8601)."),
    ] = None,
    acquired_before: Annotated[
        str | None, typer.Option(metavar="WHEN", help="Only scenes acquired before WHEN.")
    ] = None,
    month: Annotated[
        str | None,
        typer.Option(metavar="M,M", help="Only scenes acquired in these months (1-12), any year."),
    ] = None,
    concepts: Annotated[
        list[str] | None,
        typer.Option(
            "--concepts",
            metavar="NAME",
            help="Only scenes this saved concept keeps (repeat: every one of them).",
        ),
    ] = None,
    concept_min_score: Annotated[
        float | None,
        typer.Option(help="With --concepts: the score a scene needs, not each one's threshold."),
    ] = None,
    region: regions.RegionOpt = None,
    match_maps: regions.MatchMapsOpt = False,
    match_grid: regions.MatchGridOpt = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    url: UrlOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """The archive scenes most similar to an image or an archive scene (or a --region of
    it, with --match-maps: where in each hit it matches), or most typical of
    labels (--labels-all alone), as POST /search answers, or most like --positive scenes and
    unlike --negative ones (a probe taught by them), or by a saved --concept (both as POST
    /search/concept answers): from the model, vector store and SQL of the GRN_ settings, or
    from a running service with --url. A table of rank, score, id, image and labels under a
    header row; --format json or csv."""
    query_id = scene_ids("--scene", [scene])[0] if scene is not None else None
    liked, disliked = scene_ids("--more-like", more_like), scene_ids("--less-like", less_like)
    positives, negatives = scene_ids("--positive", positive), scene_ids("--negative", negative)
    if negatives and not positives:
        usage_error("--negative needs at least one --positive scene")
    ranked_by = "--positive" if positives else "--concept" if concept is not None else None
    if ranked_by and (image is not None or scene or more_like or less_like or text):
        usage_error(f"{ranked_by} ranks by its examples alone: leave out the image, --scene, "
                    "--more-like, --less-like and --text")  # fmt: skip
    if image is not None and scene is not None:
        usage_error("give an image file or --scene ID, not both")
    if (
        image is None
        and scene is None
        and not (more_like or labels_all or folder or text or positives or concept)
    ):
        usage_error(
            "give an image file, --scene ID, --more-like ID, --labels-all, --folder or --text"
        )
    output = output_format(output, as_json)
    try:
        places = search_places(bbox, within, near)
    except (ValueError, OSError) as exc:
        usage_error(message(exc))
    fields = {
        key: value
        for key, value in {
            "labels_all": split_commas(labels_all), "labels_any": split_commas(labels_any),
            "labels_none": split_commas(labels_none), "scene": folder, "text": text,
            "min_score": min_score, "more_like": liked, "less_like": disliked,
            "added_after": added_after, "added_before": added_before,
            "acquired_after": acquired_after, "acquired_before": acquired_before,
            "month": split_commas([month] if month else None), **places,
            "concepts": split_commas(concepts), "concept_min_score": concept_min_score,
        }.items()
        if value is not None and value != []
    } | {"k": k, "include_query": include_query} | regions.region_fields(
        region, match_maps, match_grid
    )  # fmt: skip
    if ranked_by:
        if url is None and concepts:
            usage_error(f"--concepts filters {ranked_by} through a service only: add --url")
        fields.pop("include_query")
        examples = {"concept": concept} if concept is not None else {
            "positives": positives, "negatives": negatives}  # fmt: skip
        print_hits(_concept(fields | examples, url, database_url), output)
        return
    # imported once the command line is understood, so that a usage error answers at once
    from service.api.schemas.search import query_from_fields
    from service.storage.scene_reading import SchemaNotCurrentError
    from service.usecases.local_search import ConceptFilter, NothingToSearchError
    from service.usecases.saved_concepts import ConceptStaleError
    from service.usecases.text import TextSearchUnavailableError

    # here the saved concepts are resolved once the index is open, as the service does
    named = ConceptFilter(tuple(fields.pop("concepts", ())), fields.pop("concept_min_score", None))
    try:  # checked as POST /search checks it: a wrong value is a usage error naming it
        by_scene = {} if query_id is None else {"scene_id": query_id}
        query = query_from_fields(fields | by_scene, by_image=image is not None)
    except ValueError as exc:
        usage_error(message(exc))
    try:
        if url is not None:
            from service.cli.remote import remote_search

            body = remote_search(url, image, query_id, fields | _concept_fields(named))
        else:
            body = _local_search(image, query_id, query, text, database_url, named, fields)
    except user_errors(
        LookupError, OSError, NothingToSearchError, TextSearchUnavailableError,
        SchemaNotCurrentError, ConceptStaleError,
    ) as exc:  # fmt: skip
        fail(exc)
    print_hits(body, output)


def _concept(fields: dict[str, Any], url: str | None, database_url: str | None) -> dict[str, Any]:
    """POST /search/concept's answer to its fields: from the service at `url`, or computed
    here (`service.usecases.local_search.concept_here`)."""
    from service.api.schemas.concept import ConceptRequest
    from service.storage.scene_reading import SchemaNotCurrentError
    from service.usecases.local_search import NothingToSearchError
    from service.usecases.saved_concepts import ConceptStaleError

    try:  # checked as the route checks it: a wrong value is a usage error naming it
        query = ConceptRequest.model_validate(fields).to_query()
    except ValueError as exc:
        usage_error(message(exc))
    try:
        if url is not None:
            from service.cli.remote import remote_post

            ids = {key: [str(i) for i in fields[key]] for key in ("positives", "negatives")
                   if key in fields}  # fmt: skip
            body = remote_post(url, "/search/concept", fields | ids)
        else:
            body = _local_concept(query, database_url)
    except user_errors(
        LookupError, OSError, NothingToSearchError, SchemaNotCurrentError, ConceptStaleError
    ) as exc:
        fail(exc)
    typer.echo(f"{body['candidates']} candidates scored by the concept's probe", err=True)
    return body


def _local_concept(query: Any, database_url: str | None) -> dict[str, Any]:
    from service.settings import get_settings
    from service.usecases.local_search import concept_here

    page = concept_here(get_settings(), engine(database_url), query)
    return {
        "hits": [hit_json(hit) for hit in page.hits],
        "total": page.total,
        "candidates": page.candidates,
        "descriptors": page.descriptors,
        "concept": query.concept,
        "positives": [str(i) for i in page.positives],
        "negatives": [str(i) for i in page.negatives],
        "model_version": page.model_version,
        "index_version": page.index_version,
    }


def _concept_fields(named: Any) -> dict[str, Any]:
    """--concepts and --concept-min-score as POST /search's fields (none when not given)."""
    given = {"concepts": list(named.names), "concept_min_score": named.min_score}
    return {key: value for key, value in given.items() if value not in (None, [])}


def _local_search(
    image: Path | None,
    scene: int | None,
    query: Any,
    text: str | None,
    database_url: str | None,
    concepts: Any,
    fields: dict[str, Any],
) -> dict[str, Any]:
    """POST /search's answer, computed here (`service.usecases.local_search.search_here`)."""
    from service.settings import get_settings
    from service.usecases.local_search import search_here
    from service.usecases.regions import Region

    region = Region.of(fields["region"]) if "region" in fields else None
    answer = search_here(
        get_settings(), engine(database_url), query, text=text, image=image, scene_id=scene,
        concepts=concepts, region=region, match_grid=fields.get("match_grid"),
    )  # fmt: skip
    page, read = answer.page, answer.understood
    hits = [hit_json(hit) for hit in page.hits]
    for hit, found in zip(hits, answer.maps or [], strict=False):
        hit["match_map"] = regions.map_json(found)
    understood = None
    if read is not None:
        understood = {key: getattr(read, key) for key in UNDERSTOOD}
    return {
        "hits": hits,
        "total": page.total,
        "query_id": None if page.query_id is None else str(page.query_id),
        "model_version": page.model_version,
        "index_version": page.index_version,
        "understood": understood,
        "reranked": page.reranked,
        "region": fields.get("region") and [int(v) for v in fields["region"]],
    }


@app.command()
def classify(
    images: Annotated[list[Path], typer.Argument(help="Image files.", metavar="IMAGE...")],
    output: FormatOpt = "table",
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    url: UrlOpt = None,
) -> None:
    """The labels of image files (what POST /classify answers): every label's probability
    and the labels at or above their thresholds, from the model of GRN_MODEL_PATH or from a
    running service with --url. A table of file and predicted labels under a header row;
    --format json or csv."""
    output = output_format(output, as_json)
    try:
        if url:
            from service.cli.remote import remote_classify

            results = remote_classify(url, images)
        else:
            results = _local_classify(images)
    except user_errors(OSError) as exc:
        fail(exc)
    if output == "json":
        print_json(results)
    elif output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        names = [score["label"] for score in results[0]["labels"]] if results else []
        writer.writerow(["file", "predicted", *names])
        for result in results:
            by_label = {s["label"]: s["probability"] for s in result["labels"]}
            writer.writerow([result["filename"], ";".join(result["predicted"]),
                             *(f"{by_label[n]:.6f}" for n in names)])  # fmt: skip
    else:
        rows = [[r["filename"], ", ".join(r["predicted"]) or "(none)"] for r in results]
        print_table(["file", "predicted"], rows)


def _local_classify(images: list[Path]) -> list[dict[str, Any]]:
    """What POST /classify answers in `results`, from the model of the settings run here."""
    import asyncio

    from service.api.schemas import ImageClassification
    from service.settings import get_settings
    from service.usecases.classify import FileModel, classify_images

    model = FileModel.load(get_settings().model.model_path, get_settings().model.device)
    named = [(path.name, path) for path in images]
    classified = asyncio.run(classify_images(named, model.card, model))
    return [ImageClassification.of(image).model_dump() for image in classified.images]
