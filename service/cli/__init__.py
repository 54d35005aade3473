"""`grn`, the admin command line: database, import, train, evaluate, embed, reindex, serve
and status. Each command is a thin wrapper over the library functions; settings not given as
options come from the `GRN_` environment variables (service/settings.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from model.choices import BACKBONE_NAMES, LOSS_NAMES

app = typer.Typer(
    help="GRN scene retrieval: import, train, index and serve remote-sensing archives.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: Rich printed every flag as `--quiet <bool>`
)
db_app = typer.Typer(
    help="The SQL schema: upgrade, downgrade, current.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(db_app, name="db")
model_app = typer.Typer(
    help="Ship a head-mode model without its backbone: pack, unpack.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(model_app, name="model")


def user_errors(*more: type[BaseException]) -> tuple[type[BaseException], ...]:
    """What a command reports as one line (exit 2) instead of a traceback. Imported when an
    exception is being matched, so that starting the CLI loads neither torch nor FAISS."""
    from index.stores.base import (
        IndexModelMismatchError,
        IndexNotReadyError,
        VectorStoreUnavailableError,
    )
    from model.archive import ArchiveError
    from model.backbones import MissingWeightsError
    from model.card import ModelFileError
    from model.imageio import InvalidImageError

    return (
        ArchiveError, ModelFileError, InvalidImageError, MissingWeightsError, ValueError,
        IndexNotReadyError, IndexModelMismatchError, VectorStoreUnavailableError, *more,
    )  # fmt: skip


ArchiveOpt = Annotated[Path, typer.Option("--archive", help="Archive folder holding labels.csv.")]
ArchiveOrCatalogOpt = Annotated[
    Path | None, typer.Option("--archive", help="Archive folder holding labels.csv (or --catalog).")
]
LabelsOpt = Annotated[
    Path | None, typer.Option("--labels", help="Labels file (default ARCHIVE/labels.csv).")
]
ModelOpt = Annotated[
    Path,
    typer.Option("--model", help="Model file, or the training folder holding model.safetensors."),
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
SkipBrokenOpt = Annotated[
    bool, typer.Option("--skip-broken", help="Skip unreadable images and list them in a report.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
MilvusOpt = Annotated[
    str | None,
    typer.Option(
        "--milvus",
        help="Use the Milvus collection at this URI (a server, or a file: Milvus Lite) as the "
        "vector store, as GRN_VECTOR_STORE=milvus GRN_MILVUS_URI=URI; INDEX-ROOT then only "
        "holds the embedding shards.",
    ),
]
CollectionOpt = Annotated[
    str | None, typer.Option(help="Milvus collection (default GRN_MILVUS_COLLECTION).")
]


def _fail(exc: BaseException) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _show_log(name: str) -> None:
    """Print a library logger's INFO lines on stderr, as plain lines."""
    import logging

    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Training folder: checkpoint, logs, curve.")],
    archive: ArchiveOrCatalogOpt = None,
    catalog: Annotated[
        bool,
        typer.Option(
            "--catalog",
            help="Train on the scenes and labels SQL holds now (corrections and scenes added "
            "through the API included), snapshotted into OUT/catalog.",
        ),
    ] = False,
    database_url: DatabaseOpt = None,
    labels: LabelsOpt = None,
    mode: Annotated[
        str, typer.Option(help="head: frozen backbone (CPU-friendly); full: fine-tune.")
    ] = "head",
    backbone: Annotated[
        str,
        typer.Option(
            help=f"One of: {', '.join(BACKBONE_NAMES)}; or several joined by '+' "
            "(efficientnet_lite0+efficientnet_lite2: both side by side, their features joined)."
        ),
    ] = "efficientnet_lite0",
    pretrained: Annotated[bool, typer.Option(help="Start from ImageNet weights.")] = True,
    loss: Annotated[str, typer.Option(help=f"One of: {', '.join(LOSS_NAMES)}.")] = "sndl_bce",
    epochs: Annotated[int | None, typer.Option(help="Default: 130 (full), 60 (head).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default: 256.")] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="sgd (default, the paper's) or adamw.")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Default: 0.1.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Default: 1e-4.")] = None,
    lr_step: Annotated[
        int | None, typer.Option(help="Halve the lr every N epochs. Default: 30 (full), 20 (head).")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="SNDL temperature. Default: 0.05 (full), 0.1 (head).")
    ] = None,
    bce_weight: Annotated[
        float | None, typer.Option(help="Weight of BCE in sndl_bce. Default: 1 (full), 3 (head).")
    ] = None,
    distill: Annotated[
        float | None,
        typer.Option(
            help="Weight of keeping the frozen backbone's neighbourhoods, so the embedding "
            "holds up on content the labels do not describe (0: off). Default: 0 (full), "
            "0.2 (head)."
        ),
    ] = None,
    distill_temperature: Annotated[
        float | None,
        typer.Option(help="The backbone's side of --distill. Default: 0.05 (full), 0.1 (head)."),
    ] = None,
    use_unlabelled: Annotated[
        bool,
        typer.Option(
            help="With --distill: unlabelled train scenes join each batch for the "
            "distillation term (they train nothing else)."
        ),
    ] = True,
    embedding_dim: Annotated[int | None, typer.Option(help="Default: 128.")] = None,
    label_blend: Annotated[
        float | None,
        typer.Option(
            help="Share of the label probabilities' cosine in what the index ranks by "
            "(0 to below 1, 0: the embedding alone; docs/results.md). "
            "Default: 0 (full), 0.1 (head)."
        ),
    ] = None,
    hidden_dim: Annotated[
        int | None,
        typer.Option(
            help="Hidden layer before the embedding (0: none). Default: 0 (full), 512 (head)."
        ),
    ] = None,
    dropout: Annotated[float | None, typer.Option(help="Default: 0 (full), 0.3 (head).")] = None,
    input_size: Annotated[int | None, typer.Option(help="Default: 256.")] = None,
    dihedral: Annotated[
        bool | None,
        typer.Option("--dihedral", help="Full mode: also vertical flips and 90-degree rotations."),
    ] = None,
    crop_scale: Annotated[
        float | None,
        typer.Option(help="Full mode: random resized crop down to this area (default 1: off)."),
    ] = None,
    feature_views: Annotated[
        int | None,
        typer.Option(help="Head mode: symmetry views per training scene (1, 2, 4, 8; default 8)."),
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Feature cache (default ~/.cache/grn/features).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Default: 0.")] = None,
    device: DeviceOpt = "auto",
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop after this much training time; rerun to resume.")
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Ignore a saved state in OUT and start over.")
    ] = False,
    drop_last: Annotated[
        bool,
        typer.Option(
            "--drop-last",
            help="Skip each epoch's short last batch (always so under torchrun).",
        ),
    ] = False,
    skip_broken: SkipBrokenOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a GRN model; an interrupted run resumes where it stopped when run again.
    Under `torchrun --nproc_per_node N` it trains on N processes (DDP; NCCL on GPUs, gloo on
    CPUs), each with the whole memory bank. Only the labelled scenes of the train and val
    splits are used; an archive with none stops with what it needs."""
    from model.train import fit
    from model.train_config import config_for_mode

    _show_log("grn.train")  # how many scenes are labelled and how many are left out
    archive = _training_archive(archive, catalog, labels, database_url, out)
    try:
        config = config_for_mode(
            mode,
            str(archive),
            str(out),
            labels_csv=str(labels) if labels else None,
            backbone=backbone,
            pretrained=pretrained,
            loss=loss,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            lr_step=lr_step,
            temperature=temperature,
            bce_weight=bce_weight,
            distill_weight=distill,
            distill_temperature=distill_temperature,
            use_unlabelled=use_unlabelled,
            embedding_dim=embedding_dim,
            label_blend=label_blend,
            hidden_dim=hidden_dim,
            dropout=dropout,
            input_size=input_size,
            dihedral=dihedral,
            crop_scale=crop_scale,
            feature_views=feature_views,
            cache_dir=str(cache_dir) if cache_dir else None,
            seed=seed,
            device=device,
            max_minutes=max_minutes,
            drop_last=drop_last or None,
            skip_broken=skip_broken,
            progress=not quiet,
        )
        result = fit(config, resume=not restart)
    except user_errors() as exc:
        _fail(exc)
        return
    best = result.best_val.get("val_knn_sample_f1", float("nan"))
    typer.echo(
        f"best epoch {result.best_epoch}: val k-NN sample-F1 {best:.4f}; model {result.model_path}"
    )
    if result.broken:
        typer.echo(
            f"skipped {len(result.broken)} unreadable files, listed in "
            f"{Path(out) / 'train_summary.json'}",
            err=True,
        )


def _training_archive(
    archive: Path | None, catalog: bool, labels: Path | None, database_url: str | None, out: Path
) -> Path:
    """The archive folder to train on: the one given, or a snapshot of SQL's scenes."""
    from service.storage.catalog_archive import EmptyCatalogError, catalog_archive, write_snapshot

    if (archive is None) == (not catalog):
        _fail(ValueError("give the scenes to train on: --archive FOLDER or --catalog"))
    if not catalog:
        assert archive is not None
        return archive
    if labels is not None:
        _fail(ValueError("--labels goes with --archive, not --catalog"))
    try:
        return write_snapshot(catalog_archive(_engine(database_url)), Path(out) / "catalog")
    except EmptyCatalogError as exc:
        _fail(exc)
        raise


