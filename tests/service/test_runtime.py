"""The service's model runtime: batching gives what one-by-one gives, and the query vector of
an archive image is the vector its index holds."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from servers import Served

from model.archive import load_archive, scene_id
from model.imageio import InvalidImageError, read_image
from service import runtime as runtime_module
from service.runtime import Batcher, Inference, Runtime
from service.settings import Settings


async def until(event: threading.Event) -> None:
    """Wait, off the event loop, for `event` set by another thread (the model thread)."""
    assert await asyncio.to_thread(event.wait, 30), "the event never came"


def infer_all(
    runtime: Runtime, images: list[np.ndarray], batching: bool
) -> tuple[list[Inference], list[int]]:
    async def run() -> tuple[list[Inference], list[int]]:
        batcher = Batcher(enabled=batching, max_batch_size=8, wait_ms=50)
        batcher.start()
        try:
            snapshot = runtime.current()
            results = await asyncio.gather(*(batcher.infer(snapshot, [i]) for i in images))
            return [r[0] for r in results], batcher.batch_sizes
        finally:
            await batcher.stop()

    return asyncio.run(run())


def test_batching_returns_what_one_by_one_returns(
    served: Served, ucm_root: Path, ucm_subset: Path
) -> None:
    runtime = Runtime(Settings(model_path=served.model, index_root=served.index_root, device="cpu"))
    assert runtime.refresh() and runtime.problem is None
    archive = load_archive(ucm_root, ucm_subset)
    scenes = archive.scenes[:20]
    images = [read_image(s.path) for s in scenes]
    batched, sizes = infer_all(runtime, images, batching=True)
    single, single_sizes = infer_all(runtime, images, batching=False)
    assert max(sizes) > 1 and sum(sizes) == 20  # concurrent requests shared batches
    assert single_sizes == [1] * 20
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    # the same image gives the vector the indexing job stored for it
    stored = runtime.current().searcher.vectors([scene_id(s.name) for s in scenes])
    np.testing.assert_allclose(np.stack([r.embedding for r in single]), stored, atol=1e-4)


def test_runtime_says_why_it_is_not_ready(tmp_path: Path, served: Served) -> None:
    runtime = Runtime(Settings(model_path=tmp_path / "none.safetensors", index_root=tmp_path))
    assert not runtime.refresh()
    assert "no model file" in (runtime.problem or "")
    runtime = Runtime(Settings(model_path=served.model, index_root=tmp_path / "empty"))
    assert not runtime.refresh()
    assert "grn reindex" in (runtime.problem or "")


def test_the_service_runs_the_checked_engine(
    served: Served, ucm_root: Path, ucm_subset: Path
) -> None:
    """On a CPU the served network runs on ONNX Runtime (the graph in the model file), and
    its answers are torch's to 1e-4."""
    import torch

    from model.card import has_graph, load_model
    from model.inference import predict

    assert has_graph(served.model)  # training stored the graph
    runtime = Runtime(Settings(model_path=served.model, index_root=served.index_root, device="cpu"))
    assert runtime.refresh()
    snapshot = runtime.current()
    assert snapshot.net.engine is not None and snapshot.net.engine.name == "onnxruntime"
    calls: list[int] = []
    real = snapshot.net.engine.engine

    class Spy:
        name = "spy"

        def run(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
            calls.append(len(images))
            return real.run(images)  # type: ignore[no-any-return]

    snapshot.net.engine.engine = Spy()
    images = [read_image(s.path) for s in load_archive(ucm_root, ucm_subset).scenes[:6]]
    answers, _ = infer_all(runtime, images, batching=False)
    assert calls == [1] * 6
    reference, card = load_model(served.model, engine="torch")
    expected = predict(reference, card, images, torch.device("cpu"))
    got = np.stack([a.embedding for a in answers])
    assert np.abs(got - expected.embeddings).max() <= 1e-4
    assert (
        np.abs(np.stack([a.probabilities for a in answers]) - expected.probabilities).max() <= 1e-4
    )


def test_a_lone_image_on_an_idle_model_runs_with_its_decoding(
    served: Served, ucm_root: Path, ucm_subset: Path
) -> None:
    """`infer_when_idle` decodes on the model thread and gives what the queue gives; it
    declines while the model is busy, and a decoding error reaches the caller and leaves the
    batcher working."""
    runtime = Runtime(Settings(model_path=served.model, index_root=served.index_root, device="cpu"))
    assert runtime.refresh()
    scenes = load_archive(ucm_root, ucm_subset).scenes[:3]
    images = [read_image(s.path) for s in scenes]

    def broken() -> np.ndarray:
        raise InvalidImageError("x.jpg: cannot decode it")

    running, release = threading.Event(), threading.Event()

    def held_image() -> np.ndarray:  # decoded on the model thread, until the test lets it go
        running.set()
        assert release.wait(30)
        return images[1]

    async def run() -> None:
        batcher = Batcher(enabled=True, max_batch_size=8, wait_ms=50)
        batcher.start()
        try:
            snapshot = runtime.current()
            lone = await batcher.infer_when_idle(snapshot, lambda: images[0])
            (queued,) = await batcher.infer(snapshot, images[:1])
            assert lone is not None and batcher.batch_sizes == [1, 1]
            np.testing.assert_allclose(lone.embedding, queued.embedding, atol=1e-6)
            np.testing.assert_allclose(lone.probabilities, queued.probabilities, atol=1e-6)
            # while one runs, a second lone image is declined (it would wait behind it)
            first = asyncio.ensure_future(batcher.infer_when_idle(snapshot, held_image))
            await until(running)
            assert await batcher.infer_when_idle(snapshot, lambda: images[2]) is None
            release.set()
            assert await first is not None
            with pytest.raises(InvalidImageError, match="cannot decode"):
                await batcher.infer_when_idle(snapshot, broken)
            assert await batcher.infer_when_idle(snapshot, lambda: images[2]) is not None
        finally:
            release.set()
            await batcher.stop()

    asyncio.run(run())


def test_a_lone_image_is_declined_while_a_batch_handed_after_it_runs(
    served: Served, ucm_root: Path, ucm_subset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch handed to the model thread while a lone image runs keeps the model busy after
    the lone image is back: the next lone image is declined until the batch is done."""
    runtime = Runtime(Settings(model_path=served.model, index_root=served.index_root, device="cpu"))
    assert runtime.refresh()
    images = [read_image(s.path) for s in load_archive(ucm_root, ucm_subset).scenes[:3]]
    lone_running, lone_gate, batch_gate = threading.Event(), threading.Event(), threading.Event()
    real_run_model = runtime_module._run_model

    def gated_run_model(snapshot: Any, batch: Any) -> list[Inference]:
        if len(batch) > 1:
            assert batch_gate.wait(30)
        return real_run_model(snapshot, batch)

    monkeypatch.setattr(runtime_module, "_run_model", gated_run_model)

    def gated_image() -> np.ndarray:
        lone_running.set()
        assert lone_gate.wait(30)
        return images[0]

    async def run() -> None:
        batcher = Batcher(enabled=True, max_batch_size=8, wait_ms=50)
        batch_handed = asyncio.Event()
        hand_over = batcher._executor.submit

        def submit(function: Any, *args: Any) -> Any:  # on the loop, as the batcher hands over
            handed = hand_over(function, *args)
            if function is gated_run_model:
                batch_handed.set()
            return handed

        monkeypatch.setattr(batcher._executor, "submit", submit)
        batcher.start()
        try:
            snapshot = runtime.current()
            lone = asyncio.ensure_future(batcher.infer_when_idle(snapshot, gated_image))
            await until(lone_running)
            batch = asyncio.ensure_future(batcher.infer(snapshot, images[1:]))
            # the batcher hands the batch over, behind the lone image
            await asyncio.wait_for(batch_handed.wait(), 30)
            assert not batch.done()
            lone_gate.set()
            assert await lone is not None
            assert await batcher.infer_when_idle(snapshot, lambda: images[0]) is None
            batch_gate.set()
            assert len(await batch) == 2
            assert await batcher.infer_when_idle(snapshot, lambda: images[0]) is not None
        finally:
            lone_gate.set()
            batch_gate.set()
            await batcher.stop()

    asyncio.run(run())
