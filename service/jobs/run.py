"""A job's child process: `python -m service.jobs.run SPEC` runs the use case of a job spec
(`service.jobs.specs`, as JSON) with the settings of its environment, which the worker sets
to the service's. Its output is the job's output; its exit status the job's: 0 done, 1
failed (one `error: ...` line), 3 a retrained model the gate refused. Its use cases' progress
bars report as progress lines (`service.jobs.progress`), which the worker reads."""

from __future__ import annotations

import logging
import sys

from service.jobs.progress import reporting_progress
from service.jobs.specs import (
    ImportJob,
    JobSpec,
    ReindexJob,
    RollbackJob,
    StacImportJob,
    TrainJob,
    spec_from_json,
)
from service.settings import Settings, get_settings
from service.storage.db import make_engine

REFUSED = 3
"""Exit status of a retrain whose model the gate refused (as `grn retrain`'s)."""


def say(line: str) -> None:
    print(line, flush=True)


def run(spec: JobSpec, settings: Settings) -> int:
    """Run `spec`'s use case; the job's exit status."""
    engine = make_engine(settings.database.database_url)
    try:
        if isinstance(spec, ImportJob):
            from service.usecases.importer import import_to_current_schema

            report = import_to_current_schema(engine, spec.archive, spec.labels, progress=True)
            for line in report.summary():
                say(line)
            for broken in report.broken:
                say(f"  skipped {broken.path}: {broken.error}")
        elif isinstance(spec, StacImportJob):
            from service.usecases.stac_import import import_stac, tiles_folder

            stac = import_stac(
                engine, spec.source, tiles_folder(settings, spec.tiles), asset=spec.asset,
                max_cloud=spec.max_cloud, progress=True,
            )  # fmt: skip
            for line in [*stac.summary(), *stac.problem_lines()]:
                say(line)
            if stac.failure:
                say(f"error: {stac.failure}")
                return 1
        elif isinstance(spec, ReindexJob):
            from index.stores import ReindexOptions
            from service.usecases.reindex import ReindexRequest, reindex_scenes

            options = ReindexOptions(incremental=spec.incremental, replace=not spec.incremental)
            request = ReindexRequest(model=spec.model, options=options)
            outcome = reindex_scenes(
                settings.with_store(index_root=spec.index_root), request, engine
            )
            say(outcome.report.summary() if outcome.report else "the index is current")
        elif isinstance(spec, TrainJob):
            from service.usecases.lifecycle import retrain, training_summary

            promotion = retrain(
                settings, engine, out=spec.out, epochs=spec.epochs, force=spec.force,
                progress=True, on_trained=lambda result: say(training_summary(result)),
                tell=say,
            )  # fmt: skip
            if promotion.done is None:
                return REFUSED
            say(promotion.done)
        elif isinstance(spec, RollbackJob):
            from service.usecases.lifecycle import roll_back

            say(roll_back(settings, engine))
    finally:
        engine.dispose()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m service.jobs.run SPEC_JSON", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugin lines are no output
    spec = spec_from_json(argv[0])
    try:
        with reporting_progress():
            return run(spec, get_settings())
    except (ValueError, LookupError, OSError, RuntimeError) as exc:  # said in one line
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
