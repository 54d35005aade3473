"""Index commands: build a new version of the vector store (`grn reindex`) and find or
repair drift between SQL and the store (`grn reconcile`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.app import (
    ArchiveOrCatalogOpt,
    CollectionOpt,
    DatabaseOpt,
    DeviceOpt,
    JsonOpt,
    LabelsOpt,
    MilvusOpt,
    ModelOpt,
    QuietOpt,
    RayAddressOpt,
    SkipBrokenOpt,
    app,
    engine,
    fail,
    print_json,
    ray_address,
    store_settings,
    usage_error,
    user_errors,
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
    descriptors: Annotated[
        str | None,
        typer.Option(
            help="How the version keeps a head-mode model's re-rank descriptors: int8 (the "
            "default: a byte a value, one scale per scene) or float16 (two bytes).",
        ),
    ] = None,
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
    ray_at: RayAddressOpt = None,
) -> None:
    """Embed the archive (a folder, or with --catalog the scenes SQL holds) and put a new
    version of its vectors in service, in the vector store of GRN_VECTOR_STORE (FAISS index
    versions under INDEX-ROOT by default)."""
    from index.descriptors import DEFAULT as DEFAULT_DESCRIPTORS
    from index.descriptors import DTYPES as DESCRIPTOR_DTYPES
    from index.stores import ReindexOptions
    from index.stores.faiss_build import ReindexSettings
    from service.storage.catalog_archive import EmptyCatalogError
    from service.usecases.reindex import IndexWriteError, ReindexRequest, reindex_scenes

    if (archive is None) == (not catalog):
        usage_error("give the scenes to index: --archive FOLDER or --catalog")
    if catalog and labels is not None:
        usage_error("--labels goes with --archive, not --catalog")
    if descriptors is not None and descriptors not in DESCRIPTOR_DTYPES:
        usage_error(f"--descriptors is one of {', '.join(DESCRIPTOR_DTYPES)}, not {descriptors}")
    cluster = ray_address(ray_at)
    build = ReindexSettings(
        factory=factory, memory_budget_gb=memory_budget_gb, keep=keep, nprobe=nprobe,
        shard_size=shard_size, descriptors=descriptors or DEFAULT_DESCRIPTORS,
    )  # fmt: skip
    options = ReindexOptions(
        labels_csv=labels, incremental=incremental, replace=replace, build=build,
        device=device, skip_broken=skip_broken, progress=not quiet,
        ray_workers=workers if ray or cluster else None, ray_address=cluster,
    )  # fmt: skip
    request = ReindexRequest(model=model, archive=archive, options=options, if_stale=if_stale)
    try:
        if cluster:
            from index.ray_embed import check_address

            check_address(cluster)  # before the model and the scenes are read
        outcome = reindex_scenes(
            store_settings(index_root, milvus, collection),
            request,
            engine(database_url) if catalog else None,
        )
    except user_errors(EmptyCatalogError, IndexWriteError) as exc:
        fail(exc)
    if outcome.report is None:
        typer.echo(f"the index in {outcome.location} is current for this model and archive")
        return
    typer.echo(outcome.report.summary())
    if outcome.report.broken:
        typer.echo(f"skipped {len(outcome.report.broken)} unreadable files:", err=True)
        for broken in outcome.report.broken:
            typer.echo(f"  {broken.path}: {broken.error}", err=True)


def _drift(drift: Any) -> dict[str, Any]:
    """A drift as JSON: versions, counts of scenes, and the lines `grn reconcile` prints."""
    return {
        "model_version": drift.model_version,
        "index_version": drift.index_version,
        "index_model_version": drift.index_model_version,
        "stale_model": drift.stale_model,
        "missing_from_index": len(drift.missing_from_index),
        "unknown_to_sql": len(drift.unknown_to_sql),
        "pending": len(drift.pending),
        "clean": drift.clean,
        "drift": drift.describe(),
    }


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
    as_json: JsonOpt = False,
) -> None:
    """Find drift between SQL (the source of truth) and the vector store the service
    searches (GRN_VECTOR_STORE): scenes in one and not the other, an index of another
    model. Exit 1 when drift remains."""
    from index.stores import open_store
    from service.usecases.reconcile import ReconcileError, find_drift, repair

    settings = store_settings(index_root, milvus, collection)
    connected = engine(database_url)
    model_path = model or settings.model.model_path
    store = open_store(settings.store)
    answer: dict[str, Any] = {}
    try:
        drift = find_drift(connected, model_path, store)
        answer = _drift(drift)
        if not as_json:
            for line in drift.describe() or ["the index matches SQL"]:
                typer.echo(line)
        after = drift
        if repair_drift and not drift.clean:
            report = repair(connected, model_path, store, drift, device=device, progress=not quiet)
            if report is not None:
                answer["repaired"] = {"version": report.name, "count": report.count,
                                      "added": report.added, "removed": report.removed}  # fmt: skip
                if not as_json:
                    typer.echo(
                        f"repaired: {report.name} holds {report.count} scenes "
                        f"(added {report.added}, removed {report.removed})"
                    )
            after = find_drift(connected, model_path, store)
            answer["after"] = _drift(after)
    except user_errors(ReconcileError) as exc:
        fail(exc)
    finally:
        store.close()
    if as_json:
        print_json(answer)
    elif repair_drift and not after.clean:
        for line in after.describe():
            typer.echo(f"still: {line}", err=True)
    if not after.clean:
        raise typer.Exit(code=1)
