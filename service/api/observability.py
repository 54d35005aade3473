"""Metrics (Prometheus text format at /metrics) and request logs with request ids.

Each app has its own registry, so several apps in one process (tests) never share series.
With `grn serve --workers N` prometheus_client runs in its multiprocess mode: the supervisor
sets PROMETHEUS_MULTIPROC_DIR before the workers start (`service.api.workers.shared_metrics`),
each worker writes its values to files there, and /metrics, whichever worker answers, adds
up every worker's: counters and histograms summed (a dead worker's counts included, so they
never go back), each gauge by the mode its `multiprocess_mode` names. Gauges read at scrape
time (queue depth, requests in flight, render cache) are written by each worker every
`SAMPLE_SECONDS` instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.asgi import Headers, HttpMiddleware

REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SAMPLE_SECONDS = 1.0
"""With workers, how often each writes the gauges that are otherwise read at scrape time."""

log = logging.getLogger("grn.requests")


def shared_directory() -> str | None:
    """The folder the workers' metrics go to when prometheus_client runs in its multiprocess
    mode (PROMETHEUS_MULTIPROC_DIR was set when it was imported), else None."""
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    def __init__(self) -> None:
        self.directory = shared_directory()
        """Where every worker's metrics are added up from (None: one process, this registry)."""
        self._sampled: list[tuple[Gauge, Callable[[], float]]] = []
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "grn_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "grn_http_request_duration_seconds",
            "Time from request to response",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "grn_model_inference_seconds",
            "Time the model takes for one batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "grn_model_batch_size",
            "Images per model batch",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )

        def gauge(name: str, doc: str, mode: Any, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=r, multiprocess_mode=mode)

        # with workers: the count of the index a worker took up last
        self.index_vectors = gauge(
            "grn_index_vectors", "Vectors in the index served", "livemostrecent"
        )
        # with workers: 1 for every pair a live worker serves (both while they swap)
        self.index_info = gauge(
            "grn_index_info", "The model and index versions served (value 1)", "livemax",
            ("model_version", "index_version"),
        )  # fmt: skip
        self.database_errors = Counter(
            "grn_database_errors",
            "Requests that failed because the database did not answer",
            registry=r,
        )
        self.reloads = Counter("grn_reloads", "Model and index swaps", registry=r)
        self.rejected = Counter(
            "grn_rejected_requests",
            "Requests refused with 503 because the service was full (kind: model or search)",
            ["kind"],
            registry=r,
        )
        # with workers: the service's total, the live workers' sum
        self.model_queue = gauge(
            "grn_model_queue_images", "Images waiting for the network", "livesum"
        )
        self.model_requests = gauge(
            "grn_model_requests_in_flight", "Requests in the model's pipeline", "livesum"
        )
        self.searches = gauge("grn_searches_in_flight", "Searches running", "livesum")
        # with workers: one folder that each counts, so the latest count
        on_disk = "Thumbnails and previews on disk"
        self.render_cache_bytes = gauge(
            "grn_render_cache_bytes", f"{on_disk}, bytes", "livemostrecent"
        )
        self.render_cache_files = gauge(
            "grn_render_cache_files", f"{on_disk}, files", "livemostrecent"
        )

    def watch(self, batcher: Any, model_requests: Any, searches: Any) -> None:
        """Read the queue's depth and the requests in flight at each scrape."""
        self._read(self.model_queue, lambda: batcher.depth)
        self._read(self.model_requests, lambda: model_requests.active)
        self._read(self.searches, lambda: searches.active)

    def watch_render_cache(self, cache: Any) -> None:
        """Read the render cache's size at each scrape (NaN until it is first counted)."""
        self._read(self.render_cache_bytes, lambda: cache.counted("bytes"))
        self._read(self.render_cache_files, lambda: cache.counted("files"))

    def _read(self, gauge: Gauge, read: Callable[[], float]) -> None:
        if self.directory is None:
            gauge.set_function(read)
        else:  # another worker's scrape cannot call this one's function: `sample` writes it
            self._sampled.append((gauge, read))

    def sample(self) -> None:
        """With workers: write the gauges read at scrape time to this worker's files."""
        for gauge, read in self._sampled:
            gauge.set(read())

    async def sample_forever(self) -> None:
        """`sample` every `SAMPLE_SECONDS` (with workers; the lifespan runs it)."""
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    def exposition(self) -> bytes:
        """The text /metrics answers: this process's registry, or with workers every
        worker's metrics added up."""
        if self.directory is None:
            return generate_latest(self.registry)
        self.sample()  # this worker's gauges as of now
        everyone = CollectorRegistry()
        MultiProcessCollector(everyone, self.directory)
        return generate_latest(everyone)

    def close(self) -> None:
        """With workers: drop this worker's live gauges from the sums (its counts stay)."""
        if self.directory is not None:
            mark_process_dead(os.getpid(), self.directory)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def served(self, model_version: str, index_version: str, vectors: int) -> None:
        serving = (model_version, index_version)
        previous = getattr(self, "_serving", serving)
        if previous != serving:
            self.reloads.inc()
        self._serving = serving
        if self.directory is None:
            self.index_info.clear()
        else:  # a series cannot leave the workers' files: the pair no longer served reads 0
            self.index_info.labels(*previous).set(0)
        self.index_info.labels(model_version, index_version).set(1)
        self.index_vectors.set(vectors)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    RESERVED: ClassVar[set[str]] = set(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(
            {k: v for k, v in vars(record).items() if k not in self.RESERVED and k != "message"}
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(fmt: str, level: str = "INFO") -> None:
    """`json` or `text` logs on stderr for the grn loggers."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("grn")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class RequestLog(HttpMiddleware):
    """Gives every request an id (the client's `X-Request-ID` when it is sane, else a new
    one), returns it in the response header, counts and times the request by its route
    template, and logs one line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, headers: Headers, receive: Receive, send: Send) -> None:
        given = headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = given if _CLIENT_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            log.info(
                "%s %s %d %.1f ms",
                method,
                scope.get("path", ""),
                status,
                elapsed * 1000,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "path": scope.get("path", ""),
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
