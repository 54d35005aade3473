"""The whole service at archive scale (issue 36): for each size, a synthetic archive (`grn
synth`), a bulk import into a fresh SQLite or PostgreSQL database (`grn import --bulk`), `grn
status` and `grn reconcile`, then `grn serve` over it and, one client, one request at a time:

- start-up to ready and the server's RSS (after start-up, and its peak at the end);
- `POST /search` by id, k=10: p50/p99 unfiltered and with filters keeping about 1% and 50%
  of the scenes (labels, bbox, added date), recall@10 against brute force over the same
  filtered set (the archive's vectors/ and columns: `bench.scale_truth`), short pages;
- search by an uploaded UCM image (p50; the 2,100-scene size is its baseline);
- `GET /scenes` by keyset cursor (and by offset, the baseline) at depth 0, half way, last;
- `GET /scenes/export?format=csv` of up to 100,000 scenes (the newest), streamed;
- a full `grn reindex --catalog` (the carried vectors, nothing embedded) while a second
  client keeps searching, until the server answers from the new version: failed requests;
- `POST /scenes` one image at a time: p50, and the time until a search finds the scene.

    python -m bench.scale --scenes 1000000                    # sizes 2,100, 10k, 100k and 1M
    python -m bench.scale --scenes 100000 --database sqlite --out docs/results/scale-100000.json

Archives are kept under `--work` for the next run (`grn synth`'s seconds are printed when it
makes one); databases and indexes are made fresh and dropped after each size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import scale_http
from bench._common import MODEL, UCM, checked_grn, grn, invocation, report_each
from bench.bulk_import import workspace
from bench.scale_truth import Truth, filters, load_truth
from bench.server import serve

BASELINE = 2_100
"""UCM's size: where search by upload is measured as its baseline."""
FIXED_SIZES = (BASELINE, 10_000, 100_000)
EXPORT_ROWS = 100_000


def archive(work: Path, size: int, model: Path) -> tuple[Path, float | None]:
    """A synthetic archive of `size` scenes under `work` (made by `grn synth` when missing)
    and the seconds `grn synth` took (None when it was there)."""
    folder = work / f"synth-{size}"
    if (folder / "vectors/manifest.json").is_file():
        return folder, None
    shutil.rmtree(folder, ignore_errors=True)
    seconds, _ = checked_grn("synth", "--scenes", str(size), "--out", str(folder),
                             "--images", str(UCM), "--model", str(model), "--quiet")  # fmt: skip
    print(f"grn synth --scenes {size}: {seconds:.1f} s", flush=True)
    return folder, seconds


def newest(truth: Truth, count: int) -> dict[str, Any]:
    """The filter fields of the `count` scenes added last (all of them at smaller sizes)."""
    if count >= len(truth):
        return {}
    cut = float(np.sort(truth.added)[len(truth) - count])
    return {"added_after": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cut))}


def service_env(url: str, model: Path, scratch: Path) -> dict[str, str]:
    """The settings of `grn` and `grn serve` over one benchmark database, files under
    `scratch`, the index root polled every second."""
    return {
        "GRN_DATABASE_URL": url,
        "GRN_MODEL_PATH": str(model),
        "GRN_INDEX_ROOT": str(scratch / "index"),
        "GRN_STORE_DIR": str(scratch / "store"),
        "GRN_THUMBNAIL_DIR": str(scratch / "thumbnails"),
        "GRN_WRITE_KEY": scale_http.WRITE_KEY,
        "GRN_INDEX_POLL_SECONDS": "1",
        "GRN_EMBEDDED_WORKER": "false",
        "GRN_LOG_LEVEL": "WARNING",
    }


