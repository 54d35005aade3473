"""What keeping the re-rank descriptors as int8 costs the served search, against float16 in
the same run (index/descriptors.py; docs/scaling.md, "Quantised re-rank descriptors").

    python -m bench.descriptor_quant [--archive ../shared/datasets/ucm-multilabel]
        [--model runs/ucm-head/model.safetensors] [--seed 0] [--models runs/unseen]
        [--rows 100000] [--out FILE]

Two protocols on UCM, as bench/unseen.py has them:
- the paper's split: queries = the test split (420), archive = the train split (1,470), the
  model trained on everything (`--model`);
- held-out labels: a model trained without `--labels` label columns drawn with `--seed`
  (`bench.unseen.held_out`; trained into `--models`/labels, or reused from there), queries =
  the test scenes carrying a held-out label, relevant = sharing one of them.
Each ranks as the service does: by the index's ranking vectors (the GRN embedding joined with
the label probabilities at the card's blend), the `model.rerank.POOL` nearest re-ordered by the
blended score with the frozen backbone's descriptors (unit pooled features), the archive's
descriptors as an index version keeps them: float16 (the baseline) and int8. Searches by an
image (the query's own descriptor in float32) and by a scene (its descriptor read from the
version too); `on`: every query re-ranked, `auto`: as served by default (content the model
trained on is not re-ranked: the paper's split never is). Figures: P@10, mAP, NDCG@10 and the
10-NN sample-F1 (`model.figures.reranked_figures`), and how many queries' top 10 changed.

Then the coding itself: the cosine error over the archive's pairs for float16, int8 with a
scale per scene (what index/descriptors.py does) and int8 with a scale per dimension (the
alternative not taken); the bytes a scene and the descriptors file at 10^6 and 10^7 scenes;
and, over two index versions of `--rows` scenes written by `IndexStore` (the UCM descriptors
repeated), the file each holds, the time to read and decode a search's pool (POOL + 1 rows
at random, both versions interleaved) and the RSS of a process that loads a version and reads
`--reads` pools (one child process per version).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import MODEL, REPO, UCM, invocation, percentiles
from bench.unseen import (
    backbone_features,
    head_outputs,
    held_out,
    labels_csv_without,
    served_auto,
    trained,
    unit,
)
from index.descriptors import DTYPES, decoded, encoded
from model import rerank
from model.archive import load_archive
from model.card import read_card
from model.figures import reranked_figures
from model.inference import ranking_vectors

BASELINE = "float16"
CODED = "int8"
FIGURES = ("p_at_10", "map", "ndcg_at_10", "knn_sample_f1")


def kept(rows: np.ndarray, dtype: str) -> np.ndarray:
    """Unit rows as the service reads them back from a version that keeps `dtype`."""
    return decoded(encoded(rows, dtype))


def per_dimension(rows: np.ndarray) -> np.ndarray:
    """The alternative not taken: int8 with one scale per dimension (its largest magnitude
    over the rows), read back and put on the unit sphere."""
    scale = np.maximum(np.abs(rows).max(axis=0), 1e-12) / 127
    return unit(np.rint(rows / scale) * scale).astype(np.float32)


def cosine_errors(rows: np.ndarray) -> dict[str, dict[str, float]]:
    """Over every pair of `rows`: the error of the cosine when one side is coded (a search
    by an image) and when both are (by a scene), per coding."""
    exact = rows @ rows.T
    codings = {
        "float16": kept(rows, "float16"),
        "int8, a scale per scene": kept(rows, "int8"),
        "int8, a scale per dimension": per_dimension(rows),
    }
    out = {}
    for name, coded in codings.items():
        one, both = np.abs(coded @ rows.T - exact), np.abs(coded @ coded.T - exact)
        out[name] = {"one_mean": float(one.mean()), "one_max": float(one.max()),
                     "both_mean": float(both.mean()), "both_max": float(both.max())}  # fmt: skip
    return out


def protocol_figures(
    ranking: np.ndarray,
    descriptors: np.ndarray,
    relevance: np.ndarray,
    queries: np.ndarray,
    archive: np.ndarray,
    seen: np.ndarray,
) -> dict[str, Any]:
    """Every figure of one protocol, per search kind and dtype, and the top 10s changed."""
    grn = ranking[queries] @ ranking[archive].T
    out: dict[str, Any] = {"queries": len(queries)}
    for by in ("image", "scene"):
        orders = {}
        for dtype in (BASELINE, CODED):
            base = kept(descriptors[archive], dtype)
            query = descriptors[queries] if by == "image" else kept(descriptors[queries], dtype)
            on = reranked_figures(
                ranking[queries], relevance[queries], ranking[archive], relevance[archive],
                (query, base),
            )  # fmt: skip
            similar = query @ base.T
            auto = served_auto(grn, similar, relevance, queries, archive, seen)
            named = {"p_at_10": auto["p@10"], "map": auto["map"], "ndcg_at_10": auto["ndcg@10"]}
            share = auto["reranked_share"]
            out[f"{by} {dtype}"] = {"on": on, "auto": named, "auto_reranked": share}
            orders[dtype] = rerank.reranked(grn, similar)[:, :10]
        first, second = orders[BASELINE], orders[CODED]
        out[f"{by} top 10"] = {
            "order_changed": int(np.any(first != second, axis=1).sum()),
            "scenes_changed": sum(
                len(set(a) - set(b)) for a, b in zip(first.tolist(), second.tolist(), strict=True)
            ),
        }
    return out


def write_versions(root: Path, descriptors: np.ndarray, rows: int) -> dict[str, Path]:
    """One index version per dtype of `rows` scenes (a Flat index of 8-d vectors), their
    descriptors the given ones repeated; the version folders."""
    from index.stores.faiss_versions import IndexStore
    from index.vectors import FullVectors, build_index

    ids = np.arange(rows, dtype=np.int64) + 1
    repeated = np.resize(descriptors.astype(np.float16), (rows, descriptors.shape[1]))
    index = build_index("Flat", ids, unit(np.random.default_rng(0).standard_normal((rows, 8))))
    out = {}
    for dtype in DTYPES:
        store = IndexStore(root / dtype)
        manifest = store.write_version(
            index, model_version="bench", factory="Flat",
            descriptors=FullVectors(ids, encoded(repeated, dtype)),
        )  # fmt: skip
        store.activate(manifest.version)
        out[dtype] = store.versions / manifest.version
    return out


def pool_reads(roots: dict[str, Path], reads: int, rows: int) -> dict[str, dict[str, float]]:
    """Times (ms) to read and decode a random pool of POOL + 1 scenes' descriptors
    (`Searcher.descriptors`), the versions interleaved, in this process."""
    from index.stores.faiss import Searcher
    from index.stores.faiss_versions import IndexStore

    searchers = {d: Searcher(IndexStore(path.parents[1]).load()) for d, path in roots.items()}
    rng = np.random.default_rng(1)
    times: dict[str, list[float]] = {dtype: [] for dtype in roots}
    for _ in range(reads):
        pool = rng.choice(rows, rerank.POOL + 1, replace=False) + 1
        for dtype, searcher in searchers.items():
            started = time.perf_counter()
            searcher.descriptors(pool)
            times[dtype].append((time.perf_counter() - started) * 1e3)
    return {dtype: percentiles(values, digits=3) for dtype, values in times.items()}


def probe(root: Path, reads: int) -> None:
    """In a child process: load the version under `root`, read `reads` random pools, print
    the RSS before loading, after, and the peak (KiB) as JSON."""
    from index.stores.faiss import Searcher
    from index.stores.faiss_versions import IndexStore

    before = _rss_kib()
    searcher = Searcher(IndexStore(root).load())
    rng = np.random.default_rng(2)
    for _ in range(reads):
        searcher.descriptors(rng.choice(searcher.ids, rerank.POOL + 1, replace=False))
    out = {"before_kib": before, "after_kib": _rss_kib(), "peak_kib": _rss_kib("VmHWM")}
    print(json.dumps(out))


def _rss_kib(field: str = "VmRSS") -> int:
    """This process's resident memory now (VmRSS) or at its peak since exec (VmHWM; not
    getrusage's, which keeps the parent's from before the fork)."""
    status = Path("/proc/self/status").read_text().split("\n")
    return int(next(line for line in status if line.startswith(f"{field}:")).split()[1])


def served_memory(roots: dict[str, Path], reads: int) -> dict[str, dict[str, int]]:
    """Per dtype: the file's bytes and the RSS of a process that loads the version and reads
    `reads` pools."""
    out = {}
    for dtype, folder in roots.items():
        done = subprocess.run(
            [sys.executable, "-m", "bench.descriptor_quant", "--probe", str(folder.parents[1]),
             "--reads", str(reads)],
            cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        out[dtype] = {"file_bytes": (folder / "descriptors.npy").stat().st_size,
                      **json.loads(done.stdout.splitlines()[-1])}  # fmt: skip
    return out


def sizes(width: int) -> dict[str, dict[str, float]]:
    """Bytes a scene, and the descriptors file (a .npy: a 128-byte header, then the rows)
    at 10^6 and 10^7 scenes, in GiB."""
    out = {}
    for dtype in (BASELINE, CODED):
        row = width * np.dtype(dtype).itemsize
        out[dtype] = {"bytes_per_scene": row, "gib_at_1e6": (128 + 10**6 * row) / 2**30,
                      "gib_at_1e7": (128 + 10**7 * row) / 2**30}  # fmt: skip
    return out


def print_report(report: dict[str, Any]) -> None:
    for name, table in report["protocols"].items():
        print(f"\n{name}: {table['queries']} queries")
        print(f"{'search':>30} {'P@10':>7} {'mAP':>7} {'NDCG@10':>7} {'kNN-F1':>7}")
        for by in ("image", "scene"):
            for mode in ("on", "auto"):
                rows = {d: table[f"{by} {d}"][mode] for d in (BASELINE, CODED)}
                rows["int8 - float16"] = {k: rows[CODED][k] - rows[BASELINE][k]
                                          for k in rows[CODED] if k in FIGURES}  # fmt: skip
                share = table[f"{by} {CODED}"]["auto_reranked"] if mode == "auto" else 1.0
                for dtype, row in rows.items():
                    cells = " ".join(
                        f"{row[k]:>+7.4f}" if dtype.startswith("int8 -") else f"{row[k]:>7.4f}"
                        for k in FIGURES if k in row
                    )  # fmt: skip
                    print(f"{f'by {by}, {mode}, {dtype}':>30} {cells}")
                print(f"{f'({mode}: {share:.0%} of the queries re-ranked)':>30}")
            top = table[f"{by} top 10"]
            print(f"{f'by {by}, on: top 10s changed':>30} order of {top['order_changed']} "
                  f"queries, {top['scenes_changed']} scenes in all")  # fmt: skip
    print("\ncosine error over the archive's pairs (one side coded / both):")
    for name, e in report["cosine_errors"].items():
        print(f"  {name:>28}: mean {e['one_mean']:.1e} / {e['both_mean']:.1e}, "
              f"max {e['one_max']:.1e} / {e['both_max']:.1e}")  # fmt: skip
    for dtype, s in report["sizes"].items():
        print(f"{dtype}: {s['bytes_per_scene']} B a scene; descriptors file {s['gib_at_1e6']:.2f} "
              f"GiB at 10^6 scenes, {s['gib_at_1e7']:.1f} GiB at 10^7")  # fmt: skip
    served = report.get("versions")
    if served:
        for dtype, m in served["memory"].items():
            print(f"{served['rows']:,} scenes, {dtype}: file {m['file_bytes'] / 2**20:.0f} MiB; "
                  f"RSS {m['before_kib'] // 1024} MiB before loading, {m['after_kib'] // 1024} "
                  f"after {served['reads']} pool reads, peak {m['peak_kib'] // 1024}; a pool "
                  f"read and decoded: p50 {served['pool_read_ms'][dtype]['p50_ms']} ms, p99 "
                  f"{served['pool_read_ms'][dtype]['p99_ms']} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--models", type=Path, default=REPO / "runs/unseen",
                        help="where the held-out labels' model is trained (or reused)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", type=int, default=3)
    parser.add_argument("--folders", type=int, default=5, help="as bench/unseen.py draws")
    parser.add_argument("--rows", type=int, default=100_000,
                        help="scenes of the index versions written (0: none)")  # fmt: skip
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe, args.reads)
        return

    archive = load_archive(args.archive)
    labels = archive.label_matrix()
    features = backbone_features(archive, list(range(len(archive))), "efficientnet_lite0")
    descriptors = unit(features).astype(np.float32)
    split = np.asarray([s.split for s in archive.scenes])
    archive_rows, test = np.flatnonzero(split == "train"), split == "test"
    _, held = held_out(archive, args.seed, args.folders, args.labels)
    columns = [archive.label_names.index(n) for n in sorted(held)]
    without = labels_csv_without(
        args.archive / "labels.csv", args.models / "labels.csv", labels=held
    )
    label_model = trained(args.archive, without, args.models / "labels", args.seed)
    protocols = {
        "UCM split (test queries, train archive)": (args.model, np.flatnonzero(test), labels),
        f"held-out labels {sorted(held)}": (
            label_model, np.flatnonzero(test & (labels[:, columns].sum(axis=1) > 0)),
            labels[:, columns]),
    }  # fmt: skip
    report: dict[str, Any] = {"command": invocation(), "protocols": {}}
    for name, (model, queries, relevance) in protocols.items():
        card = read_card(model)
        seen = rerank.seen_content(card, archive, archive_rows.tolist())
        grn, probabilities = head_outputs(model, features)
        ranking = ranking_vectors(grn, probabilities, card.label_blend)
        report["protocols"][name] = protocol_figures(
            ranking, descriptors, relevance, queries, archive_rows, seen
        )
    report["cosine_errors"] = cosine_errors(descriptors[archive_rows])
    report["sizes"] = sizes(descriptors.shape[1])
    if args.rows:
        with tempfile.TemporaryDirectory(prefix="descriptor-quant-") as work:
            roots = write_versions(Path(work), descriptors, args.rows)
            report["versions"] = {
                "rows": args.rows, "reads": args.reads,
                "pool_read_ms": pool_reads(roots, args.reads, args.rows),
                "memory": served_memory(roots, args.reads),
            }  # fmt: skip
    print_report(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
