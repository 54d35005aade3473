"""Serving commands: the HTTP API (`grn serve`), prepare-and-serve with no other command
(`grn up`, what the container runs), and the worker that runs the admin jobs queued in SQL."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from service.cli.app import DatabaseOpt, app, engine, fail, message, show_log


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: GRN_HOST (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Default: GRN_PORT (8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default GRN_WORKERS, 1).")] = None,
) -> None:
    """Serve the HTTP API (settings from the GRN_ environment variables)."""
    import uvicorn

    from service.api.workers import check_free, reuse_port_supported, shared_metrics, supervise
    from service.settings import get_settings

    settings = get_settings()
    host, port = host or settings.server.host, port or settings.server.port
    workers = workers or settings.server.workers
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        # each worker runs its own network: split the cores, not N teams on every core
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // workers))
    options: dict[str, Any] = {
        "log_level": "info",
        "access_log": False,  # the app logs one line per request, with its request id
        "timeout_keep_alive": int(settings.server.keep_alive_seconds),
    }
    own_sockets = workers > 1 and reuse_port_supported()
    if own_sockets:
        # a socket per worker, connections spread by the kernel (service/api/workers.py)
        try:
            check_free(host, port)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    typer.echo(f"serving on http://{host}:{port} (API docs at http://{host}:{port}/docs)")
    with shared_metrics(workers):  # /metrics adds up every worker's
        if own_sockets:
            raise typer.Exit(supervise(host, port, workers, options))
        uvicorn.run(
            "service.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            **options,
        )


LeaseOpt = Annotated[
    float | None,
    typer.Option(
        help="Take back a running job whose worker is silent this long (default "
        "GRN_JOB_LEASE_SECONDS, 30).",
    ),
]
OnceOpt = Annotated[bool, typer.Option("--once", help="Run the jobs waiting now, then exit.")]


@app.command()
def worker(
    database_url: DatabaseOpt = None,
    lease_seconds: LeaseOpt = None,
    once: OnceOpt = False,
) -> None:
    """Run the admin jobs queued in SQL (imports, reindexes) one at a time, with the
    service's settings; any number of workers may run against one database, each job runs
    on one of them. Stops on SIGTERM or Ctrl-C after the job in progress is stopped."""
    import signal as signals

    from service.jobs.queue import JobQueue
    from service.jobs.worker import Worker
    from service.settings import get_settings

    settings = get_settings()
    connected = engine(database_url)
    queue = JobQueue(connected)
    try:
        queue.ping()
    except Exception as exc:  # the table is missing, or the database is down
        fail(f"cannot read the jobs table ({message(exc)}); run `grn db upgrade`")
    show_log("grn.jobs")
    env = settings.as_environment()
    if database_url:
        env["GRN_DATABASE_URL"] = database_url
    lease = settings.jobs.job_lease_seconds if lease_seconds is None else lease_seconds
    runner = Worker(queue, env, lease_seconds=lease)
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
        connected.dispose()


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
    train_only: Annotated[
        bool,
        typer.Option(
            "--train-only",
            help="Only train the model when there is none, then exit (the compose trainer "
            "service, for a serving image without torch).",
        ),
    ] = False,
) -> None:
    """Prepare and serve, with no other command: migrate the schema, import GRN_ARCHIVE_DIR,
    train a head-mode model when GRN_MODEL_PATH has none, reindex when the index is stale,
    and serve all along (/readyz says how far it got, or what to fix). Without torch (the
    serving image) the model is trained by `grn up --train-only` where torch is."""
    from pydantic import ValidationError

    from service.api.prepare import Options, serve_prepared, train_options_from
    from service.settings import Settings, variable_of

    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"{variable_of(first['loc'])}: {first['msg']}")
    if archive_source is None:
        archive_source = os.environ.get("GRN_ARCHIVE_SOURCE")
    options = Options(
        archive_source=archive_source,
        train_options=train_options_from(train_options),
        skip_broken=skip_broken,
        retry_seconds=retry_seconds,
    )
    if train_only:  # refuses what the api refuses: unsafe settings, a wrong archive
        from service.api.security import InsecureSettingsError, check_production
        from service.usecases.bringup import PreparationError
        from service.usecases.bringup import train_only as train

        try:
            check_production(settings)
            train(settings, options)
        except (InsecureSettingsError, PreparationError) as exc:
            fail(exc)
        return
    serve_prepared(settings, options)
