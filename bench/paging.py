"""`GET /scenes` at any depth: offset paging (the baseline) against keyset cursors, through a
real server over a synthetic catalog on SQLite and PostgreSQL, and the peak memory of an
export of the catalog, streamed against the body built whole, in the same run.

    python -m bench.paging                                  # 10k, 100k and 1M scenes
    python -m bench.paging --sizes 10000 100000 --databases sqlite
    python -m bench.paging --out docs/results/paging.json

For each database and size: a synthetic catalog (`bench.metadata.synthetic_catalog`), a
`grn serve` over it (no model: the listing needs only SQL and the catalog's arrays, read
first through GET /places as a search would), and for three listings (by id, by
name, by id with one label, about 18% of the scenes) the page of 50 at depth 0, half way and
the last page, asked by `offset` and by `cursor` (the cursor a walk would carry there),
interleaved: p50 and p99 of the request as the client sees it. Each cursor page is checked
to hold the offset page's scenes. Then, at the sizes up to `--export-max`, the CSV and
GeoJSON exports of every scene: peak Python memory (tracemalloc) of the body built whole
from every row held at once (the way a search's `format=csv` answers) against the stream
`GET /scenes/export` sends,
and the server's peak RSS before and after it streamed the CSV over HTTP.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench._common import percentiles
from bench.metadata import synthetic_catalog
from bench.server import serve
from index.filters import SceneFilter
from service.api.cursors import Cursor
from service.api.exports import scenes_csv, scenes_geojson
from service.api.routes.archive import scene_out
from service.api.schemas.archive import SceneListing, SceneOut
from service.storage.catalog import Catalog
from service.storage.db import make_engine
from service.storage.listing import ListedScene, Seek

LIMIT = 50
LISTINGS: dict[str, dict[str, str]] = {
    "by id": {"order": "id"},
    "by name": {"order": "name"},
    "label water, by id": {"order": "id", "labels_all": "water"},
}
OFFSET_BUDGET_S = 20.0
"""Offset pages deep in a large catalog take seconds: past this much time a cell stops at
five samples."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--postgresql-url", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--export-max", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    for database in args.databases:
        url = args.postgresql_url if database == "postgresql" else None
        for size in args.sizes:
            started = time.perf_counter()
            with synthetic_catalog(url, size) as scoped:
                built = time.perf_counter() - started
                print(f"\n{database}, {size} scenes (built in {built:.0f} s)", flush=True)
                result = measure(scoped, size, args.repeat, size <= args.export_max)
            results.append({"database": database, "scenes": size, "build_s": built, **result})
            if args.out:
                args.out.write_text(json.dumps(results, indent=1) + "\n")


def measure(url: str, size: int, repeat: int, export: bool) -> dict[str, Any]:
    """The paging table of one catalog, and its exports' memory when `export`."""
    catalog = Catalog(make_engine(url))
    with tempfile.TemporaryDirectory() as workdir:
        env = {
            "GRN_DATABASE_URL": url,
            "GRN_MODEL_PATH": f"{workdir}/no-model.safetensors",
            "GRN_INDEX_ROOT": f"{workdir}/index",
            "GRN_EMBEDDED_WORKER": "false",
            "GRN_LOG_LEVEL": "WARNING",
        }
        with (
            serve(env, ready_path="/healthz") as server,
            httpx.Client(base_url=server.url, timeout=300) as client,
        ):
            # the catalog's arrays, which a serving process holds from its first search on
            # and which count a page's total (`Catalog.page`): GET /places reads them
            warm = time.perf_counter()
            client.get("/places").raise_for_status()
            print(f"  arrays read in {time.perf_counter() - warm:.1f} s", flush=True)
            pages = [
                row
                for name, params in LISTINGS.items()
                for row in listing_rows(client, catalog, name, params, repeat)
            ]
            streamed_rss = served_export(client, server.pid) if export else None
    exports = export_memory(catalog) if export else None
    catalog.engine.dispose()
    return {"pages": pages, "export": exports, "server_export_rss": streamed_rss}


