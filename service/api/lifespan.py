"""The service's life: what starts before the first request and stops after the last (SQL
engine, vector store, model runtime and batcher, worker threads, admin jobs), the poller that
takes up a new model and index, and the record in SQL of what is served."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI

from service.api.deps import LoopBudget
from service.api.observability import Metrics
from service.jobs.queue import JobQueue
from service.jobs.worker import Worker, worker_name
from service.runtime import Admission, Batcher, Runtime, model_request_bound
from service.settings import Settings
from service.storage.catalog import Catalog
from service.storage.db import make_engine
from service.storage.render_cache import RenderCache

log = logging.getLogger("grn.app")
REPO_ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the service's parts (`app.state.settings` and `.metrics` are set by
    `create_app`), serve, then stop them."""
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    engine = make_engine(settings.database.database_url)
    runtime = Runtime(settings)
    batcher = Batcher(
        enabled=settings.model.batching,
        max_batch_size=settings.model.max_batch_size,
        wait_ms=settings.model.batch_wait_ms,
        observer=metrics.observe_batch,
    )
    model_requests = Admission(model_request_bound(settings), "model")
    searches = Admission(settings.limits.max_searches, "search")
    metrics.watch(batcher, model_requests, searches)
    files = settings.files
    render_cache = RenderCache(
        files.thumbnail_dir, files.render_cache_max_bytes, files.render_cache_max_files
    )
    app.state.render_cache = render_cache
    metrics.watch_render_cache(render_cache)
    # count what the cache holds off the event loop, before /metrics or a rendering asks
    threading.Thread(target=lambda: render_cache.current, name="grn-cache", daemon=True).start()
    app.state.job_queue = JobQueue(engine)
    app.state.engine = engine
    app.state.catalog = Catalog(engine, postgis=settings.database.postgis)
    runtime.run_torch = batcher.call  # models load on the model thread
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(
            max_workers=settings.limits.io_threads,
            thread_name_prefix="grn-io",
            initializer=runtime.store.init_worker_thread,
        )
    )
    app.state.runtime = runtime
    app.state.batcher = batcher
    app.state.model_requests = model_requests
    app.state.searches = searches
    app.state.search_budget = LoopBudget()  # searches short enough run on the event loop,
    runtime.store.init_worker_thread()  # so this thread is set up to search as well
    numpy_blas_single_threaded()
    batcher.start()
    await refresh_served(app)
    poller = asyncio.create_task(_poll(app)) if settings.server.index_poll_seconds > 0 else None
    # with workers, each writes the gauges other workers' scrapes cannot read from it
    sampler = asyncio.create_task(metrics.sample_forever()) if metrics.directory else None
    worker = _start_worker(app) if settings.jobs.embedded_worker else None
    try:
        yield
    finally:
        for task in (poller, sampler):
            if task is not None:
                task.cancel()
        if worker is not None:
            worker.stopping.set()  # a job in progress is stopped and queued again
        await batcher.stop()
        runtime.store.close()
        engine.dispose()
        metrics.close()


def numpy_blas_single_threaded() -> None:
    """numpy's BLAS (not FAISS's, nor the model's engines) on one thread: a search's
    products are one query's (a 15,600 x 145 product at a million scenes), and a second
    BLAS thread only waits for a core that requests and the model hold: 4.0 ms on two
    threads against 0.47 ms on one, under load (docs/scaling.md)."""
    from threadpoolctl import ThreadpoolController

    for library in ThreadpoolController().lib_controllers:
        if library.user_api == "blas" and "numpy" in library.filepath:
            library.set_num_threads(1)


def _start_worker(app: FastAPI) -> Worker:
    """The embedded job worker: a thread that runs queued jobs as child processes; a
    reindex it completes is taken up at once."""
    settings: Settings = app.state.settings
    loop = asyncio.get_running_loop()

    def take_up(_job: object) -> None:
        asyncio.run_coroutine_threadsafe(refresh_served(app), loop)

    worker = Worker(
        app.state.job_queue,
        settings.as_environment(),
        name=worker_name("api"),
        lease_seconds=settings.jobs.job_lease_seconds,
        on_success=take_up,
    )
    threading.Thread(target=worker.run_forever, name="grn-jobs", daemon=True).start()
    return worker


async def refresh_served(app: FastAPI) -> bool:
    """Take up a new model and index if there is one (recording them in SQL); returns
    whether the pair in service changed."""
    swapped: bool = await asyncio.to_thread(app.state.runtime.refresh)
    if swapped:
        await asyncio.to_thread(record_served, app)
    return swapped


async def _poll(app: FastAPI) -> None:
    while True:
        await asyncio.sleep(app.state.settings.server.index_poll_seconds)
        try:
            await refresh_served(app)
        except Exception:  # the poller must outlive any one failure
            log.exception("index poll failed")


def record_served(app: FastAPI) -> None:
    """Record the model and index in service in SQL (best effort: the database may be down)."""
    runtime: Runtime = app.state.runtime
    snapshot = runtime.snapshot
    if snapshot is None:
        return
    searcher = snapshot.searcher
    try:
        count = searcher.count
        app.state.metrics.served(snapshot.model_version, snapshot.index_version, count)
        app.state.catalog.register(
            snapshot.card.version,
            snapshot.card.backbone,
            str(snapshot.model_file),
            snapshot.card.to_json(),
            searcher.version,
            searcher.factory,
            count,
            runtime.index_location,
            searcher.created,
        )
    except Exception as exc:  # registering is bookkeeping, never a reason to fail
        log.warning("could not record the model and index versions in SQL: %s", exc)
