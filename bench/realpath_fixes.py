"""What the fixes of the real-image path at scale change, this tree against a baseline tree,
in one run: reading back the Parquet shards of a `grn reindex --ray` job.

The job's embedding step on Ray ends by reading every shard back (ids, embeddings,
probabilities and the 1,280 backbone descriptors a scene). The baseline wrote one Parquet
file per batch of 8 scenes and turned each column into Python lists (`to_pylist`); this tree
writes files of `--shard-size` scenes (1,024) and reads the columns straight from Arrow's
buffers. Shards of `--rows` scenes are written here in Ray's layout (its tensor extension
type, as `write_parquet` stores it; random values) both ways, and each tree reads them in a
child process with Ray's types registered, as in the job, and without them (a process that
never imported Ray, where Arrow sees plain lists): seconds and peak RSS, best of `--rounds`,
trees interleaved.

    .venv/bin/python -m bench.realpath_fixes --baseline /tmp/grn-baseline --rows 20000 100000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import MODEL, REPO, child_env

READER = """
import json, resource, sys, time
if sys.argv[2] == "registered":
    import ray.data  # Ray's tensor types, registered as in the job
from index import ray_embed
folder = sys.argv[1]
started = time.perf_counter()
done = ray_embed.finished_ids(ray_embed.Path(folder))
scanned = time.perf_counter() - started
tables = ray_embed._tables(folder)
ids, embeddings, probabilities = ray_embed._embeddings_of(tables)
descriptors = ray_embed._descriptors_of(tables)
print(json.dumps({
    "resume_scan_s": round(scanned, 3),
    "read_back_s": round(time.perf_counter() - started - scanned, 3),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "rows": len(done), "column_type": type(tables[0].column("embedding").type).__name__,
    "checksum": float(embeddings.sum() + descriptors.astype("float32").sum()),
}))
"""


def ray_layout_shards(folder: Path, rows: int, per_file: int, widths: dict[str, Any]) -> int:
    """`rows` scenes of random values in files of `per_file`, columns as Ray writes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    columns: dict[str, Any] = {"id": pa.array(rng.choice(2**62, rows, replace=False))}
    fields = [pa.field("id", pa.int64())]
    for name, (width, dtype) in widths.items():
        values = rng.standard_normal(rows * width).astype(dtype)
        offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int64))
        columns[name] = pa.LargeListArray.from_arrays(offsets, pa.array(values))
        metadata = {b"ARROW:extension:name": b"ray.data.arrow_tensor_v2",
                    b"ARROW:extension:metadata": f"[{width}]".encode()}  # fmt: skip
        fields.append(pa.field(name, columns[name].type, metadata=metadata))
    table = pa.Table.from_arrays(list(columns.values()), schema=pa.schema(fields))
    folder.mkdir(parents=True)
    files = 0
    for start in range(0, rows, per_file):
        pq.write_table(table.slice(start, per_file), folder / f"part-{files:06d}.parquet")
        files += 1
    return files


def read_in(tree: Path, folder: Path, types: str) -> dict[str, Any]:
    """Shards read back by `tree` in a child process (`types`: registered, or not)."""
    done = subprocess.run(
        [sys.executable, "-c", READER, str(folder), types], cwd=tree, env=child_env(tree=tree),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the "
                        "baseline commit (git worktree add --detach DIR main)")  # fmt: skip
    parser.add_argument("--rows", type=int, nargs="+", default=[20000, 100000])
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from model.card import read_card
    from model.rerank import DTYPE, no_descriptors

    card = read_card(args.model)
    widths = {"embedding": (card.vector_dim, np.float32),
              "probabilities": (len(card.label_names), np.float32),
              "descriptors": (no_descriptors(card).shape[1], DTYPE)}  # fmt: skip
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()},
        "sizes": [],
    }
    layouts = [("baseline", args.baseline, 8), ("this tree", REPO, 8),
               ("this tree", REPO, args.shard_size)]  # fmt: skip
    cases = [(*layout, types) for types in ("registered", "not registered") for layout in layouts]
    for rows in args.rows:
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as scratch:
            folders = {size: Path(scratch) / f"per-{size}" for size in {8, args.shard_size}}
            files = {size: ray_layout_shards(f, rows, size, widths) for size, f in folders.items()}
            best: dict[int, dict[str, Any]] = {}
            for _ in range(args.rounds):
                for number, (_name, tree, size, types) in enumerate(cases):
                    seen = read_in(tree, folders[size], types)
                    if number not in best or seen["read_back_s"] < best[number]["read_back_s"]:
                        best[number] = seen
            for number, (name, _, size, types) in enumerate(cases):
                row = {"rows": rows, "tree": name, "rows_per_file": size, "ray_types": types,
                       "files": files[size], **best[number],
                       "bytes_per_scene": round(_size(folders[size]) / rows, 1)}  # fmt: skip
                result["sizes"].append(row)
                print(json.dumps(row), flush=True)
    result["load_at_end"] = os.getloadavg()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


if __name__ == "__main__":
    main()