def measure(folder: Path, truth: Truth, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of one size on one database."""
    size = len(truth)
    url, drop, scratch = workspace(kind, args.postgres, args.work, f"grn_scale_{kind}_{size}")
    env = service_env(url, args.model, scratch)
    out: dict[str, Any] = {"database": kind, "scenes": size, "load_before": os.getloadavg()}
    try:
        checked_grn("db", "upgrade", env=env)
        seconds, line = checked_grn("import", str(folder), "--bulk", "--quiet", env=env)
        out["import"] = {"seconds": round(seconds, 1), "scenes_per_s": round(size / seconds),
                         "said": line}  # fmt: skip
        out["status_s"] = round(checked_grn("status", "--json", env=env)[0], 2)
        seconds, done = grn("reconcile", "--json", env=env)
        out["reconcile"] = {"seconds": round(seconds, 2), "exit": done.returncode}
        out |= served(env, url, truth, args)
    finally:
        drop()
        shutil.rmtree(scratch, ignore_errors=True)
    out["load_after"] = os.getloadavg()
    return out


def served(env: dict[str, str], url: str, truth: Truth, args: argparse.Namespace) -> dict[str, Any]:
    """The figures taken through `grn serve` over the imported catalog."""
    from service.storage.catalog import Catalog
    from service.storage.db import make_engine

    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    rows = rng.choice(len(truth), args.searches, replace=False)
    with serve(env) as server, httpx.Client(base_url=server.url, timeout=300) as client:
        out["startup_s"] = round(server.startup_s, 1)
        out["rss_ready_mib"] = server.rss_kib() // 1024
        for row in rows[:20]:  # warm up
            client.post("/search", json={"scene_id": str(truth.ids[row]), "k": 10})
        out["search"] = {"unfiltered": scale_http.searches(client, truth, rows, {})}
        for label, fields in filters(truth).items():
            taken = rows[: args.filtered_searches]
            out["search"][label] = scale_http.searches(client, truth, taken, fields)
        out["upload"] = scale_http.upload_searches(client, args.uploads)
        catalog = Catalog(make_engine(url))
        out["pages"] = scale_http.pages(client, catalog, args.page_repeat)
        catalog.engine.dispose()
        out["export"] = scale_http.export(client, server.pid, newest(truth, EXPORT_ROWS))
        out["rss_mib"] = server.rss_kib() // 1024
        ids = [str(i) for i in truth.ids[rows]]
        reindex = ("reindex", "--model", str(args.model), "--catalog", "--quiet")
        out["reindex"] = scale_http.reindex_while_searching(
            server.url, ids, lambda: grn(*reindex, env=env)[1]
        )
        out["adds"] = scale_http.adds(client, args.adds)
        out["peak_rss_mib"] = scale_http.peak_rss_kib(server.pid) // 1024
    return out


def row(result: dict[str, Any]) -> str:
    """One line of the table."""
    search = result["search"]
    pages = {page["depth"]: page["cursor"]["p50_ms"] for page in result["pages"]}
    filtered = [search[name] for name in search if name != "unfiltered"]
    cells = [
        f"{result['scenes']:,}", result["database"], f"{result['import']['scenes_per_s']:,}",
        f"{result['startup_s']:.1f}", f"{result['rss_ready_mib']:,} / {result['peak_rss_mib']:,}",
        f"{search['unfiltered']['p50_ms']:.1f} / {search['unfiltered']['p99_ms']:.1f}",
        " ".join(f"{f['p50_ms']:.1f}/{f['p99_ms']:.1f}" for f in filtered),
        f"{min(f['recall_at_10'] for f in filtered):.3f}",
        str(sum(f["short_pages"] for f in filtered)),
        f"{result['upload']['p50_ms']:.0f}",
        f"{result['adds']['add']['p50_ms']:.0f} / {result['adds']['found']['p50_ms']:.0f}",
        " / ".join(f"{pages[d]:.1f}" for d in ("0", "N/2", "last")),
        f"{result['status_s']:.1f}", f"{result['reconcile']['seconds']:.1f}",
        f"{result['reindex']['reindex_s']:.0f} ({result['reindex']['failures']} failed)",
        f"{result['export']['rows']:,} in {result['export']['seconds']:.1f} s",
        "{:.1f} / {:.1f}".format(result["load_before"][0], result["load_after"][0]),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| scenes | database | import scenes/s | start-up s | RSS MiB ready / peak | search p50/p99 "
    "ms | filtered p50/p99 ms (labels, bbox, added at 1%; the same at 50%) | min recall@10 | "
    "short pages | upload p50 ms | POST /scenes p50 / found ms | GET /scenes p50 ms (0 / "
    "N/2 / last, cursor) | status s | reconcile s | reindex s | CSV export | load 1-min "
    "before / after |\n" + "| ---: " * 17 + "|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, required=True, help="The largest size.")
    parser.add_argument("--sizes", type=int, nargs="+", help="Default: 2,100, 10k, 100k, N.")
    parser.add_argument("--database", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])  # fmt: skip
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--work", type=Path, default=Path("/tmp/grn-scale"))
    counts = {"searches": 300, "filtered-searches": 100, "uploads": 30, "adds": 20}
    counts["page-repeat"] = 11
    for name, default in counts.items():  # requests of each kind per size and database
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = sorted(set(args.sizes or [s for s in FIXED_SIZES if s < args.scenes] + [args.scenes]))
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": invocation(), "cores": os.cpu_count(), "results": []}
    print(HEADER, flush=True)
    report_each(report, measured(sizes, args), row, args.out)


def measured(sizes: list[int], args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Each size's archive made (or reused), then measured on each database in turn."""
    for size in sizes:
        folder, synth_s = archive(args.work, size, args.model)
        truth = load_truth(folder)
        for kind in args.database:
            yield measure(folder, truth, kind, args) | {"synth_s": synth_s}


if __name__ == "__main__":
    main()
