"""What an admin job does, as a typed value: the API, the CLI and tests queue a spec, the
jobs table keeps it (as JSON in `jobs.args`), and the worker runs it. A spec says which use
case to run with which inputs; `argv` is how the worker runs it as a child process (so a
crash of a job never takes a worker or the API down), built here and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def argv(self) -> list[str]:
        """The `grn` command line that runs this job."""
        raise NotImplementedError


class ImportJob(Spec):
    """Import an archive's scenes and labels into SQL (again: adds only what is new)."""

    kind: Literal["import"] = "import"
    archive: Path
    labels: Path | None = None
    """The labels file (default ARCHIVE/labels.csv)."""

    def argv(self) -> list[str]:
        labels = ["--labels", str(self.labels)] if self.labels is not None else []
        return ["import", str(self.archive), *labels]


class StacImportJob(Spec):
    """Import a STAC catalog's items (`grn import --stac`): each item's raster tiled under
    `tiles`, then imported with its footprint, date and properties; again: adds only what is
    new. Items that cannot be imported are named in the job's output, the others imported."""

    kind: Literal["import-stac"] = "import-stac"
    source: str = Field(min_length=1, max_length=2000)
    """The catalog, collection, item collection or item: a path or a URL."""
    asset: str | None = Field(default=None, min_length=1, max_length=200)
    """The asset to tile (default: visual, else the first GeoTIFF data asset)."""
    max_cloud: float | None = Field(default=None, ge=0, le=100)
    """Leave out the items whose eo:cloud_cover is above it, or not given."""
    tiles: Path | None = None
    """Where the items' tiles go (default GRN_STORE_DIR/stac)."""

    def argv(self) -> list[str]:
        args = ["import", "--stac", self.source]
        if self.asset is not None:
            args += ["--asset", self.asset]
        if self.max_cloud is not None:
            args += ["--max-cloud", f"{self.max_cloud:g}"]
        if self.tiles is not None:
            args += ["--tiles", str(self.tiles)]
        return args


class ReindexJob(Spec):
    """Embed the scenes SQL holds with `model` into the configured vector store."""

    kind: Literal["reindex"] = "reindex"
    model: Path
    index_root: Path | None = None
    """Where FAISS versions and embedding shards live (default GRN_INDEX_ROOT)."""
    incremental: bool = False
    """Add new scenes and drop gone ones only, instead of a new version of every scene."""

    def argv(self) -> list[str]:
        root = ["--index-root", str(self.index_root)] if self.index_root is not None else []
        mode = "--incremental" if self.incremental else "--replace"
        return ["reindex", "--model", str(self.model), "--catalog", *root, mode]


class TrainJob(Spec):
    """Retrain on the scenes and labels SQL holds, then promote the model when the gate
    passes (or `force`)."""

    kind: Literal["train"] = "train"
    force: bool = False
    epochs: int | None = Field(default=None, ge=1, le=1000)
    out: Path | None = None
    """The training folder (default: retrain-<UTC time> beside the served model's)."""

    def argv(self) -> list[str]:
        args = ["retrain", *(["--force"] if self.force else []), "--quiet"]
        if self.epochs is not None:
            args += ["--epochs", str(self.epochs)]
        if self.out is not None:
            args += ["--out", str(self.out)]
        return args


class RollbackJob(Spec):
    """Serve the model served before the current one again, with its index."""

    kind: Literal["rollback"] = "rollback"

    def argv(self) -> list[str]:
        return ["rollback"]


JobSpec = Annotated[
    ImportJob | StacImportJob | ReindexJob | TrainJob | RollbackJob, Field(discriminator="kind")
]
_SPECS: TypeAdapter[JobSpec] = TypeAdapter(JobSpec)


LEGACY = (
    "queued by an earlier version as a command line, which this version does not run: "
    "queue it again"
)


class LegacyJobError(ValueError):
    """A job row queued by a version that stored command lines instead of specs."""


def spec_from_json(text: str) -> JobSpec:
    """The spec a job row keeps; LegacyJobError for a row of an earlier version (a list of
    command-line words), which is shown but not run."""
    value: Any = _SPECS.validate_json(text) if text.lstrip().startswith("{") else None
    if value is None:
        raise LegacyJobError(LEGACY)
    return value


def spec_to_json(spec: JobSpec) -> str:
    return spec.model_dump_json()
