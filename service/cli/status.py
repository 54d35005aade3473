"""`grn status`: model, index and schema versions, scene counts, and what is stale."""

from __future__ import annotations

import typer

from service.cli.app import DatabaseOpt, JsonOpt, app, engine, print_json


@app.command()
def status(database_url: DatabaseOpt = None, as_json: JsonOpt = False) -> None:
    """Model, index and schema versions, counts, and what is stale (exit 1 when anything
    is)."""
    from service.usecases.status import collect_status, describe

    report = collect_status(engine(database_url))
    if as_json:
        print_json(report)
    else:
        for key, value in describe(report):
            typer.echo(f"{key:>16}: {value}")
        for problem in report["stale"]:
            typer.echo(f"           stale: {problem}")
        if not report["stale"]:
            typer.echo("           stale: nothing")
    if report["stale"]:
        raise typer.Exit(code=1)
