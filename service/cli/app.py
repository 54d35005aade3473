"""The `grn` typer apps and what every command group shares: the options that several
commands take, one-line errors with their exit codes, and output helpers (`--json`, tables).

Exit codes: 0 success, 1 failure (the command understood, the work could not be done:
printed as `error: ...` on one line), 2 usage (options or arguments that cannot be
understood: typer's own, and combinations a command refuses), and a command's own where its
help says so (`grn promote`: 3 when the gate refuses). Nothing here imports torch, FAISS or
the web stack: each command imports what it needs when it runs."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

# Click's exception classes, from Click itself or the copy newer typers carry (typer.*
# re-exports only some of them)
UsageError: type[Exception] = typer.BadParameter.__bases__[0]
ClickException: type[Exception] = UsageError.__bases__[0]


class OneLineErrors(TyperGroup):
    """Usage errors as one line, `error: ...; see `grn CMD --help``, exit 2 (Click prints
    the usage, a hint and the error on three lines)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except UsageError as exc:
            if "\n" in str(exc.format_message()):  # type: ignore[attr-defined]
                exc.show()  # type: ignore[attr-defined]  # the help, for a group without a command
                sys.exit(exc.exit_code)  # type: ignore[attr-defined]
            ctx = getattr(exc, "ctx", None)
            command = ctx.command_path if ctx is not None else "grn"
            typer.secho(
                f"error: {usage_message(exc)}; see `{command} --help`", fg=typer.colors.RED,
                err=True,
            )  # fmt: skip
            sys.exit(2)
        except ClickException as exc:
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        except ValidationError as exc:
            if exc.title != "Settings":
                raise
            typer.secho(f"error: {message(exc)}", fg=typer.colors.RED, err=True)
            sys.exit(1)
        # without standalone mode, Click answers an Exit's code (typer.Exit) or None
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
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


PARSE_ERRORS = {
    "Input should be a valid integer": "not a whole number",
    "Input should be a valid number": "not a number",
}
"""typer's (pydantic's) messages for a number that does not parse, in fewer words."""


def usage_message(exc: Exception) -> str:
    """Click's message on one line, an option named without quotes (`invalid value for
    --k: not a whole number`)."""
    param, text = getattr(exc, "param", None), getattr(exc, "message", "")
    if isinstance(exc, typer.BadParameter) and param is not None and text:
        name = param.opts[0] if param.param_type_name == "option" else param.name.upper()
        for long, short in PARSE_ERRORS.items():
            text = short if text.startswith(long) else text
        return f"invalid value for {name}: {text}"
    return str(exc.format_message()).rstrip(".")  # type: ignore[attr-defined]


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
    """An exception's message on one line, without a KeyError's quotes; a validation error
    as each wrong field and what is wrong with it."""
    from service.settings import variable_of

    if isinstance(exc, ValidationError):
        settings = exc.title == "Settings"  # a setting by its variable, a field by its path
        return "; ".join(
            f"{variable_of(error['loc']) if settings else '.'.join(map(str, error['loc']))}"
            f"{'' if error['loc'] or settings else 'the search'}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def fail(exc: BaseException | str) -> NoReturn:
    """The command failed: `error: ...` on stderr, exit 1."""
    text = exc if isinstance(exc, str) else message(exc)
    typer.secho(f"error: {text}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


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


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: str = "") -> None:
    """Rows under a header row, columns padded to their widest cell; the columns named in
    `right` (a space-separated list) aligned right (numbers), the last one left unpadded."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    aligned = set(right.split())
    for row in cells:
        padded = [
            cell.rjust(width) if name in aligned else cell.ljust(width)
            for name, cell, width in zip(header, row, widths, strict=True)
        ]
        typer.echo("  ".join([*padded[:-1], row[-1]]).rstrip())


def split_commas(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def scene_ids(option: str, values: Sequence[str] | None) -> list[int]:
    """Scene ids given as text (whole numbers); anything else is a usage error."""
    ids = []
    for value in values or ():
        try:
            ids.append(int(value))
        except ValueError:
            usage_error(f"{option} takes a scene id, a whole number, not {value}")
    return ids


def engine(database_url: str | None) -> Any:
    from service.settings import get_settings
    from service.storage.db import make_engine

    return make_engine(database_url or get_settings().database.database_url)


def store_settings(
    index_root: Path | None = None, milvus: str | None = None, collection: str | None = None
) -> Any:
    """The GRN_ settings with the command line's choices of store over them."""
    from service.settings import get_settings

    return get_settings().with_store(
        index_root=index_root, milvus_uri=milvus, milvus_collection=collection
    )


def ray_address(given: str | None) -> str | None:
    """The Ray cluster a command embeds on: --ray-address, else GRN_RAY_ADDRESS."""
    from service.settings import get_settings

    return given or get_settings().jobs.ray_address


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
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Embed on the Ray cluster at this address (host:port of its head); implies --ray "
        "(default GRN_RAY_ADDRESS).",
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
    """--format, or json with --json; a format other than table, json or csv is a usage
    error."""
    output = "json" if as_json else output
    if output not in ("table", "json", "csv"):
        usage_error(f"--format must be table, json or csv, not {output}")
    return output
