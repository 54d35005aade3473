"""Training commands: train a model, evaluate it, embed an archive with it, and ship a
head-mode model without its backbone (`grn model pack` / `unpack`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from model.choices import BACKBONE_NAMES, LOSS_NAMES
from service.cli.app import (
    ArchiveOpt,
    ArchiveOrCatalogOpt,
    DatabaseOpt,
    DeviceOpt,
    LabelsOpt,
    ModelOpt,
    QuietOpt,
    RayAddressOpt,
    SkipBrokenOpt,
    app,
    engine,
    fail,
    has_cuda,
    model_app,
    ray_address,
    show_log,
    usage_error,
    user_errors,
)

app.add_typer(model_app, name="model")


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

    show_log("grn.train")  # how many scenes are labelled and how many are left out
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
        fail(exc)
    print_trained(result)


def print_trained(result: Any) -> None:
    """What a training run reached, and the files it skipped."""
    from service.usecases.lifecycle import training_summary

    typer.echo(training_summary(result))
    if result.broken:
        typer.echo(
            f"skipped {len(result.broken)} unreadable files, listed in "
            f"{Path(result.model_path).parent / 'train_summary.json'}",
            err=True,
        )


def _training_archive(
    archive: Path | None, catalog: bool, labels: Path | None, database_url: str | None, out: Path
) -> Path:
    """The archive folder to train on: the one given, or a snapshot of SQL's scenes."""
    from service.storage.catalog_archive import EmptyCatalogError
    from service.usecases.lifecycle import catalog_snapshot

    if (archive is None) == (not catalog):
        usage_error("give the scenes to train on: --archive FOLDER or --catalog")
    if archive is not None:
        return archive
    if labels is not None:
        usage_error("--labels goes with --archive, not --catalog")
    try:
        return catalog_snapshot(engine(database_url), Path(out))
    except EmptyCatalogError as exc:
        fail(exc)


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
        fail(exc)
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
    ray_at: RayAddressOpt = None,
    shard_size: Annotated[
        int, typer.Option(help="Scenes per Parquet file at least, with --ray.")
    ] = 1024,
) -> None:
    """Embed the scenes of one split into an .npz file; with --ray (or a Ray cluster's
    address), every scene of the archive into Parquet shards in the folder OUT, on Ray (the
    cluster at --ray-address or GRN_RAY_ADDRESS, else RAY_ADDRESS's, else this machine)."""
    cluster = ray_address(ray_at)
    if ray or cluster:
        from index.ray_embed import ray_embed

        try:
            shards = ray_embed(
                model,
                archive,
                out,
                labels_csv=labels,
                workers=workers,
                batch_size=batch_size or 8,
                device="cuda" if device in ("auto", "cuda") and has_cuda() else device,
                address=cluster,
                rows_per_file=shard_size,
            )
        except user_errors() as exc:
            fail(exc)
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
        fail(exc)
    if broken:
        report = out.with_suffix(".broken.json")
        report.write_text(json.dumps([b.__dict__ for b in broken], indent=2) + "\n")
        typer.echo(f"skipped {len(broken)} unreadable files, listed in {report}", err=True)
    typer.echo(
        f"embedded {len(embedded.positions)} scenes in {embedded.seconds:.1f} s "
        f"({embedded.images_per_s:.1f} images/s, {embedded.engine}) into {out}"
    )


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
        fail(exc)
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
        fail(exc)
    typer.echo(f"model {card.version} ({card.backbone}, trained on {card.training.get('archive')}) "
               f"in {target}")  # fmt: skip


@model_app.command("add-graph")
def model_add_graph(model: ModelOpt) -> None:
    """Store the network's ONNX graph (exported and checked against torch) in a model file
    that has none or an outdated one, so that an install without torch can serve it."""
    from model.card import add_graph

    try:
        card = add_graph(model)
    except user_errors(OSError) as exc:
        fail(exc)
    typer.echo(f"model {card.version}: its graph is stored")
