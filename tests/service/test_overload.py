"""Load shedding through a real server: past its bounds the service refuses at once with 503,
Retry-After and `overloaded`, counts the refusals in /metrics, never fails otherwise, and
answers normally once the burst is over."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import httpx
import pytest
from servers import LiveServer, Served, prepared_database, server_env

from model.archive import load_archive
from service.runtime import MODEL_REQUESTS_PER_CORE, model_request_bound
from service.settings import Settings

BURST = 24


async def burst(url: str, send: object, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return list(await asyncio.gather(*(send(client, n) for n in range(count))))  # type: ignore[operator]


def rejected(metrics: str, kind: str) -> float:
    found = re.search(rf'^grn_rejected_requests_total{{kind="{kind}"}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_burst_past_the_bounds_is_refused_at_once(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    env = server_env(
        served,
        url,
        tmp_path,
        GRN_MAX_MODEL_REQUESTS="2",
        GRN_MAX_SEARCHES="1",
        GRN_BATCHING="false",
    )
    archive = load_archive(ucm_root, ucm_subset)
    images = [archive.scenes[n].path.read_bytes() for n in range(8)]
    with LiveServer(env, tmp_path / "server.log") as server:
        with server.client() as client:
            ids = [s["id"] for s in client.get("/scenes", params={"limit": 50}).json()["scenes"]]

        async def classify(client: httpx.AsyncClient, n: int) -> httpx.Response:
            return await client.post("/classify", files={"file": ("a.jpg", images[n % 8])})

        async def search(client: httpx.AsyncClient, n: int) -> httpx.Response:
            return await client.post("/search", json={"scene_id": ids[n % 50], "k": 1000})

        for send, kind in ((classify, "model"), (search, "search")):
            answers = asyncio.run(burst(server.url, send, BURST))
            statuses = [a.status_code for a in answers]
            assert set(statuses) <= {200, 503}, statuses
            refused = [a for a in answers if a.status_code == 503]
            assert refused and statuses.count(200) >= 1, statuses
            for answer in refused:
                assert answer.json()["error"] == "overloaded"
                assert int(answer.headers["Retry-After"]) >= 1
            with server.client() as client:
                metrics = client.get("/metrics").text
                assert rejected(metrics, kind) == len(refused)
                # the burst is over: a lone request is served
                assert asyncio.run(burst(server.url, send, 1))[0].status_code == 200
        assert "grn_model_queue_images 0.0" in metrics
        assert "grn_model_requests_in_flight 0.0" in metrics
        assert "grn_searches_in_flight" in metrics


def test_the_default_bound_scales_with_the_cores_and_can_be_lifted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GRN_MAX_MODEL_REQUESTS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = os.cpu_count() or 1
    assert model_request_bound(Settings(device="cpu")) == MODEL_REQUESTS_PER_CORE * cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what `grn serve --workers 2` sets on 2 cores
    assert model_request_bound(Settings(device="cpu")) == MODEL_REQUESTS_PER_CORE
    assert model_request_bound(Settings(device="cuda")) == 0  # never measured on a GPU
    monkeypatch.setenv("GRN_MAX_MODEL_REQUESTS", "0")
    assert model_request_bound(Settings(device="cpu")) == 0
    monkeypatch.setenv("GRN_MAX_MODEL_REQUESTS", "5")
    assert model_request_bound(Settings(device="cuda")) == 5
