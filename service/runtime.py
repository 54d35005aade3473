"""What the service holds in memory: a model and the index built from it, swapped together.

A `Snapshot` is one model plus one index version built by that model; it never changes once
made. A request takes the current snapshot when it starts and uses it to the end, so a swap
(after a retrain and reindex) never fails or mixes a request in flight. `Runtime.refresh`
looks for a new model file or a new `current` index version and swaps only when the pair is
consistent: a model whose index has not been rebuilt yet keeps the previous pair in service
and says so in /readyz.

`Batcher` gathers the images of concurrent requests into model batches: the first image of a
batch waits up to `batch_wait_ms` for others, up to `max_batch_size`; one thread runs the
model, so the cores are never oversubscribed. With batching off the same path runs batches
of one. A lone upload on an idle model skips the queue: it is decoded on the model thread
right before its forward pass (`infer_when_idle`), one hand-off between threads instead of
two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from index.stores import (
    IndexModelMismatchError,
    IndexNotReadyError,
    ModelIndex,
    VectorStoreUnavailableError,
    open_store,
)
from model.card import ModelCard, ModelFileError, load_model, read_card, resolve_model_path
from model.engine import cpu_threads, describe
from model.inference import predict, resolve_device
from model.inference import tune_allocator as tune_allocator  # service.api.app applies it
from service.settings import Settings

if TYPE_CHECKING:  # the service runs without torch too (the serving image: the model's graph)
    import torch

    from model.network import GRNNet

log = logging.getLogger("grn.runtime")
T = TypeVar("T")


class OverloadedError(RuntimeError):
    """More work waits than the service takes on: answered at once with 503 and
    Retry-After (`retry_after` seconds) instead of a wait that grows without limit."""

    def __init__(self, message: str, retry_after: int, kind: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.kind = kind
        """What was full: `model` (requests that run the network) or `search`."""


class ServiceNotReadyError(RuntimeError):
    """No model and index are loaded (yet): the reason says what is missing."""


@dataclass(frozen=True)
class Snapshot(ModelIndex):
    """The model in service with the index version it built, and its network."""

    net: GRNNet
    model_file: Path
    model_stamp: tuple[int, int]
    """(mtime_ns, size) of the model file when it was read."""
    device: torch.device
    loaded_at: float = field(default_factory=time.time)


@dataclass
class Inference:
    embedding: np.ndarray
    """(D,) unit vector."""
    probabilities: np.ndarray
    """(labels,) sigmoid of the classifier logits."""
    descriptor: np.ndarray | None = None
    """(F,) unit backbone descriptor, for re-ranking a search (`model.rerank`)."""


def _file_stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = open_store(settings.store)
        """The configured vector store (`index.stores.open_store`)."""
        self.snapshot: Snapshot | None = None
        self.problem: str | None = "not loaded yet"
        """Why the newest model or index is not in service (None when all is current)."""
        self._reload_lock = threading.Lock()
        self.run_torch: Callable[..., Any] = lambda function, *args: function(*args)
        """How torch work (loading a model) is run: the app sends it to the model thread."""

    def current(self) -> Snapshot:
        snapshot = self.snapshot
        if snapshot is None:
            raise ServiceNotReadyError(f"the model and index are not loaded: {self.problem}")
        return snapshot

    def refresh(self, force: bool = False) -> bool:
        """Load a new model and/or index when either changed on disk; returns whether the
        snapshot was swapped. Never raises: a problem is kept in `self.problem`."""
        with self._reload_lock:
            try:
                swapped = self._refresh(force)
            except (
                ModelFileError,
                IndexNotReadyError,
                IndexModelMismatchError,
                VectorStoreUnavailableError,
                OSError,
            ) as exc:
                self.problem = str(exc)
                log.warning("not swapping: %s", exc)
                return False
            self.problem = None
            return swapped

    @property
    def index_location(self) -> str:
        return self.store.location

    def _current_index(self) -> tuple[str, str | None]:
        """The index version that should be in service, and the model it was built by."""
        current = self.store.current()
        if current is None:
            raise IndexNotReadyError(
                f"{self.store.describe_empty()}; run `{self.store.command('full')}`"
            )
        return current.version, current.model_version

    def _refresh(self, force: bool) -> bool:
        old = self.snapshot
        model_file = resolve_model_path(self.settings.model.model_path)
        stamp = _file_stamp(model_file)
        index_version, index_model = self._current_index()
        same_model = old is not None and old.model_file == model_file and old.model_stamp == stamp
        if not force and same_model and old is not None and old.index_version == index_version:
            return False
        if same_model and old is not None:
            net, card, device = old.net, old.card, old.device
        else:
            card = read_card(model_file)
            if old is not None and card.version == old.card.version:
                net, device = old.net, old.device
            else:
                device = resolve_device(self.settings.model.device)
                net, card = self.run_torch(_load_for_inference, model_file, device)
        if index_model != card.version:
            raise IndexModelMismatchError(
                f"the model file {model_file} holds {card.version}, but index {index_version} "
                f"was built by {index_model}; still serving "
                + (f"{old.model_version} with index {old.index_version}" if old else "nothing")
                + f"; run `{self.store.command('replace')}` to build an index with the new model"
            )
        if old is not None and old.index_version == index_version:
            searcher = old.searcher
        else:
            searcher = self.store.open(index_version, card.version)
        self.snapshot = Snapshot(
            card=card, searcher=searcher, net=net, model_file=model_file, model_stamp=stamp,
            device=device,
        )  # fmt: skip
        log.info("serving model %s with index %s", card.version, searcher.version)
        return True


def _load_for_inference(path: Path, device: torch.device) -> tuple[GRNNet, ModelCard]:
    """On a CPU, load_model attaches the checked engine (GRN_ENGINE; ONNX Runtime by
    default) that `predict` runs; a graph that does not match refuses to load."""
    net, card = load_model(path, device)
    log.info("model %s runs on %s (%s)", card.version, describe(net), device)
    if describe(net) != "torch":
        return net, card
    import torch

    return net.to(memory_format=torch.channels_last), card


MODEL_REQUESTS_PER_CORE = 8
"""The default bound on model requests per CPU core (`model_request_bound`). Measured on 2
cores with wrk honouring Retry-After, 128 connections against 16: a bound of 16 kept the
admitted requests' p99 at 1.8x its value at saturation, 32 at 3.1x, no bound at 7.7x
(docs/service.md, "Load shedding")."""


def model_request_bound(settings: Settings) -> int:
    """GRN_MAX_MODEL_REQUESTS, or when unset `MODEL_REQUESTS_PER_CORE` per core the network
    runs on (its engine's threads: every core, or OMP_NUM_THREADS, which `grn serve
    --workers N` sets to cores / N) on the CPU, and no bound (0) on a GPU, where it was never
    measured."""
    if settings.limits.max_model_requests is not None:
        return settings.limits.max_model_requests
    if resolve_device(settings.model.device).type != "cpu":
        return 0
    return MODEL_REQUESTS_PER_CORE * cpu_threads()


class Admission:
    """At most `limit` requests of one kind in flight (0: no bound); past it, the next is
    refused at once with OverloadedError. Used from the event loop's thread only."""

    def __init__(self, limit: int, kind: str) -> None:
        self.limit = limit
        self.kind = kind
        self.active = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if self.limit and self.active >= self.limit:
            raise OverloadedError(
                f"{self.active} {self.kind} requests are in progress (at most {self.limit}); "
                "try again shortly",
                retry_after=1,
                kind=self.kind,
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


@dataclass
class _Job:
    snapshot: Snapshot
    image: np.ndarray
    """(H, W, 3) uint8, decoded."""
    future: asyncio.Future[Inference]


class Batcher:
    """Model batches from concurrent requests (see the module docstring)."""

    def __init__(
        self,
        *,
        enabled: bool,
        max_batch_size: int,
        wait_ms: float,
        observer: Callable[[int, float], None] | None = None,
    ) -> None:
        self.observer = observer
        """Called with each batch's size and model seconds (metrics)."""
        self.max_batch_size = max_batch_size if enabled else 1
        self.wait = wait_ms / 1000 if enabled else 0.0
        self._queue: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        # Every torch operation of the service runs on this one thread (loading, resizing, the
        # network): each thread that runs OpenMP work gets its own team of spinning threads,
        # and with a second team on 2 cores the network ran at 22 instead of 9.5 ms per image.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grn-model")
        self._concurrent = False
        self._handed = 0
        """Batches and lone images handed to the model thread and not yet back: a count, as a
        batch may be handed while a lone image still runs (the thread takes them in turn)."""
        self.batch_sizes: list[int] = []
        """Sizes of the last batches run (bounded), for metrics and tests."""
        # No torch.set_num_threads here: torch already uses every core, and the call starts
        # a pool of threads for other kernels that competed with the model (13.5 against
        # 11.8 ms per image in the service, 2 cores).

    @property
    def depth(self) -> int:
        """Images waiting for the network."""
        return len(self._queue)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="grn-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function` on the model thread and wait for it (from another thread)."""
        return self._executor.submit(function, *args).result()

    async def infer(self, snapshot: Snapshot, images: Sequence[np.ndarray]) -> list[Inference]:
        """Embedding and label probabilities of decoded (H, W, 3) uint8 images."""
        if self._wakeup is None:
            raise ServiceNotReadyError("the model batcher is not running")
        loop = asyncio.get_running_loop()
        jobs = [_Job(snapshot, image, loop.create_future()) for image in images]
        self._queue.extend(jobs)
        self._wakeup.set()
        return list(await asyncio.gather(*(job.future for job in jobs)))

    async def infer_when_idle(
        self, snapshot: Snapshot, make_image: Callable[[], np.ndarray]
    ) -> Inference | None:
        """When the model is idle (nothing queued, nothing running): `make_image` (decoding an
        upload, whose errors reach the caller) and the network in one hand-off to the model
        thread. A lone request then wakes one thread instead of two, which saved about
        0.15 ms of /classify's 5.5 ms (docs/performance.md). None when the model is busy: the
        caller decodes in its own thread and joins the queue (`infer`), so that a decode never
        delays a batch."""
        if self._wakeup is None:
            raise ServiceNotReadyError("the model batcher is not running")
        if self._handed or self._queue:
            return None

        def run() -> tuple[Inference, float]:
            image = make_image()
            started = time.perf_counter()
            return _run_model(snapshot, [image])[0], time.perf_counter() - started

        # the model thread runs one thing at a time: work queued meanwhile waits for this
        self._handed += 1
        try:
            loop = asyncio.get_running_loop()
            result, seconds = await loop.run_in_executor(self._executor, run)
        finally:
            self._handed -= 1
        self._record(1, seconds)
        return result

    def _record(self, size: int, seconds: float) -> None:
        self.batch_sizes = [*self.batch_sizes[-999:], size]
        if self.observer is not None:
            self.observer(size, seconds)

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._queue) < self.max_batch_size and self.wait > 0 and self._concurrent:
                # requests have been arriving together: let those arriving now join this batch
                # (a lone client never waits)
                deadline = loop.time() + self.wait
                while len(self._queue) < self.max_batch_size and loop.time() < deadline:
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), deadline - loop.time())
                    except TimeoutError:
                        break
            batch = [self._queue.popleft()]
            while (
                self._queue
                and len(batch) < self.max_batch_size
                and self._queue[0].snapshot is batch[0].snapshot  # one model per batch
            ):
                batch.append(self._queue.popleft())
            started = time.perf_counter()
            self._handed += 1
            try:
                images = [job.image for job in batch]
                results = await loop.run_in_executor(
                    self._executor, _run_model, batch[0].snapshot, images
                )
            except Exception as exc:  # reaches the requests, never kills the loop
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                self._handed -= 1
            self._concurrent = len(batch) > 1 or bool(self._queue)
            self._record(len(batch), time.perf_counter() - started)
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():  # the client may have gone
                    job.future.set_result(result)


def _run_model(snapshot: Snapshot, images: Sequence[np.ndarray]) -> list[Inference]:
    out = predict(snapshot.net, snapshot.card, images, snapshot.device)
    return [
        Inference(e, p, d)
        for e, p, d in zip(out.embeddings, out.probabilities, out.descriptors, strict=True)
    ]
