"""Saved concepts: `grn concept save|list|show|rename|refine|delete`, what `/concepts`
answers, from the model card, vector store and SQL of the settings
(`service.usecases.saved_concepts`) or from a running service with --url
(`service.cli.remote`; the writes need GRN_API_KEY there)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

import typer

from service.cli.app import (
    DatabaseOpt,
    JsonOpt,
    UrlOpt,
    app,
    engine,
    fail,
    message,
    print_json,
    print_table,
    scene_ids,
    usage_error,
    user_errors,
)

concept_app = typer.Typer(
    help="Saved concepts, taught by example scenes: save, list, show, rename, refine, delete.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(concept_app, name="concept")

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The concept's name.")]
PositiveOpt = Annotated[
    list[str] | None,
    typer.Option("--positive", metavar="ID", help="A scene that shows the concept (repeat)."),
]
NegativeOpt = Annotated[
    list[str] | None,
    typer.Option("--negative", metavar="ID", help="A scene that does not: a wrong hit (repeat)."),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        help="The probe's score from which a scene shows the concept (default 0.5; about 1: "
        "like the positives, about 0: not)."
    ),
]


@concept_app.command("save")
def save(
    name: NameArg,
    positive: PositiveOpt = None,
    negative: NegativeOpt = None,
    threshold: ThresholdOpt = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Teach a concept by --positive scenes (and --negative ones) and save it as NAME, as
    POST /concepts does; then `grn concept list` counts its scenes and the API's `concepts`
    filter keeps them."""
    positives, negatives = scene_ids("--positive", positive), scene_ids("--negative", negative)
    if not positives:
        usage_error("give at least one --positive scene")
    fields = {"name": name, "positives": positives, "negatives": negatives}
    body = _checked("ConceptIn", fields | ({} if threshold is None else {"threshold": threshold}))
    _answer(body, as_json, url, database_url, "POST", "/concepts", lambda: _save_here(body))


@concept_app.command("list")
def list_concepts(
    as_json: JsonOpt = False, url: UrlOpt = None, database_url: DatabaseOpt = None
) -> None:
    """Every saved concept with the scenes it finds (at or above its threshold) and the model
    it was fitted with, as GET /concepts answers; a table, or --json."""

    def here(snapshot: Any, catalog: Any, store: Any) -> dict[str, Any]:
        from service.api.schemas.saved_concepts import ConceptOut, ConceptsResponse
        from service.usecases.saved_concepts import concept_facets

        facets = concept_facets(snapshot, catalog, store)
        return ConceptsResponse(
            concepts=[ConceptOut.of(f) for f in facets], model_version=snapshot.model_version
        ).model_dump(mode="json")

    body = _asked(url, database_url, "GET", "/concepts", None, here)
    if as_json:
        print_json(body)
        return
    if not body["concepts"]:
        typer.echo("no saved concept: `grn concept save NAME --positive ID` saves one", err=True)
        return
    rows = [
        [c["name"], "stale" if c["stale"] else c["count"], c["threshold"], len(c["positives"]),
         len(c["negatives"]), c["model_version"]]
        for c in body["concepts"]
    ]  # fmt: skip
    print_table(["name", "scenes", "threshold", "positives", "negatives", "model"], rows,
                right="scenes threshold positives negatives")  # fmt: skip


@concept_app.command("show")
def show(
    name: NameArg, as_json: JsonOpt = False, url: UrlOpt = None, database_url: DatabaseOpt = None
) -> None:
    """One saved concept, as GET /concepts/NAME answers."""

    def here(snapshot: Any, catalog: Any, store: Any) -> dict[str, Any]:
        from service.api.schemas.saved_concepts import ConceptOut
        from service.usecases.saved_concepts import concept_facet

        return ConceptOut.of(concept_facet(snapshot, catalog, store, store.get(name))).model_dump(
            mode="json"
        )

    _print(_asked(url, database_url, "GET", _path(name), None, here), as_json)