@app.command()
def evaluate(
    model: ModelOpt,
    archive: ArchiveOpt,
    out: Annotated[
        Path, typer.Option(help="Report folder: metrics.json, report.md, examples.png.")
    ],
    labels: LabelsOpt = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int | None, typer.Option()] = None,
    skip_broken: SkipBrokenOpt = False,
    backbone: Annotated[
        bool,
        typer.Option(
            help="Score the frozen ImageNet backbone on the same queries (one more pass "
            "over the scenes whose features are not cached)."
        ),
    ] = True,
    quiet: QuietOpt = False,
) -> None:
    """Retrieval and classification metrics: archive = labelled train scenes, queries =
    labelled test scenes; split into content the model trained on and content it never saw
    (left-out folders, or another archive, whose labels may differ from the model's), each
    against the frozen backbone."""
    from model.evaluate import evaluate as run_evaluation

    try:
        metrics = run_evaluation(
            model,
            archive,
            out,
            labels_csv=labels,
            device=device,
            batch_size=batch_size,
            skip_broken=skip_broken,
            progress=not quiet,
            backbone=backbone,
        )
    except user_errors() as exc:
        _fail(exc)
        return
    typer.echo((out / "report.md").read_text())
    if metrics["broken_files"]:
        typer.echo(f"skipped {len(metrics['broken_files'])} unreadable files; see metrics.json")


