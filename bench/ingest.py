"""Scenes added through the API (`POST /scenes`), measured through a real server, in one run:

1. searches by id (k = 10, one client, one request at a time) with nothing else running;
2. `--one-by-one` images added one per request by a second client while the first keeps
   searching: each add's latency (the time from sending it to the scene being searchable:
   the response says it is, and every 50th is checked by a search for it right away), and
   the searches' latencies meanwhile, against (1);
3. `--bulk` images added `--per-request` per request, images/s;
4. `grn embed` over the same bulk images written as an archive folder (the command, model
   loading included, and its own images/s from the embedding alone).

The images are real UCM scenes, rotated and mirrored (the 8 symmetries of the square) and
re-encoded as JPEG, so each is a new file. Needs `make serve-prepare` (data/grn.db, the
model in runs/ucm-head, data/index); works on copies of the database and an archive store
in a temporary folder.

    .venv/bin/python -m bench.ingest --out docs/results/ingest-bench.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench._common import DATABASE, INDEX_ROOT, MODEL, UCM, checked_grn, percentiles
from bench.server import serve

KEY = "bench-key-0123456789abcdef"
TRANSFORMS = [
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
]


def variants(ucm: Path, count: int, skip: int = 0) -> list[tuple[str, bytes]]:
    """`count` new JPEG files from UCM's test-split scenes (after the first `skip`)."""
    with (ucm / "labels.csv").open(newline="") as handle:
        names = [row["image"] for row in csv.DictReader(handle) if row["split"] == "test"]
    files = {p.stem: p for p in (ucm / "images").rglob("*.*")}
    out = []
    for n in range(skip, skip + count):
        name = names[n % len(names)]
        transform = TRANSFORMS[(n // len(names)) % len(TRANSFORMS)]
        with Image.open(files[name]) as image:
            image = image.convert("RGB")
            if transform is not None:
                image = image.transpose(transform)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90 - (n // (len(names) * 8)))
        out.append((f"bench-{n:05d}-{name}", buffer.getvalue()))
    return out


class Searcher(threading.Thread):
    """Searches by id back to back until stopped, timing each."""

    def __init__(self, url: str, ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.ids = url, ids
        self.times: list[float] = []
        self.stop = threading.Event()
        self.errors = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                start = time.perf_counter()
                response = client.post("/search", json={"scene_id": self.ids[n % len(self.ids)]})
                self.times.append((time.perf_counter() - start) * 1000)
                self.errors += response.status_code != 200
                n += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ucm", type=Path, default=UCM)
    parser.add_argument("--database", type=Path, default=DATABASE)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--index-root", type=Path, default=INDEX_ROOT)
    parser.add_argument("--one-by-one", type=int, default=1000)
    parser.add_argument("--bulk", type=int, default=480)
    parser.add_argument("--per-request", type=int, default=16)
    parser.add_argument("--baseline-searches", type=int, default=600)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="grn-ingest-"))
    shutil.copy(args.database, work / "grn.db")
    env = {
        "GRN_DATABASE_URL": f"sqlite:///{work / 'grn.db'}",
        "GRN_MODEL_PATH": str(args.model),
        "GRN_INDEX_ROOT": str(args.index_root),
        "GRN_STORE_DIR": str(work / "store"),
        "GRN_THUMBNAIL_DIR": str(work / "thumbnails"),
        "GRN_WRITE_KEY": KEY,
        "GRN_INDEX_POLL_SECONDS": "0",
        "GRN_EMBEDDED_WORKER": "false",
    }
    singles = variants(args.ucm, args.one_by_one)
    bulk = variants(args.ucm, args.bulk, skip=args.one_by_one)
    result: dict[str, Any] = {"machine_cores": os.cpu_count()}
    with serve(env) as server:
        url = server.url
        with httpx.Client(base_url=url, timeout=60) as client:
            page = client.get("/scenes", params={"limit": 500}).json()
            ids = [s["id"] for s in page["scenes"]]
            result["archive_scenes"] = page["total"]
            for n in range(50):  # warm up
                client.post("/search", json={"scene_id": ids[n % len(ids)]})

            searcher = Searcher(url, ids)
            searcher.start()
            while len(searcher.times) < args.baseline_searches:
                time.sleep(0.05)
            searcher.stop.set()
            searcher.join()
            result["searches_alone"] = percentiles(searcher.times)

            searcher = Searcher(url, ids)
            searcher.start()
            adds, checked, found = [], 0, 0
            headers = {"X-API-Key": KEY}
            started = time.perf_counter()
            for n, (name, data) in enumerate(singles):
                begin = time.perf_counter()
                response = client.post(
                    "/scenes", files={"file": (f"{name}.jpg", data)}, data={"name": name},
                    headers=headers,
                )  # fmt: skip
                adds.append((time.perf_counter() - begin) * 1000)
                if response.status_code != 201:
                    raise SystemExit(f"POST /scenes: {response.status_code} {response.text}")
                if n % 50 == 0:  # read your write: searched for at once
                    new_id = response.json()["scenes"][0]["id"]
                    hits = client.post(
                        "/search", files={"file": (f"{name}.jpg", data)}, data={"k": "3"}
                    ).json()["hits"]
                    checked += 1
                    found += any(hit["id"] == new_id for hit in hits)
            one_by_one_s = time.perf_counter() - started
            searcher.stop.set()
            searcher.join()
            result["one_by_one"] = {
                "images": len(singles),
                "seconds": round(one_by_one_s, 1),
                "images_per_s": round(len(singles) / one_by_one_s, 2),
                "add_latency": percentiles(adds),
                "checked_searchable_at_once": f"{found}/{checked}",
            }
            result["searches_during_one_by_one"] = percentiles(searcher.times)
            result["search_errors_during_ingest"] = searcher.errors

            started = time.perf_counter()
            for start in range(0, len(bulk), args.per_request):
                chunk = bulk[start : start + args.per_request]
                response = client.post(
                    "/scenes",
                    files=[("file", (f"{name}.jpg", data)) for name, data in chunk],
                    data={"scenes": json.dumps([{"name": name} for name, _ in chunk])},
                    headers=headers,
                )
                if response.status_code != 201:
                    raise SystemExit(f"bulk POST /scenes: {response.status_code} {response.text}")
            bulk_s = time.perf_counter() - started
            result["bulk"] = {
                "images": len(bulk),
                "per_request": args.per_request,
                "seconds": round(bulk_s, 1),
                "images_per_s": round(len(bulk) / bulk_s, 2),
            }
            result["scenes_after"] = client.get("/scenes", params={"limit": 1}).json()["total"]

    # grn embed over the same bulk images, as an archive folder
    archive = work / "archive"
    (archive / "images").mkdir(parents=True)
    with (archive / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "scene", "split"])
        for name, data in bulk:
            (archive / "images" / f"{name}.jpg").write_bytes(data)
            writer.writerow([name, "bench", "test"])
    embed_s, last_line = checked_grn(
        "embed", "--model", str(args.model), "--archive", str(archive),
        "--out", str(work / "embed.npz"), "--quiet",
    )  # fmt: skip
    result["grn_embed"] = {
        "images": len(bulk),
        "seconds_whole_command": round(embed_s, 1),
        "images_per_s_whole_command": round(len(bulk) / embed_s, 2),
        "output": [last_line] if last_line else [],
    }
    result["bulk_over_grn_embed"] = round(
        result["bulk"]["images_per_s"] / result["grn_embed"]["images_per_s_whole_command"], 2
    )
    result["search_p50_during_over_alone"] = round(
        result["searches_during_one_by_one"]["p50_ms"] / result["searches_alone"]["p50_ms"], 2
    )
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