@concept_app.command("rename")
def rename(
    name: NameArg,
    new_name: Annotated[str, typer.Argument(metavar="NEW_NAME", help="Its new name.")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Rename a saved concept (PATCH /concepts/NAME with a name)."""
    body = _checked("ConceptPatch", {"name": new_name})
    _answer(
        body, as_json, url, database_url, "PATCH", _path(name), lambda: _refine_here(name, body)
    )


@concept_app.command("refine")
def refine(
    name: NameArg,
    positive: PositiveOpt = None,
    negative: NegativeOpt = None,
    remove: Annotated[
        list[str] | None,
        typer.Option("--remove", metavar="ID", help="A scene no longer judged (repeat)."),
    ] = None,
    threshold: ThresholdOpt = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Judge more scenes for a saved concept (a --negative for each wrong hit, a --positive
    for each missed one), forget some (--remove), or set its --threshold; changed examples
    re-fit it (PATCH /concepts/NAME)."""
    fields: dict[str, Any] = {
        "add_positives": scene_ids("--positive", positive),
        "add_negatives": scene_ids("--negative", negative),
        "remove": scene_ids("--remove", remove),
    }
    fields = {key: value for key, value in fields.items() if value}
    if threshold is not None:
        fields["threshold"] = threshold
    if not fields:
        usage_error("give --positive, --negative, --remove or --threshold")
    body = _checked("ConceptPatch", fields)
    _answer(
        body, as_json, url, database_url, "PATCH", _path(name), lambda: _refine_here(name, body)
    )


@concept_app.command("delete")
def delete(name: NameArg, url: UrlOpt = None, database_url: DatabaseOpt = None) -> None:
    """Forget a saved concept (DELETE /concepts/NAME)."""
    try:
        if url is not None:
            from service.cli.remote import remote_send

            remote_send(url, "DELETE", _path(name))
        else:
            from service.storage.concepts import ConceptStore

            ConceptStore(engine(database_url)).delete(name)
    except user_errors(LookupError, OSError) as exc:
        fail(exc)
    typer.echo(f"deleted concept {name}", err=True)


def _path(name: str) -> str:
    return f"/concepts/{quote(name, safe='')}"


def _checked(schema: str, fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` checked as the route checks its body (a wrong value is a usage error naming
    it), as JSON."""
    from service.api.schemas import saved_concepts

    try:
        checked = getattr(saved_concepts, schema).model_validate(fields)
    except ValueError as exc:
        usage_error(message(exc))
    return dict(checked.model_dump(mode="json", exclude_unset=True))


def _save_here(body: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    def here(snapshot: Any, catalog: Any, store: Any) -> dict[str, Any]:
        from service.api.schemas.saved_concepts import ConceptIn, ConceptOut
        from service.usecases.saved_concepts import concept_facet, save_concept

        given = ConceptIn.model_validate(body)
        concept = save_concept(
            snapshot, catalog, store, given.name, given.positives, given.negatives,
            given.threshold,
        )  # fmt: skip
        return ConceptOut.of(concept_facet(snapshot, catalog, store, concept)).model_dump(
            mode="json"
        )

    return here


def _refine_here(name: str, body: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    def here(snapshot: Any, catalog: Any, store: Any) -> dict[str, Any]:
        from service.api.schemas.saved_concepts import ConceptOut, ConceptPatch
        from service.usecases.saved_concepts import concept_facet, refine_concept

        change = ConceptPatch.model_validate(body).to_change()
        concept = refine_concept(snapshot, catalog, store, name, change)
        return ConceptOut.of(concept_facet(snapshot, catalog, store, concept)).model_dump(
            mode="json"
        )

    return here


def _answer(
    body: dict[str, Any], as_json: bool, url: str | None, database_url: str | None,
    method: str, path: str, here: Callable[[], Callable[..., dict[str, Any]]],
) -> None:  # fmt: skip
    """Send `body` to the service, or do it here; print the concept it answers."""
    _print(_asked(url, database_url, method, path, body, here()), as_json)


def _asked(
    url: str | None, database_url: str | None, method: str, path: str,
    body: dict[str, Any] | None, here: Callable[..., dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """The service's answer at `url` to `method` `path` with `body`, or `here(snapshot,
    catalog, store)` on the model, store and SQL of the settings; a one-line error (exit 1)
    for what cannot be done."""
    from service.storage.scene_reading import SchemaNotCurrentError
    from service.usecases.local_search import NothingToSearchError
    from service.usecases.saved_concepts import ConceptStaleError

    try:
        if url is not None:
            from service.cli.remote import remote_send

            return remote_send(url, method, path, body)
        from service.settings import get_settings
        from service.storage.catalog import Catalog
        from service.storage.concepts import ConceptStore
        from service.usecases.local_search import with_local_index

        connected = engine(database_url)
        return with_local_index(
            get_settings(),
            lambda snapshot: here(snapshot, Catalog(connected), ConceptStore(connected)),
        )
    except user_errors(
        LookupError, OSError, NothingToSearchError, SchemaNotCurrentError, ConceptStaleError
    ) as exc:  # a concept or scene not found, a name taken, bad examples: one line
        fail(exc)


def _print(concept: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(concept)
        return
    found = "stale (refine it)" if concept["stale"] else f"{concept['count']} scenes"
    typer.echo(
        f"{concept['name']}: {found} of {concept['scenes']} at or above {concept['threshold']}; "
        f"{len(concept['positives'])} positives, {len(concept['negatives'])} negatives; "
        f"model {concept['model_version']}"
    )