@app.command()
def embed(
    model: ModelOpt,
    archive: ArchiveOpt,
    out: Annotated[Path, typer.Option(help="Output .npz: names, embeddings, probabilities.")],
    split: Annotated[str, typer.Option(help="train, val, test or all.")] = "all",
    labels: LabelsOpt = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int | None, typer.Option()] = None,
    skip_broken: SkipBrokenOpt = False,
    quiet: QuietOpt = False,
    ray: Annotated[
        bool, typer.Option("--ray", help="Run as a Ray Data pipeline; OUT is a folder.")
    ] = False,
    workers: Annotated[int, typer.Option(help="Embedding actors with --ray.")] = 1,
) -> None:
    """Embed the scenes of one split into an .npz file; with --ray, every scene of the archive
    into Parquet shards in the folder OUT, on Ray (this machine, or RAY_ADDRESS's cluster)."""
    if ray:
        from index.ray_embed import ray_embed

        try:
            shards = ray_embed(
                model,
                archive,
                out,
                labels_csv=labels,
                workers=workers,
                batch_size=batch_size or 8,
                device="cuda" if device in ("auto", "cuda") and _has_cuda() else device,
            )
        except user_errors() as exc:
            _fail(exc)
            return
        typer.echo(
            f"embedded {shards.embedded} scenes ({shards.skipped} already in {out}) with "
            f"{shards.workers} workers in {shards.seconds:.1f} s "
            f"({shards.images_per_s:.1f} images/s)"
        )
        return
    from model.embedding import embed_archive

    try:
        embedded, broken = embed_archive(
            model,
            archive,
            out,
            split=split,
            labels_csv=labels,
            device=device,
            batch_size=batch_size,
            skip_broken=skip_broken,
            progress=not quiet,
        )
    except user_errors() as exc:
        _fail(exc)
        return
    if broken:
        report = out.with_suffix(".broken.json")
        report.write_text(json.dumps([b.__dict__ for b in broken], indent=2) + "\n")
        typer.echo(f"skipped {len(broken)} unreadable files, listed in {report}", err=True)
    typer.echo(
        f"embedded {len(embedded.positions)} scenes in {embedded.seconds:.1f} s "
        f"({embedded.images_per_s:.1f} images/s, {embedded.engine}) into {out}"
    )


@app.command()
def reindex(
    model: ModelOpt,
    archive: ArchiveOrCatalogOpt = None,
    catalog: Annotated[
        bool,
        typer.Option(
            "--catalog",
            help="Index the scenes SQL holds (every import and the scenes added through the "
            "API, as corrected), instead of an archive folder.",
        ),
    ] = False,
    database_url: DatabaseOpt = None,
    index_root: Annotated[
        Path | None,
        typer.Option(help="Index folder: versions/, current, work/ (default GRN_INDEX_ROOT)."),
    ] = None,
    labels: LabelsOpt = None,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="Add new scenes and drop removed ones only.")
    ] = False,
    factory: Annotated[
        str,
        typer.Option(
            help="FAISS factory string (Flat, IVF1024,Flat, IVF4096,PQ32, HNSW32) or auto."
        ),
    ] = "auto",
    memory_budget_gb: Annotated[float, typer.Option(help="Memory the index may use (auto).")] = 8.0,
    keep: Annotated[int, typer.Option(help="Index versions kept on disk.")] = 3,
    nprobe: Annotated[int, typer.Option(help="IVF lists searched per query.")] = 64,
    shard_size: Annotated[int, typer.Option(help="Scenes per embedding shard.")] = 1024,
    device: DeviceOpt = "auto",
    skip_broken: SkipBrokenOpt = False,
    milvus: MilvusOpt = None,
    collection: CollectionOpt = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Rebuild a store that already holds scenes (Milvus refuses otherwise) into a "
            "new version, and put it in service when done.",
        ),
    ] = False,
    if_stale: Annotated[
        bool,
        typer.Option(
            "--if-stale",
            help="Do nothing when the version in service was built by this model over exactly "
            "these scenes.",
        ),
    ] = False,
    quiet: QuietOpt = False,
    ray: Annotated[
        bool,
        typer.Option("--ray", help="Embed on Ray (this machine, or the cluster at RAY_ADDRESS)."),
    ] = False,
    workers: Annotated[int, typer.Option(help="Embedding actors with --ray.")] = 1,
) -> None:
    """Embed the archive (a folder, or with --catalog the scenes SQL holds) and put a new
    version of its vectors in service, in the vector store of GRN_VECTOR_STORE (FAISS index
    versions under INDEX-ROOT by default)."""
    from index.stores import ReindexOptions, is_current, open_store
    from index.stores.faiss_build import ReindexSettings
    from service.storage.catalog_archive import EmptyCatalogError, catalog_archive

    if (archive is None) == (not catalog):
        _fail(ValueError("give the scenes to index: --archive FOLDER or --catalog"))
        return
    source: Any = archive
    if catalog:
        if labels is not None:
            _fail(ValueError("--labels goes with --archive, not --catalog"))
            return
        try:
            source = catalog_archive(_engine(database_url))
        except EmptyCatalogError as exc:
            _fail(exc)
            return

    store = open_store(_store_settings(index_root, milvus, collection))
    build = ReindexSettings(
        factory=factory,
        memory_budget_gb=memory_budget_gb,
        keep=keep,
        nprobe=nprobe,
        shard_size=shard_size,
    )
    options = ReindexOptions(
        labels_csv=labels,
        incremental=incremental,
        replace=replace,
        build=build,
        device=device,
        skip_broken=skip_broken,
        progress=not quiet,
        ray_workers=workers if ray else None,
    )
    try:
        if if_stale and is_current(store, model, source, labels_csv=labels):
            typer.echo(f"the index in {store.location} is current for this model and archive")
            return
        report = store.reindex(model, source, options)
    except user_errors() as exc:
        _fail(exc)
        return
    except OSError as exc:  # disk full, size limit, permissions: nothing was put in service
        _fail(
            OSError(
                f"the new index could not be written: {exc}; "
                f"the index in service in {store.location} is unchanged"
            )
        )
        return
    finally:
        store.close()
    typer.echo(report.summary())
    if report.broken:
        typer.echo(f"skipped {len(report.broken)} unreadable files:", err=True)
        for broken in report.broken:
            typer.echo(f"  {broken.path}: {broken.error}", err=True)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _engine(database_url: str | None) -> Any:
    from service.settings import get_settings
    from service.storage.db import make_engine

    return make_engine(database_url or get_settings().database_url)


DatabaseOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL (default: GRN_DATABASE_URL)."),
]


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: DatabaseOpt = None,
) -> None:
    """Bring the schema up to the newest revision (or REVISION)."""
    from service.storage.migrate import current_revision, upgrade

    engine = _engine(database_url)
    _ensure_sqlite_folder(engine)
    upgrade(engine, revision)
    typer.echo(f"database at revision {current_revision(engine)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; 'base' drops every table.")],
    database_url: DatabaseOpt = None,
) -> None:
    """Take the schema back to REVISION."""
    from service.storage.migrate import current_revision, downgrade

    engine = _engine(database_url)
    downgrade(engine, revision)
    typer.echo(f"database at revision {current_revision(engine) or 'base'}")


@db_app.command("current")
def db_current(database_url: DatabaseOpt = None) -> None:
    """The revision the database is at, and the newest one."""
    from service.storage.migrate import current_revision, head_revision

    engine = _engine(database_url)
    typer.echo(f"database at {current_revision(engine) or 'base'}; newest {head_revision()}")


@model_app.command("pack")
def model_pack(
    model: ModelOpt,
    out: Annotated[Path, typer.Option(help="The heads file to write (.safetensors).")],
) -> None:
    """Write a head-mode model's heads, card and backbone digest, without the backbone."""
    from model.heads import pack_heads

    try:
        card = pack_heads(model, out)
    except user_errors(OSError) as exc:
        _fail(exc)
        return
    typer.echo(f"heads of {card.version} in {out} ({out.stat().st_size / 1e6:.1f} MB)")


@model_app.command("unpack")
def model_unpack(
    heads: Annotated[Path, typer.Argument(help="A heads file written by `grn model pack`.")],
    out: Annotated[Path, typer.Option(help="Training folder (or file) for model.safetensors.")],
) -> None:
    """Join shipped heads with the backbone weights installed here into a model file."""
    from model.card import MODEL_FILENAME
    from model.heads import unpack_heads

    target = out / MODEL_FILENAME if out.suffix != ".safetensors" else out
    try:
        card = unpack_heads(heads, target)
    except user_errors(OSError) as exc:
        _fail(exc)
        return
    typer.echo(f"model {card.version} ({card.backbone}, trained on {card.training.get('archive')}) "
               f"in {target}")  # fmt: skip


def _ensure_sqlite_folder(engine: Any) -> None:
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


