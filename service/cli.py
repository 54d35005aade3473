"""`grn`, the admin command line: database, import, train, evaluate, embed, reindex, serve
and status. Each command is a thin wrapper over the library functions; settings not given as
options come from the `GRN_` environment variables (service/settings.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from model.archive import ArchiveError
from model.backbones import BACKBONES, MissingWeightsError
from model.card import ModelFileError
from model.imageio import InvalidImageError
from model.losses import LOSSES

app = typer.Typer(
    help="GRN scene retrieval: import, train, index and serve remote-sensing archives.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The SQL schema: upgrade, downgrade, current.", no_args_is_help=True)
app.add_typer(db_app, name="db")

USER_ERRORS = (ArchiveError, ModelFileError, InvalidImageError, MissingWeightsError, ValueError)

ArchiveOpt = Annotated[Path, typer.Option("--archive", help="Archive folder holding labels.csv.")]
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


def _fail(exc: BaseException) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def train(
    archive: ArchiveOpt,
    out: Annotated[Path, typer.Option(help="Training folder: checkpoint, logs, curve.")],
    labels: LabelsOpt = None,
    mode: Annotated[
        str, typer.Option(help="head: frozen backbone (CPU-friendly); full: fine-tune.")
    ] = "head",
    backbone: Annotated[
        str, typer.Option(help=f"One of: {', '.join(BACKBONES)}.")
    ] = "efficientnet_lite0",
    pretrained: Annotated[bool, typer.Option(help="Start from ImageNet weights.")] = True,
    loss: Annotated[str, typer.Option(help=f"One of: {', '.join(LOSSES)}.")] = "sndl_bce",
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
    embedding_dim: Annotated[int | None, typer.Option(help="Default: 128.")] = None,
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
    CPUs), each with the whole memory bank."""
    from model.train import config_for_mode, fit

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
            embedding_dim=embedding_dim,
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
    except USER_ERRORS as exc:
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
    quiet: QuietOpt = False,
) -> None:
    """Retrieval and classification metrics: archive = train split, queries = test split."""
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
        )
    except USER_ERRORS as exc:
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
        except USER_ERRORS as exc:
            _fail(exc)
            return
        typer.echo(
            f"embedded {shards.embedded} scenes ({shards.skipped} already in {out}) with "
            f"{shards.workers} workers in {shards.seconds:.1f} s "
            f"({shards.images_per_s:.1f} images/s)"
        )
        return
    from model.evaluate import embed_archive

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
    except USER_ERRORS as exc:
        _fail(exc)
        return
    if broken:
        report = out.with_suffix(".broken.json")
        report.write_text(json.dumps([b.__dict__ for b in broken], indent=2) + "\n")
        typer.echo(f"skipped {len(broken)} unreadable files, listed in {report}", err=True)
    typer.echo(
        f"embedded {len(embedded.positions)} scenes in {embedded.seconds:.1f} s "
        f"({embedded.images_per_s:.1f} images/s) into {out}"
    )


