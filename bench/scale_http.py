"""The measures `bench.scale` takes through a running server, one client, one request at a
time: searches by id (with recall against brute force), by upload, adds, listing pages, the
CSV export, and searches kept going while a reindex swaps the index."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from bench._common import UCM, percentiles
from bench.ingest import variants
from bench.paging import listing_rows, peak_rss_kib
from bench.scale_truth import Truth
from model import rerank
from service.storage.catalog import Catalog

K = 10
WRITE_KEY = "bench-scale-key-0123456789abcdef"
FOUND_TIMEOUT_S = 30.0


def _post(client: httpx.Client, **request: Any) -> tuple[float, dict[str, Any]]:
    """POST /search; the time in ms and the answer (SystemExit on an error status)."""
    started = time.perf_counter()
    response = client.post("/search", **request)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"POST /search {request}: {response.status_code} {response.text[:300]}")
    return elapsed, response.json()


def searches(
    client: httpx.Client, truth: Truth, rows: np.ndarray, fields: dict[str, Any]
) -> dict[str, Any]:
    """Searches by the scenes at `rows` with the filter `fields`: p50/p99, recall@10 against
    brute force over the scenes the filter keeps, and the pages shorter than they can be."""
    kept = truth.keeps(fields)
    times, recalls, short, reranked = [], [], 0, 0
    for row in rows:
        body = {"scene_id": str(truth.ids[row]), "k": K, **fields}
        elapsed, answer = _post(client, json=body)
        times.append(elapsed)
        got = [int(hit["id"]) for hit in answer["hits"]]
        pool = rerank.POOL if answer.get("reranked") else None
        expected = truth.nearest(int(row), kept, K, pool)
        recalls.append(len(set(got) & set(expected)) / max(1, len(expected)))
        short += len(got) < len(expected)
        reranked += bool(answer.get("reranked"))
    return {
        **percentiles(times, upper=(99,)),
        "selectivity": round(float(kept.mean()), 4),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "min_recall_at_10": round(float(np.min(recalls)), 4),
        "short_pages": short,
        "reranked": reranked,
        "fields": fields,
    }


def upload_searches(client: httpx.Client, repeat: int) -> dict[str, Any]:
    """Searches by an uploaded UCM image (k=10), `repeat` images, each a new file."""
    times = [
        _post(client, files={"file": (f"{name}.jpg", data)}, data={"k": str(K)})[0]
        for name, data in variants(UCM, repeat)
    ]
    return percentiles(times, upper=(99,))


def adds(client: httpx.Client, count: int) -> dict[str, Any]:
    """`count` new images added one per POST /scenes: each request's time and the time from
    sending it until a search by the new scene's id finds the scene (include_query)."""
    headers = {"X-API-Key": WRITE_KEY}
    add_ms, found_ms = [], []
    for name, data in variants(UCM, count, skip=700):
        started = time.perf_counter()
        response = client.post(
            "/scenes", files={"file": (f"{name}.jpg", data)}, data={"name": name}, headers=headers
        )
        add_ms.append((time.perf_counter() - started) * 1000)
        if response.status_code != 201:
            raise SystemExit(f"POST /scenes: {response.status_code} {response.text[:300]}")
        new_id = response.json()["scenes"][0]["id"]
        body = {"scene_id": new_id, "k": K, "include_query": True}
        while time.perf_counter() - started < FOUND_TIMEOUT_S:
            found = client.post("/search", json=body)
            if found.status_code == 200 and any(h["id"] == new_id for h in found.json()["hits"]):
                break
        else:
            raise SystemExit(f"scene {new_id} not found by a search {FOUND_TIMEOUT_S:.0f} s on")
        found_ms.append((time.perf_counter() - started) * 1000)
    return {"add": percentiles(add_ms, upper=(99,)), "found": percentiles(found_ms, upper=(99,))}


def pages(client: httpx.Client, catalog: Catalog, repeat: int) -> list[dict[str, Any]]:
    """GET /scenes by id at depth 0, half way and the last page: by cursor and by offset
    (bench.paging's measure)."""
    return list(listing_rows(client, catalog, "by id", {"order": "id"}, repeat))


def export(client: httpx.Client, pid: int, fields: dict[str, Any]) -> dict[str, Any]:
    """GET /scenes/export?format=csv of the scenes `fields` keep, read as it streams: rows,
    MiB, seconds, and the server's peak RSS before and after."""
    before = peak_rss_kib(pid)
    started = time.perf_counter()
    size = lines = 0
    with client.stream("GET", "/scenes/export", params={"format": "csv", **fields}) as response:
        response.raise_for_status()
        for piece in response.iter_bytes():
            size += len(piece)
            lines += piece.count(b"\n")
    return {
        "rows": lines - 1, "mib": round(size / 2**20, 1),
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_before_mib": before // 1024, "peak_rss_after_mib": peak_rss_kib(pid) // 1024,
    }  # fmt: skip


class Searcher(threading.Thread):
    """Searches by id back to back until stopped: times, failures (an error status or no
    answer) and the index versions answered."""

    def __init__(self, url: str, ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.ids = url, ids
        self.times: list[float] = []
        self.failures: list[str] = []
        self.versions: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            n = 0
            while not self.stop.is_set():
                started = time.perf_counter()
                body = {"scene_id": self.ids[n % len(self.ids)]}
                try:
                    response = client.post("/search", json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                finally:
                    n += 1
                self.times.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
                    continue
                version = response.json()["index_version"]
                self.versions[version] = self.versions.get(version, 0) + 1


def reindex_while_searching(
    url: str, ids: list[str], reindex: Callable[[], subprocess.CompletedProcess[str]]
) -> dict[str, Any]:
    """`reindex()` (a full `grn reindex --catalog`) while a client keeps searching, then the
    wait until the server answers from the new version (it polls the index root): the
    reindex's seconds, the swap's, the searches' p50/p99 and their failures."""
    searcher = Searcher(url, ids)
    searcher.start()
    started = time.perf_counter()
    done = reindex()
    built = time.perf_counter() - started
    if done.returncode != 0:
        searcher.stop.set()
        raise SystemExit(f"grn reindex failed: {done.stderr[-2000:]}")
    while time.perf_counter() - started < built + 120 and len(searcher.versions) < 2:
        time.sleep(0.1)
    served = time.perf_counter() - started
    searcher.stop.set()
    searcher.join()
    return {
        "reindex_s": round(built, 1),
        "until_served_s": round(served, 1),
        "swapped": len(searcher.versions) > 1,
        "searches": percentiles(searcher.times, upper=(99,)),
        "failures": len(searcher.failures),
        "failure_examples": searcher.failures[:3],
        "versions": searcher.versions,
    }
