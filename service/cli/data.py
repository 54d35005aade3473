"""Data commands: the SQL schema (`grn db`), importing an archive, cutting rasters into an
archive (`grn tile`) and the web page's browser libraries (`grn assets`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.app import (
    DatabaseOpt,
    JsonOpt,
    LabelsOpt,
    QuietOpt,
    app,
    db_app,
    engine,
    fail,
    print_json,
    split_commas,
    store_settings,
    usage_error,
    user_errors,
)

app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: DatabaseOpt = None,
) -> None:
    """Bring the schema up to the newest revision (or REVISION)."""
    from service.storage.migrate import current_revision, upgrade

    connected = engine(database_url)
    _ensure_sqlite_folder(connected)
    upgrade(connected, revision)
    typer.echo(f"database at revision {current_revision(connected)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; 'base' drops every table.")],
    database_url: DatabaseOpt = None,
) -> None:
    """Take the schema back to REVISION."""
    from service.storage.migrate import current_revision, downgrade

    connected = engine(database_url)
    downgrade(connected, revision)
    typer.echo(f"database at revision {current_revision(connected) or 'base'}")


@db_app.command("current")
def db_current(database_url: DatabaseOpt = None, as_json: JsonOpt = False) -> None:
    """The revision the database is at, and the newest one (exit 1 when the database does
    not answer)."""
    from service.storage.migrate import current_revision, head_revision

    try:
        revision = current_revision(engine(database_url))
    except Exception as exc:  # the database is down, or the URL names none
        fail(f"the database does not answer ({type(exc).__name__}: {exc})")
    newest = head_revision()
    if as_json:
        print_json({"revision": revision, "newest": newest, "current": revision == newest})
    else:
        typer.echo(f"database at {revision or 'base'}; newest {newest}")


def _ensure_sqlite_folder(connected: Any) -> None:
    database = connected.url.database
    if connected.dialect.name == "sqlite" and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


BULK_HELP = (
    "Read sizes, checksums and added times from ARCHIVE/scenes.csv instead of decoding each "
    "image, write in large batches, then index the vectors the archive carries (ARCHIVE/vectors, "
    "e.g. from `grn synth`)."
)
BulkOpt = Annotated[bool, typer.Option("--bulk", help=BULK_HELP)]
BulkModelOpt = Annotated[Path | None, typer.Option(help="With --bulk: default GRN_MODEL_PATH.")]
BulkIndexRootOpt = Annotated[Path | None, typer.Option(help="With --bulk: default GRN_INDEX_ROOT.")]
NoIndexOpt = Annotated[bool, typer.Option("--no-index", help="With --bulk: write SQL only.")]
BatchOpt = Annotated[int, typer.Option(min=1, help="With --bulk: scenes a transaction.")]


StacOpt = Annotated[
    str | None,
    typer.Option(
        "--stac", metavar="PATH_OR_URL",
        help="Import a STAC catalog, collection or item collection instead of a folder.",
    ),
]  # fmt: skip
AssetOpt = Annotated[
    str | None, typer.Option(help="With --stac: the asset to tile (default: visual).")
]
MaxCloudOpt = Annotated[
    float | None,
    typer.Option(help="With --stac: leave out items whose eo:cloud_cover is above this."),
]
TilesOpt = Annotated[
    Path | None,
    typer.Option(help="With --stac: where the items' tiles go (default GRN_STORE_DIR/stac)."),
]


@app.command("import")
def import_(
    archive: Annotated[Path | None, typer.Argument(help="Archive folder.")] = None,
    labels: LabelsOpt = None,
    database_url: DatabaseOpt = None,
    quiet: QuietOpt = False,
    bulk: BulkOpt = False,
    model: BulkModelOpt = None,
    index_root: BulkIndexRootOpt = None,
    no_index: NoIndexOpt = False,
    batch: BatchOpt = 20_000,
    stac: StacOpt = None,
    asset: AssetOpt = None,
    max_cloud: MaxCloudOpt = None,
    tiles: TilesOpt = None,
) -> None:
    """Import an archive's scenes and labels into SQL (again: adds only what is new), or with
    --stac a STAC catalog's items, each one's raster tiled as `grn tile` tiles it."""
    from model.archive import ArchiveError
    from service.storage.scene_reading import SchemaNotCurrentError
    from service.usecases.importer import import_to_current_schema

    if stac is not None:
        if archive is not None or labels is not None or bulk:
            usage_error("give an archive folder or --stac, not both (--labels, --bulk: folders)")
        _stac_import(stac, database_url, quiet, asset, max_cloud, tiles)
        return
    if asset is not None or max_cloud is not None or tiles is not None:
        usage_error("--asset, --max-cloud and --tiles go with --stac")
    if archive is None:
        usage_error("give an archive folder, or --stac PATH_OR_URL")
    if bulk:
        _bulk_import(archive, labels, database_url, quiet, model, index_root, no_index, batch)
        return
    if model or index_root or no_index or batch != 20_000:
        usage_error("--model, --index-root, --no-index and --batch go with --bulk")
    try:
        report = import_to_current_schema(engine(database_url), archive, labels, progress=not quiet)
    except (ArchiveError, SchemaNotCurrentError) as exc:
        fail(exc)
    for line in report.summary():
        typer.echo(line)
    for broken in report.broken:
        typer.echo(f"  skipped {broken.path}: {broken.error}", err=True)


def _stac_import(
    source: str, database_url: str | None, quiet: bool, asset: str | None,
    max_cloud: float | None, tiles: Path | None,
) -> None:  # fmt: skip
    """`grn import --stac` (service/usecases/stac_import.py): each item that could not be
    imported on stderr; exit 1 when none could."""
    from service.settings import get_settings
    from service.storage.scene_reading import SchemaNotCurrentError
    from service.usecases.stac_import import import_stac, tiles_folder

    try:
        report = import_stac(
            engine(database_url), source, tiles_folder(get_settings(), tiles), asset=asset,
            max_cloud=max_cloud, progress=not quiet,
        )  # fmt: skip
    except user_errors(SchemaNotCurrentError, OSError) as exc:
        fail(exc)
    for line in report.summary():
        typer.echo(line)
    for line in report.problem_lines():
        typer.echo(line, err=True)
    if report.failure:
        fail(report.failure)


def _bulk_import(
    archive: Path, labels: Path | None, database_url: str | None, quiet: bool,
    model: Path | None, index_root: Path | None, no_index: bool, batch: int,
) -> None:  # fmt: skip
    """`grn import --bulk` (service/usecases/bulk_import.py)."""
    from index.given_vectors import GivenVectorsError
    from model.archive import ArchiveError
    from service.storage.catalog_archive import EmptyCatalogError
    from service.storage.migrate import current_revision, head_revision
    from service.storage.scene_reading import SchemaNotCurrentError
    from service.usecases.bulk_import import (
        CarriedVectorsError,
        bulk_import,
        carried_vectors_model,
        index_catalog,
    )
    from service.usecases.reindex import IndexWriteError

    settings = store_settings(index_root)
    model_path = model or settings.model.model_path
    connected = engine(database_url)
    try:
        if current_revision(connected) != head_revision():
            raise SchemaNotCurrentError(
                "the database schema is not current; run `grn db upgrade` first"
            )
        carried = not no_index and carried_vectors_model(archive, model_path)
        report = bulk_import(connected, archive, labels, batch=batch, progress=not quiet)
        for line in report.summary():
            typer.echo(line)
        if carried:
            outcome = index_catalog(settings, connected, model_path, progress=not quiet)
            typer.echo(
                outcome.report.summary()
                if outcome.report is not None
                else f"the index in {outcome.location} already holds SQL's scenes"
            )
        elif not no_index:
            typer.echo("the archive carries no vectors: `grn reindex --catalog` embeds its images")
    except user_errors(
        ArchiveError, SchemaNotCurrentError, CarriedVectorsError, EmptyCatalogError,
        IndexWriteError, GivenVectorsError,
    ) as exc:  # fmt: skip
        fail(exc)


@app.command()
def assets(
    asset_dir: Annotated[
        Path | None, typer.Option(help="Where to install them (default GRN_ASSET_DIR).")
    ] = None,
) -> None:
    """Install the web page's browser libraries (Leaflet, for the map) from the npm registry,
    checked against their pinned hashes; nothing to do when they are there."""
    from service.api.assets import PACKAGES, AssetError, fetch
    from service.settings import get_settings

    folder = asset_dir or get_settings().page.asset_dir
    for package in PACKAGES:
        try:
            where = fetch(folder, package)
        except AssetError as exc:
            fail(exc)
        typer.echo(f"{package.name} {package.version} in {where}")


@app.command()
def tile(
    rasters: Annotated[
        list[Path], typer.Argument(help="GeoTIFF files (with a CRS).", metavar="RASTER...")
    ],
    out: Annotated[Path, typer.Option(help="New archive folder: images/ and labels.csv.")],
    tile_px: Annotated[
        int | None, typer.Option(help="Tile side in source pixels (default 256).")
    ] = None,
    tile_m: Annotated[
        float | None,
        typer.Option(help="Tile side in metres on the ground instead, resampled to --out-size."),
    ] = None,
    out_size: Annotated[
        int | None,
        typer.Option(help="Tile image side in pixels (default: --tile-px, or 256 with --tile-m)."),
    ] = None,
    overlap: Annotated[
        float, typer.Option(help="Fraction of a tile shared with the next, in [0, 1).")
    ] = 0.0,
    bands: Annotated[
        str | None,
        typer.Option(help="Bands read as R,G,B, from 1 (default 1,2,3; one band: grey)."),
    ] = None,
    max_nodata: Annotated[
        float, typer.Option(help="Skip tiles with more than this fraction of no-data.")
    ] = 0.5,
    split: Annotated[str, typer.Option(help="The tiles' split: train, val or test.")] = "train",
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace OUT when it already holds files.")
    ] = False,
) -> None:
    """Cut georeferenced rasters into scenes: an archive folder of PNG tiles whose labels.csv
    holds each tile's footprint (WGS84), ready for `grn import`. Partial edge tiles and
    tiles mostly no-data are left out; nothing is written when a raster fails."""
    from model.tile_archive import tile_rasters
    from model.tiling import TileGrid

    try:
        chosen = None if bands is None else [int(b) for b in split_commas([bands])]
    except ValueError:
        usage_error(f"--bands takes band numbers such as 1,2,3; found {bands}")
    grid = TileGrid(
        tile_px=tile_px, tile_m=tile_m, overlap=overlap, out_size=out_size, bands=chosen
    )
    try:
        report = tile_rasters(
            rasters, out, grid, max_nodata=max_nodata, split=split, replace=replace
        )
    except user_errors(OSError) as exc:
        fail(exc)
    for raster in report.rasters:
        typer.echo(
            f"  {raster.path.name}: {raster.written} tiles ({raster.skipped_nodata} mostly "
            f"no-data skipped)"
        )
    typer.echo(
        f"wrote {report.written} tiles ({report.skipped_nodata} skipped for no-data) from "
        f"{len(report.rasters)} rasters in {report.seconds:.1f} s "
        f"({report.tiles_per_s:.1f} scenes/s) into {out}; next: grn import {out}"
    )