@app.command("import")
def import_(
    archive: Annotated[Path, typer.Argument(help="Archive folder.")],
    labels: LabelsOpt = None,
    database_url: DatabaseOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Import an archive's scenes and labels into SQL (again: adds only what is new)."""
    from model.archive import ArchiveError
    from service.storage.migrate import current_revision, head_revision
    from service.usecases.importer import import_archive

    engine = _engine(database_url)
    if current_revision(engine) != head_revision():
        _fail(RuntimeError("the database schema is not current; run `grn db upgrade` first"))
    try:
        report = import_archive(engine, archive, labels, progress=not quiet)
    except ArchiveError as exc:
        _fail(exc)
        return
    typer.echo(
        f"imported {report.added} scenes ({report.skipped} already present, "
        f"{len(report.broken)} unreadable) in {report.seconds:.1f} s; import #{report.archive_id}"
    )
    if report.placed:
        typer.echo(f"  {report.placed} scenes already present gained their footprint")
    for broken in report.broken:
        typer.echo(f"  skipped {broken.path}: {broken.error}", err=True)


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

    folder = asset_dir or get_settings().asset_dir
    for package in PACKAGES:
        try:
            where = fetch(folder, package)
        except AssetError as exc:
            _fail(exc)
            return
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

    try:
        chosen = None if bands is None else [int(b) for b in _split_commas([bands])]
    except ValueError:
        _fail(ValueError(f"--bands takes band numbers such as 1,2,3; found {bands!r}"))
        return
    try:
        report = tile_rasters(
            rasters, out, tile_px=tile_px, tile_m=tile_m, overlap=overlap, out_size=out_size,
            bands=chosen, max_nodata=max_nodata, split=split, replace=replace,
        )  # fmt: skip
    except user_errors(OSError) as exc:
        _fail(exc)
        return
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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: GRN_HOST (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Default: GRN_PORT (8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default GRN_WORKERS, 1).")] = None,
) -> None:
    """Serve the HTTP API (settings from the GRN_ environment variables)."""
    import uvicorn

    from service.api.workers import check_free, reuse_port_supported, supervise
    from service.settings import get_settings

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    workers = workers or settings.workers
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        # each worker runs its own network: split the cores, not N teams on every core
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // workers))
    options: dict[str, Any] = {
        "log_level": "info",
        "access_log": False,  # the app logs one line per request, with its request id
        "timeout_keep_alive": int(settings.keep_alive_seconds),
    }
    if workers > 1 and reuse_port_supported():
        # a socket per worker, connections spread by the kernel (service/api/workers.py)
        try:
            check_free(host, port)
        except OSError as exc:
            _fail(OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"))
        typer.echo(f"serving on http://{host}:{port} (API docs at http://{host}:{port}/docs)")
        raise typer.Exit(supervise(host, port, workers, options))
    typer.echo(f"serving on http://{host}:{port} (API docs at http://{host}:{port}/docs)")
    uvicorn.run(
        "service.api.app:create_app", factory=True, host=host, port=port, workers=workers, **options
    )


def _promotion_parts(database_url: str | None, device: str) -> tuple[Any, Any, Path]:
    """The vector store, SQL's scenes as an archive, and the served model file."""
    from index.stores import open_store
    from service.settings import get_settings
    from service.storage.catalog_archive import EmptyCatalogError, catalog_archive

    settings = get_settings()
    try:
        archive = catalog_archive(_engine(database_url))
    except EmptyCatalogError as exc:
        _fail(exc)
        raise
    served = settings.model_path
    if served.is_dir():
        served = served / "model.safetensors"
    return open_store(settings), archive, served


@app.command()
def promote(
    model: ModelOpt,
    force: Annotated[
        bool, typer.Option("--force", help="Promote whatever the val figures say.")
    ] = False,
    tolerance: Annotated[
        float, typer.Option(help="How much lower a gated val figure may be and still pass.")
    ] = 0.0,
    database_url: DatabaseOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Put MODEL in service (GRN_MODEL_PATH) with an index of its own, when it is not worse
    than the served model on the val scenes of SQL (k-NN sample-F1, mAP, classifier F1), or
    with --force. Exit 0 when promoted, 3 when the gate refused it."""
    from service.usecases.promotion import PromotionError, judge
    from service.usecases.promotion import promote as put_in_service

    store, archive, served = _promotion_parts(database_url, device)
    try:
        verdict = judge(resolve(model), served, archive, tolerance=tolerance, device=device)
        for line in verdict.lines():
            typer.echo(line)
        if verdict.passed or force:
            if not verdict.passed:
                typer.echo("promoted anyway (--force)")
            typer.echo(
                put_in_service(model, served, store, archive, verdict=verdict, device=device)
            )
    except user_errors(PromotionError) as exc:
        _fail(exc)
    finally:
        store.close()
    if not verdict.passed and not force:
        raise typer.Exit(code=3)


def resolve(model: Path) -> Path:
    from model.card import resolve_model_path

    return resolve_model_path(model)


@app.command()
def retrain(
    out: Annotated[
        Path | None,
        typer.Option(help="Training folder (default: retrain-<UTC time> beside the model's)."),
    ] = None,
    mode: Annotated[str, typer.Option(help="head or full.")] = "head",
    epochs: Annotated[int | None, typer.Option(help="Default: the mode's.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Promote whatever the gate says.")] = False,
    tolerance: Annotated[
        float, typer.Option(help="How much lower a gated val figure may be and still pass.")
    ] = 0.0,
    database_url: DatabaseOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Train a model on the scenes and labels SQL holds now (`grn train --catalog`), then
    `grn promote` it: into service with its own index when it is not worse than the served
    model on the val split (exit 3 when the gate refuses it)."""
    import time as clock

    from service.settings import get_settings

    if out is None:
        served = get_settings().model_path
        base = served if served.is_dir() else served.parent
        out = base.parent / f"retrain-{clock.strftime('%Y%m%dT%H%M%S', clock.gmtime())}"
    train(out=out, catalog=True, database_url=database_url, mode=mode, epochs=epochs,
          device=device, quiet=quiet)  # fmt: skip
    promote(model=out, force=force, tolerance=tolerance, database_url=database_url, device=device)


@app.command()
def rollback(database_url: DatabaseOpt = None, device: DeviceOpt = "auto") -> None:
    """Serve the model served before the current one again, with its index (the kept
    version when the store still has it)."""
    from service.usecases.promotion import PromotionError
    from service.usecases.promotion import rollback as roll_back

    store, archive, served = _promotion_parts(database_url, device)
    try:
        typer.echo(roll_back(served, store, archive, device=device))
    except user_errors(PromotionError) as exc:
        _fail(exc)
    finally:
        store.close()


@app.command()
def models() -> None:
    """The served model and those served before it (kept for `grn rollback`), newest
    first, with the val figures the gate measured."""
    from service.settings import get_settings
    from service.usecases.promotion import models as listed

    served = get_settings().model_path
    if served.is_dir():
        served = served / "model.safetensors"
    rows = listed(served)
    if not rows:
        typer.echo(f"no model at {served}")
        return
    for row in rows:
        figures = row.get("val_figures") or {}
        shown = ", ".join(f"{k} {figures[k]:.4f}" for k in ("knn_sample_f1", "map") if k in figures)
        mark = "*" if row["served"] else " "
        typer.echo(f"{mark} {row['version']}  {shown or 'no figures'}  {row.get('served_at', '')}")


@app.command()
def worker(
    database_url: DatabaseOpt = None,
    lease_seconds: Annotated[
        float,
        typer.Option(help="Take back a running job whose worker is silent this long."),
    ] = 30.0,
    once: Annotated[
        bool, typer.Option("--once", help="Run the jobs waiting now, then exit.")
    ] = False,
) -> None:
    """Run the admin jobs queued in SQL (imports, reindexes) one at a time, with the
    service's settings; any number of workers may run against one database, each job runs
    on one of them. Stops on SIGTERM or Ctrl-C after the job in progress is stopped."""
    import signal as signals

    from service.jobs.queue import JobQueue
    from service.jobs.worker import Worker
    from service.settings import get_settings

    settings = get_settings()
    engine = _engine(database_url)
    queue = JobQueue(engine)
    try:
        queue.ping()
    except Exception as exc:  # the table is missing, or the database is down
        _fail(RuntimeError(f"cannot read the jobs table ({exc}); run `grn db upgrade`"))
    _show_log("grn.jobs")
    env = settings.as_environment()
    if database_url:
        env["GRN_DATABASE_URL"] = database_url
    runner = Worker(queue, env, lease_seconds=lease_seconds)
    signals.signal(signals.SIGTERM, lambda *_: runner.stopping.set())
    try:
        if once:
            while runner.run_one():
                pass
        else:
            runner.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()


@app.command()
def up(
    archive_source: Annotated[
        str | None,
        typer.Option(
            help="The archive as the operator named it, for messages (default "
            "GRN_ARCHIVE_SOURCE: compose sets it to GRN_ARCHIVE).",
        ),
    ] = None,
    train_options: Annotated[
        str,
        typer.Option(
            envvar="GRN_TRAIN_OPTIONS",
            help="More `grn train` options for the first training, e.g. '--epochs 10'.",
        ),
    ] = "",
    skip_broken: Annotated[
        bool,
        typer.Option(
            "--skip-broken",
            envvar="GRN_SKIP_BROKEN",
            help="Leave unreadable images out instead of stopping.",
        ),
    ] = False,
    retry_seconds: Annotated[
        float, typer.Option(help="How often a problem with the inputs is looked at again.")
    ] = 15.0,
) -> None:
    """Prepare and serve, with no other command: migrate the schema, import GRN_ARCHIVE_DIR,
    train a head-mode model when GRN_MODEL_PATH has none, reindex when the index is stale,
    and serve all along (/readyz says how far it got, or what to fix)."""
    import os

    from pydantic import ValidationError

    from service.api.prepare import Options, serve_prepared, train_options_from
    from service.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(ValueError(f"GRN_{str(first['loc'][0]).upper()}: {first['msg']}"))
        return
    if archive_source is None:
        archive_source = os.environ.get("GRN_ARCHIVE_SOURCE")
    options = Options(
        archive_source=archive_source,
        train_options=train_options_from(train_options),
        skip_broken=skip_broken,
        retry_seconds=retry_seconds,
    )
    serve_prepared(settings, options)


@app.command()
def status(
    database_url: DatabaseOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Model, index and schema versions, counts, and what is stale."""
    from service.usecases.status import collect_status, describe

    report = collect_status(_engine(database_url))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for key, value in describe(report):
            typer.echo(f"{key:>16}: {value}")
        for problem in report["stale"]:
            typer.echo(f"           stale: {problem}")
        if not report["stale"]:
            typer.echo("           stale: nothing")
    if report["stale"]:
        raise typer.Exit(code=1)


@app.command()
def reconcile(
    repair_drift: Annotated[
        bool, typer.Option("--repair", help="Rebuild the index to match SQL.")
    ] = False,
    database_url: DatabaseOpt = None,
    model: Annotated[Path | None, typer.Option(help="Default: GRN_MODEL_PATH.")] = None,
    index_root: Annotated[Path | None, typer.Option(help="Default: GRN_INDEX_ROOT.")] = None,
    milvus: MilvusOpt = None,
    collection: CollectionOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Find drift between SQL (the source of truth) and the vector store the service
    searches (GRN_VECTOR_STORE): scenes in one and not the other, an index of another
    model. Exit 1 when drift remains."""
    from index.stores import open_store
    from service.usecases.reconcile import ReconcileError, find_drift, repair

    settings = _store_settings(index_root, milvus, collection)
    engine = _engine(database_url)
    model_path = model or settings.model_path
    store = open_store(settings)
    try:
        drift = find_drift(engine, model_path, store)
        for line in drift.describe() or ["the index matches SQL"]:
            typer.echo(line)
        if drift.clean or not repair_drift:
            raise typer.Exit(code=0 if drift.clean else 1)
        report = repair(engine, model_path, store, drift, device=device, progress=not quiet)
        if report is not None:
            typer.echo(
                f"repaired: {report.name} holds {report.count} scenes "
                f"(added {report.added}, removed {report.removed})"
            )
        after = find_drift(engine, model_path, store)
    except user_errors(ReconcileError) as exc:
        _fail(exc)
        return
    finally:
        store.close()
    if not after.clean:
        for line in after.describe():
            typer.echo(f"still: {line}", err=True)
        raise typer.Exit(code=1)


FormatOpt = Annotated[str, typer.Option("--format", help="table, json or csv.")]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", help="Ask the service at this URL (e.g. http://127.0.0.1:8000) instead of "
        "loading the model and index here; GRN_API_KEY is sent when set."
    ),
]  # fmt: skip


@app.command()
def search(
    image: Annotated[
        Path | None, typer.Argument(help="An image file to search by (or --scene).")
    ] = None,
    scene: Annotated[
        int | None, typer.Option("--scene", help="Search by this archive scene's id.")
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
        list[int] | None,
        typer.Option("--more-like", help="Relevance feedback: a scene id to be like (repeat)."),
    ] = None,
    less_like: Annotated[
        list[int] | None,
        typer.Option("--less-like", help="Relevance feedback: a scene id not to be like."),
    ] = None,
    text: Annotated[
        str | None,
        typer.Option(help='A phrase read onto the labels ("storage tanks, no trees").'),
    ] = None,
    output: FormatOpt = "table",
    bbox: Annotated[
        str | None,
        typer.Option(help="Only scenes whose footprint meets MIN_LON,MIN_LAT,MAX_LON,MAX_LAT."),
    ] = None,
    within: Annotated[
        str | None,
        typer.Option(help="Only scenes centred in this GeoJSON Polygon (text, or a file)."),
    ] = None,
    near: Annotated[
        str | None, typer.Option(help="Only scenes centred within LON,LAT,METRES.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    url: UrlOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """The archive scenes most similar to an image or an archive scene, or most typical of
    labels (--labels-all alone), as POST /search answers: from the model, vector store and
    SQL of the GRN_ settings, or from a running service with --url."""
    if image is not None and scene is not None:
        _fail(ValueError("give an image file or --scene ID, not both"))
    if image is None and scene is None and not (more_like or labels_all or text):
        _fail(ValueError("give an image file, --scene ID, --more-like ID, --labels-all or --text"))
    output = "json" if as_json else output
    _check_format(output)
    request: dict[str, Any] = {"k": k, "include_query": include_query}
    for key, value in (("labels_all", _split_commas(labels_all)),
                       ("labels_any", _split_commas(labels_any)),
                       ("labels_none", _split_commas(labels_none)), ("scene", folder),
                       ("text", text),
                       ("min_score", min_score), ("more_like", more_like),
                       ("less_like", less_like)):  # fmt: skip
        if value:
            request[key] = value
    try:
        request.update(_places(bbox, within, near))
    except (ValueError, OSError) as exc:
        _fail(exc)
    try:
        if url is not None:
            body = _remote_search(url, image, scene, request)
        else:
            body = _local_search(image, scene, request, database_url)
    except user_errors(LookupError, OSError) as exc:
        _fail(exc)
        return
    _print_hits(body, output)


def _places(bbox: str | None, within: str | None, near: str | None) -> dict[str, Any]:
    """--bbox, --within and --near as POST /search's fields, checked."""
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


def _local_search(
    image: Path | None, scene: int | None, request: dict[str, Any], database_url: str | None
) -> dict[str, Any]:
    """POST /search's answer, computed here by `service.usecases.search.search_scenes`."""
    from index.filters import SceneFilter
    from model.geo import polygon_from_geojson
    from model.imageio import read_image
    from model.inference import predict
    from service.runtime import Runtime
    from service.settings import get_settings
    from service.storage.catalog import Catalog
    from service.usecases.search import Rerank, SearchQuery, search_scenes

    settings = get_settings()
    runtime = Runtime(settings)
    understood = None
    try:
        if not runtime.refresh():
            raise RuntimeError(f"nothing to search: {runtime.problem}")
        snapshot = runtime.current()
        if request.get("text"):
            from service.usecases.text import phrase_reader, with_reading

            vocabulary = snapshot.card.label_names
            read = phrase_reader().read(request["text"], vocabulary)
            other = image is not None or scene is not None or bool(request.get("more_like"))
            understood = {key: getattr(read, key)
                          for key in ("labels_all", "labels_none", "not_understood")}  # fmt: skip
            request["labels_all"], request["labels_none"] = with_reading(
                request.get("labels_all", []), request.get("labels_none", []), read,
                phrase=request["text"], vocabulary=vocabulary,
                other_query=other,
            )  # fmt: skip
        where = SceneFilter(
            labels_all=request.get("labels_all", ()), labels_any=request.get("labels_any", ()),
            labels_none=request.get("labels_none", ()), folder=request.get("scene"),
            bbox=tuple(request["bbox"]) if "bbox" in request else None,
            within=polygon_from_geojson(request["within"]) if "within" in request else None,
            near=tuple(request["near"]) if "near" in request else None,
        )  # fmt: skip
        query = SearchQuery(
            k=request["k"], where=where, min_score=request.get("min_score"),
            include_query=request["include_query"], more_like=request.get("more_like", ()),
            less_like=request.get("less_like", ()),
        )  # fmt: skip
        vector = descriptor = None
        if image is not None:
            out = predict(snapshot.net, snapshot.card, [read_image(image)], snapshot.device)
            vector, descriptor = out.embeddings[0], out.descriptors[0]
        page = search_scenes(
            snapshot, Catalog(_engine(database_url)), query, vector=vector, scene_id=scene,
            descriptor=descriptor, rerank=Rerank.of(settings),
        )  # fmt: skip
    finally:
        runtime.store.close()
    hits = [
        {"id": str(hit.scene.id), "image": hit.scene.name, "scene": hit.scene.folder,
         "score": round(hit.score, 6), "labels": list(hit.scene.labels)}
        for hit in page.hits
    ]  # fmt: skip
    return {
        "hits": hits,
        "total": page.total,
        "query_id": None if page.query_id is None else str(page.query_id),
        "model_version": page.model_version,
        "index_version": page.index_version,
        "understood": understood,
        "reranked": page.reranked,
    }


def _client(url: str) -> Any:
    import httpx

    from service.settings import get_settings

    key = get_settings().api_key.get_secret_value()
    return httpx.Client(
        base_url=url.rstrip("/"), timeout=120, headers={"X-API-Key": key} if key else {}
    )


def _answer(response: Any) -> dict[str, Any]:
    """A service's JSON answer, or its error message as a one-line failure."""
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400:
        raise ValueError(
            f"the service answered {response.status_code}: {body.get('message', response.text)}"
        )
    return body


def _remote_search(
    url: str, image: Path | None, scene: int | None, request: dict[str, Any]
) -> dict[str, Any]:
    import httpx

    try:
        with _client(url) as client:
            if image is not None:
                form = {
                    key: ",".join(map(str, value))
                    if isinstance(value, list)
                    else json.dumps(value)
                    if isinstance(value, dict)
                    else str(value)
                    for key, value in request.items()
                    if key != "include_query"
                }
                response = client.post(
                    "/search", files={"file": (image.name, image.read_bytes())}, data=form
                )
            else:
                query = {} if scene is None else {"scene_id": str(scene)}
                response = client.post("/search", json={**query, **request})
    except httpx.HTTPError as exc:
        raise OSError(f"the service at {url} cannot be reached: {exc}") from exc
    return _answer(response)


def _check_format(output: str) -> None:
    if output not in ("table", "json", "csv"):
        _fail(ValueError(f"--format must be table, json or csv, not {output!r}"))


def _print_hits(body: dict[str, Any], output: str) -> None:
    hits = body["hits"]
    understood = body.get("understood")
    if understood and output != "json":
        read = [f"read as: {', '.join(understood['labels_all']) or '-'}"]
        if understood["labels_none"]:
            read.append(f"not {', '.join(understood['labels_none'])}")
        if understood["not_understood"]:
            read.append(f"not understood: {', '.join(understood['not_understood'])}")
        typer.echo("; ".join(read), err=True)
    if body.get("reranked") and output != "json":
        typer.echo(
            "re-ranked by the backbone's descriptors: the query looks like content the model "
            "did not train on",
            err=True,
        )
    if output == "json":
        typer.echo(json.dumps(body, indent=2))
        return
    if output == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["rank", "id", "image", "scene", "score", "labels"])
        for rank, hit in enumerate(hits, start=1):
            writer.writerow([rank, hit["id"], hit["image"], hit["scene"], f"{hit['score']:.6f}",
                             ";".join(hit["labels"])])  # fmt: skip
        return
    for rank, hit in enumerate(hits, start=1):
        typer.echo(
            f"{rank:>4}  {hit['score']:.4f}  {hit['id']:>19}  {hit['image']:<24} "
            f"{','.join(hit['labels'])}"
        )
    if not hits:
        typer.echo("no scene matches", err=True)


@app.command()
def classify(
    images: Annotated[list[Path], typer.Argument(help="Image files.", metavar="IMAGE...")],
    output: FormatOpt = "table",
    url: UrlOpt = None,
) -> None:
    """The labels of image files (what POST /classify answers): every label's probability
    and the labels at or above their thresholds, from the model of GRN_MODEL_PATH or from a
    running service with --url."""
    _check_format(output)
    try:
        results = _remote_classify(url, images) if url else _local_classify(images)
    except user_errors(OSError) as exc:
        _fail(exc)
        return
    if output == "json":
        typer.echo(json.dumps(results, indent=2))
    elif output == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        names = [score["label"] for score in results[0]["labels"]] if results else []
        writer.writerow(["file", "predicted", *names])
        for result in results:
            by_label = {s["label"]: s["probability"] for s in result["labels"]}
            writer.writerow([result["filename"], ";".join(result["predicted"]),
                             *(f"{by_label[n]:.6f}" for n in names)])  # fmt: skip
    else:
        for result in results:
            typer.echo(f"{result['filename']}: {', '.join(result['predicted']) or '(none)'}")


def _local_classify(images: list[Path]) -> list[dict[str, Any]]:
    from model.card import load_model
    from model.imageio import read_image
    from model.inference import predict, resolve_device
    from service.api.schemas import ImageClassification
    from service.settings import get_settings

    device = resolve_device(get_settings().device)
    net, card = load_model(get_settings().model_path, device)
    out = predict(net, card, [read_image(path) for path in images], device)
    return [
        ImageClassification.of(path.name, card, probabilities).model_dump()
        for path, probabilities in zip(images, out.probabilities, strict=True)
    ]


def _remote_classify(url: str, images: list[Path]) -> list[dict[str, Any]]:
    import httpx

    try:
        with _client(url) as client:
            files = [("file", (path.name, path.read_bytes())) for path in images]
            body = _answer(client.post("/classify", files=files))
    except httpx.HTTPError as exc:
        raise OSError(f"the service at {url} cannot be reached: {exc}") from exc
    results: list[dict[str, Any]] = body["results"]
    return results


def _split_commas(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _store_settings(
    index_root: Path | None = None, milvus: str | None = None, collection: str | None = None
) -> Any:
    """The GRN_ settings with the command line's choices of store over them."""
    from service.settings import get_settings

    return get_settings().with_store(
        index_root=index_root, milvus_uri=milvus, milvus_collection=collection
    )


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
