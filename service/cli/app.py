"""The `grn` typer apps and what every command group shares: the options that several
commands take, one-line errors (`error: ...`, exit 2) and JSON output. Nothing here imports
torch, FAISS or the web stack: each command imports what it needs when it runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

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
model_app = typer.Typer(
    help="Ship a head-mode model without its backbone: pack, unpack.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def user_errors(*more: type[BaseException]) -> tuple[type[BaseException], ...]:
    """What a command reports as one line (exit 1) instead of a traceback. Imported when an
    exception is being matched, so that starting the CLI loads neither torch nor FAISS."""
    from index.stores.base import (
        IndexModelMismatchError,
        IndexNotReadyError,
        VectorStoreUnavailableError,
    )
    from model.archive import ArchiveError
    from model.card import ModelFileError
    from model.imageio import InvalidImageError

    # missing weights are raised by model.backbones, which imports torch: when it is not
    # loaded, the error is not that one (and a one-line error stays quick)
    backbones = sys.modules.get("model.backbones")
    missing = () if backbones is None else (backbones.MissingWeightsError,)
    return (
        ArchiveError, ModelFileError, InvalidImageError, *missing, ValueError,
        IndexNotReadyError, IndexModelMismatchError, VectorStoreUnavailableError, *more,
    )  # fmt: skip


def message(exc: BaseException) -> str:
    return str(exc)


def fail(exc: BaseException | str) -> NoReturn:
    """The command failed: `error: ...` on stderr, exit 2."""
    text = exc if isinstance(exc, str) else message(exc)
    typer.secho(f"error: {text}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def usage_error(text: str) -> NoReturn:
    """The command line cannot be understood: `error: ...` on stderr, exit 2."""
    typer.secho(f"error: {text}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def show_log(name: str) -> None:
    """Print a library logger's INFO lines on stderr, as plain lines."""
    import logging

    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def split_commas(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def engine(database_url: str | None) -> Any:
    from service.settings import get_settings
    from service.storage.db import make_engine

    return make_engine(database_url or get_settings().database_url)


def store_settings(
    index_root: Path | None = None, milvus: str | None = None, collection: str | None = None
) -> Any:
    """The GRN_ settings with the command line's choices of store over them."""
    from service.settings import get_settings

    return get_settings().with_store(
        index_root=index_root, milvus_uri=milvus, milvus_collection=collection
    )


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


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
DatabaseOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL (default: GRN_DATABASE_URL)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON).")]
FormatOpt = Annotated[str, typer.Option("--format", help="table, json or csv.")]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", help="Ask the service at this URL (e.g. http://127.0.0.1:8000) instead of "
        "loading the model and index here; GRN_API_KEY is sent when set."
    ),
]  # fmt: skip


def output_format(output: str, as_json: bool) -> str:
    """--format, or json with --json; a format other than table, json or csv is refused."""
    output = "json" if as_json else output
    if output not in ("table", "json", "csv"):
        usage_error(f"--format must be table, json or csv, not {output}")
    return output