@app.command()
def reindex(
    model: ModelOpt,
    archive: ArchiveOpt,
    index_root: Annotated[Path, typer.Option(help="Index folder: versions/, current, work/.")],
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
    milvus: Annotated[
        str | None,
        typer.Option(
            "--milvus",
            help="Write into a Milvus collection at this URI (a file: Milvus Lite) instead "
            "of FAISS versions; INDEX-ROOT then only holds the embedding shards.",
        ),
    ] = None,
    collection: Annotated[str, typer.Option(help="Milvus collection.")] = "scenes",
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Milvus: rebuild into a new collection and switch the alias to it when done.",
        ),
    ] = False,
    if_stale: Annotated[
        bool,
        typer.Option(
            "--if-stale",
            help="Do nothing when the current index was built by this model over exactly "
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
    """Embed the archive and build a new FAISS index version, then put it in service."""
    ray_workers = workers if ray else None
    from index.job import ReindexSettings, index_is_current
    from index.job import reindex as run_reindex
    from index.store import IndexModelMismatchError, IndexNotReadyError

    if milvus is not None:
        from index.milvus_job import reindex_milvus
        from service.settings import get_settings

        try:
            done = reindex_milvus(
                model,
                archive,
                milvus,
                collection,
                index_root / "work",
                labels_csv=labels,
                incremental=incremental,
                replace=replace,
                device=device,
                progress=not quiet,
                token=get_settings().milvus_token.get_secret_value(),
                ray_workers=ray_workers,
            )
        except USER_ERRORS as exc:
            _fail(exc)
            return
        typer.echo(
            f"Milvus collection {done.collection} ({done.version}): {done.count} scenes; "
            f"added {done.added}, removed {done.removed}; {done.seconds:.1f} s"
        )
        return
    try:
        if if_stale and index_is_current(model, archive, index_root, labels_csv=labels):
            typer.echo(f"index under {index_root} is current for this model and archive")
            return
    except USER_ERRORS as exc:
        _fail(exc)

    settings = ReindexSettings(
        factory=factory,
        memory_budget_gb=memory_budget_gb,
        keep=keep,
        nprobe=nprobe,
        shard_size=shard_size,
    )
    try:
        report = run_reindex(
            model,
            archive,
            index_root,
            labels_csv=labels,
            settings=settings,
            incremental=incremental,
            device=device,
            skip_broken=skip_broken,
            progress=not quiet,
            ray_workers=ray_workers,
        )
    except (*USER_ERRORS, IndexModelMismatchError, IndexNotReadyError) as exc:
        _fail(exc)
        return
    except OSError as exc:  # disk full, size limit, permissions: nothing was put in service
        _fail(
            OSError(
                f"the new index could not be written: {exc}; "
                f"the index in service under {index_root} is unchanged"
            )
        )
        return
    m = report.manifest
    typer.echo(
        f"index {m.version} in service: {m.count} scenes, {m.factory}, model {m.model_version}; "
        f"added {report.added}, removed {report.removed}, embedded {report.embedded}; "
        f"recall@10 {m.stats['recall_at_10']:.4f}; {report.seconds:.1f} s; "
        f"{report.size_bytes / 2**20:.1f} MiB on disk"
        + (f"; pruned {len(report.pruned)} old versions" if report.pruned else "")
    )
    if report.broken:
        typer.echo(
            f"skipped {len(report.broken)} unreadable files, listed in the manifest", err=True
        )


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _engine(database_url: str | None) -> Any:
    from service.db import make_engine
    from service.settings import get_settings

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
    from service.migrate import current_revision, upgrade

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
    from service.migrate import current_revision, downgrade

    engine = _engine(database_url)
    downgrade(engine, revision)
    typer.echo(f"database at revision {current_revision(engine) or 'base'}")


@db_app.command("current")
def db_current(database_url: DatabaseOpt = None) -> None:
    """The revision the database is at, and the newest one."""
    from service.migrate import current_revision, head_revision

    engine = _engine(database_url)
    typer.echo(f"database at {current_revision(engine) or 'base'}; newest {head_revision()}")


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
    from service.importer import import_archive
    from service.migrate import current_revision, head_revision

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
    for broken in report.broken:
        typer.echo(f"  skipped {broken.path}: {broken.error}", err=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: GRN_HOST (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Default: GRN_PORT (8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default GRN_WORKERS, 1).")] = None,
) -> None:
    """Serve the HTTP API (settings from the GRN_ environment variables)."""
    import uvicorn

    from service.settings import get_settings

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    typer.echo(f"serving on http://{host}:{port} (API docs at http://{host}:{port}/docs)")
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers or settings.workers,
        log_level="info",
        access_log=False,  # the app logs one line per request, with its request id
        timeout_keep_alive=int(settings.keep_alive_seconds),
    )


@app.command()
def status(
    database_url: DatabaseOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Model, index and schema versions, counts, and what is stale."""
    from service.status import collect_status

    report = collect_status(_engine(database_url))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            if key == "stale":
                continue
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
    milvus: Annotated[
        str | None,
        typer.Option(
            "--milvus",
            help="Check this Milvus URI's collection instead (default: GRN_MILVUS_URI when "
            "GRN_VECTOR_STORE is milvus).",
        ),
    ] = None,
    collection: Annotated[
        str | None, typer.Option(help="Milvus collection (default GRN_MILVUS_COLLECTION).")
    ] = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Find drift between SQL (the source of truth) and the index the service searches (FAISS
    versions, or the Milvus collection when GRN_VECTOR_STORE is milvus or --milvus is given):
    scenes in one and not the other, an index of another model. Exit 1 when drift remains."""
    from service.reconcile import (
        ReconcileError,
        find_drift,
        find_milvus_drift,
        repair,
        repair_milvus,
    )
    from service.settings import get_settings

    settings = get_settings()
    engine = _engine(database_url)
    model_path = model or settings.model_path
    root = index_root or settings.index_root
    if milvus is None and settings.vector_store == "milvus":
        milvus = settings.milvus_uri
    collection = collection or settings.milvus_collection

    def drift_now() -> Any:
        if milvus is not None:
            return find_milvus_drift(engine, model_path, milvus, collection)
        return find_drift(engine, model_path, root)

    try:
        drift = drift_now()
        for line in drift.describe() or ["the index matches SQL"]:
            typer.echo(line)
        if drift.clean or not repair_drift:
            raise typer.Exit(code=0 if drift.clean else 1)
        if milvus is not None:
            done = repair_milvus(
                engine, model_path, milvus, collection, root / "work", drift,
                device=device, progress=not quiet,
            )  # fmt: skip
            if done is not None:
                typer.echo(
                    f"repaired: collection {done.collection} holds {done.count} scenes "
                    f"(added {done.added}, removed {done.removed})"
                )
            report = None
        else:
            report = repair(engine, model_path, root, drift, device=device, progress=not quiet)
    except (*USER_ERRORS, ReconcileError) as exc:
        _fail(exc)
        return
    if report is not None:
        typer.echo(
            f"repaired: index {report.manifest.version} holds {report.manifest.count} scenes "
            f"(added {report.added}, removed {report.removed})"
        )
    after = drift_now()
    if not after.clean:
        for line in after.describe():
            typer.echo(f"still: {line}", err=True)
        raise typer.Exit(code=1)


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])


if __name__ == "__main__":  # python -m service.cli
    app()