def listing_rows(
    client: httpx.Client, catalog: Catalog, name: str, params: dict[str, str], repeat: int
) -> Iterator[dict[str, Any]]:
    """For one listing, a row per depth: offset and cursor pages' p50 and p99 (ms)."""
    listing = SceneListing.model_validate(params)
    where, order = listing.to_filter(), listing.order
    _, total = catalog.page(where, 0, 1, order=order)
    assert total is not None
    for _ in range(3):  # untimed: the server's first queries of a listing (plans, pool)
        timed_get(client, {**params, "limit": str(LIMIT)})
    for label, depth in (("0", 0), ("N/2", total // 2), ("last", max(0, total - LIMIT))):
        query = {**params, "limit": str(LIMIT)}
        by_cursor = dict(query)
        if depth:
            (before,), _ = catalog.page(where, depth - 1, 1, order=order, count=False)
            seek = Seek.after(order, before)
            cursor = Cursor(seek, depth, total, listing.fingerprint())
            by_cursor["cursor"] = cursor.encode()
        offset_ms, cursor_ms = timed_pair(
            client, {**query, "offset": str(depth)}, by_cursor, repeat
        )
        row = {
            "listing": name, "matching": total, "depth": label, "offset_at": depth,
            "offset": percentiles(offset_ms, upper=(99,)),
            "cursor": percentiles(cursor_ms, upper=(99,)),
        }  # fmt: skip
        o, c = row["offset"], row["cursor"]
        print(
            f"  {name:<20} {label:>4} ({depth:>7}): offset p50 {o['p50_ms']:8.2f} "
            f"p99 {o['p99_ms']:8.2f} (n {o['n']}) | cursor p50 {c['p50_ms']:6.2f} "
            f"p99 {c['p99_ms']:6.2f} (n {c['n']})",
            flush=True,
        )
        yield row


def timed_pair(
    client: httpx.Client, by_offset: dict[str, str], by_cursor: dict[str, str], repeat: int
) -> tuple[list[float], list[float]]:
    """The two requests, interleaved, `repeat` times (offset stops at five samples once
    OFFSET_BUDGET_S is spent): their times in ms. The two pages must hold the same scenes."""
    offset_ms: list[float] = []
    cursor_ms: list[float] = []
    spent = 0.0
    for _ in range(repeat):
        if len(offset_ms) < 5 or spent < OFFSET_BUDGET_S:
            seconds, page = timed_get(client, by_offset)
            spent += seconds
            offset_ms.append(seconds * 1000)
        seconds, seeked = timed_get(client, by_cursor)
        cursor_ms.append(seconds * 1000)
        if [s["id"] for s in seeked["scenes"]] != [s["id"] for s in page["scenes"]]:
            raise SystemExit(f"the cursor page differs from the offset page: {by_offset}")
    return offset_ms, cursor_ms


def timed_get(client: httpx.Client, params: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.get("/scenes", params=params)
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"GET /scenes {params}: {response.status_code} {response.text[:300]}")
    return seconds, response.json()


def served_export(client: httpx.Client, pid: int) -> dict[str, Any]:
    """The server's peak RSS (VmHWM) before and after it streamed the CSV export of every
    scene, read by the client in pieces as it came."""
    before = peak_rss_kib(pid)
    started = time.perf_counter()
    size = rows = 0
    with client.stream("GET", "/scenes/export", params={"format": "csv"}) as response:
        response.raise_for_status()
        for piece in response.iter_bytes():
            size += len(piece)
            rows += piece.count(b"\n")
    seconds = time.perf_counter() - started
    after = peak_rss_kib(pid)
    print(
        f"  server: CSV export of {rows - 1} scenes, {size / 2**20:.1f} MiB in {seconds:.1f} s; "
        f"peak RSS {before / 1024:.0f} MiB before, {after / 1024:.0f} MiB after",
        flush=True,
    )
    return {"rows": rows - 1, "bytes": size, "seconds": seconds,
            "peak_rss_before_kib": before, "peak_rss_after_kib": after}  # fmt: skip


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


def export_memory(catalog: Catalog) -> dict[str, Any]:
    """Peak Python memory of each export of every scene: the body built whole from every row
    against the stream (chunks of rows read by keyset), each in its own tracemalloc run."""

    def urls(scene_id: int) -> tuple[str, str]:
        return f"http://h/scenes/{scene_id}/image", f"http://h/scenes/{scene_id}/thumbnail"

    def chunks(rows: Iterable[list[ListedScene]]) -> Iterator[list[SceneOut]]:
        return ([scene_out(urls, row) for row in chunk] for chunk in rows)  # type: ignore[arg-type]

    def whole_rows() -> Iterator[list[ListedScene]]:
        yield [row for chunk in catalog.walk(SceneFilter()) for row in chunk]  # all held

    out: dict[str, Any] = {}
    formats: dict[str, Callable[[Iterable[list[SceneOut]]], Iterator[str]]] = {
        "csv": scenes_csv, "geojson": scenes_geojson,
    }  # fmt: skip
    for fmt, write in formats.items():
        for way in ("whole", "streamed"):
            tracemalloc.start()
            started = time.perf_counter()
            if way == "whole":
                size = len("".join(write(chunks(whole_rows()))))
            else:
                size = sum(len(piece) for piece in write(chunks(catalog.walk(SceneFilter()))))
            seconds = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            out[f"{fmt}_{way}"] = {"peak_mib": round(peak / 2**20, 1), "chars": size,
                                   "seconds": round(seconds, 1)}  # fmt: skip
            print(f"  export {fmt:<7} {way:<8}: peak {peak / 2**20:7.1f} MiB, "
                  f"{size / 2**20:6.1f} MiB of text in {seconds:5.1f} s", flush=True)  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(main())
