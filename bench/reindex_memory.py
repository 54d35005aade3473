"""Peak RSS of `grn reindex` at growing archive sizes, this tree against a baseline tree, on
the same inputs in one run.

Real images: for each `--scenes` N, N distinct files (`bench.variant_archive`) imported into a
SQLite database with `grn import`; their embedding shards are made once (`run_embedding_job`
of the baseline tree, in a child process, into a cache beside the database: the shards'
format is the same in both trees) and copied into each tree's new index folder, so that both
`grn reindex --catalog` runs read the same shards back, build the index and write the
version: the part whose memory grew with the archive. With `--from-scratch`, the run at each
size also embeds every image (no shards copied).

Carried vectors: for each `--synth` N, a `grn synth` archive (vectors, probabilities and
descriptors carried in ARCHIVE/vectors/), indexed by `grn reindex --archive` of each tree:
the build side with nothing to embed.

Each `grn` run's peak RSS comes from `wait4` (ru_maxrss of the child); the per-scene slope
is the difference between the largest and the smallest size over the scenes between them.

    python -m bench.reindex_memory --baseline /tmp/grn-baseline --work ../scratch/reindexmem \
        --scenes 2000 5000 10000 --synth 100000 1000000 --out docs/results/reindex-memory.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._common import GRN, MODEL, REPO, UCM, child_env, invocation, save_report
from bench.variant_archive import write_variant_archive
from index.stores.faiss_versions import IndexStore

EMBED = """
import sys
import numpy as np
from sqlalchemy import create_engine
from index.embedding_job import run_embedding_job
from model.archive import scene_id
from model.card import load_model
from model.inference import configure_cpu_threads, resolve_device
from model.rerank import keeps_descriptors
from service.storage.catalog_archive import catalog_archive

configure_cpu_threads()
device = resolve_device("cpu")
archive = catalog_archive(create_engine(sys.argv[1]))
positions = archive.indices()
ids = [scene_id(archive.scenes[i].name) for i in positions]
net, card = load_model(sys.argv[2], device)
run_embedding_job(net, card, archive, positions, ids, sys.argv[3], device=device,
                  shard_size=int(sys.argv[4]), progress=False,
                  descriptors=keeps_descriptors(card))
"""


def measured(arguments: list[str], env: dict[str, str], tree: Path) -> dict[str, Any]:
    """`grn ARGUMENTS` of `tree` at nice 19: seconds, the last lines it printed and its peak
    RSS in MiB (`wait4`: nice execs the interpreter in place, so the child is `grn`)."""
    started = datetime.datetime.now()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            ["nice", "-n", "19", *GRN, *arguments], cwd=tree, env=child_env(env, tree),
            stdout=out, stderr=err, text=True,
        )  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        printed, errors = out.read().strip().splitlines(), err.read().strip().splitlines()
    if process.returncode != 0:
        raise SystemExit(f"grn {' '.join(arguments)} ({tree}): {errors[-3:]}")
    return {
        "seconds": round((datetime.datetime.now() - started).total_seconds(), 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "stdout": printed[-1:],
    }


def prepared(
    work: Path, scenes: int, model: Path, shard_size: int, tree: Path
) -> tuple[dict[str, str], Path]:
    """The database of `scenes` distinct images and their embedding shards, made once by
    `tree` (the shards' format is the same in both trees)."""
    archive = write_variant_archive(work / f"archive-{scenes}", scenes)
    run = work / f"run-{scenes}"
    database = run / "grn.db"
    env = {"GRN_DATABASE_URL": f"sqlite:///{database}", "GRN_MODEL_PATH": str(model)}
    if not database.is_file():
        run.mkdir(parents=True, exist_ok=True)
        for arguments in (["db", "upgrade"], ["import", str(archive), "--quiet"]):
            measured(arguments, env, tree)
    shards = run / "shards"
    if not (shards / ".done").is_file():
        subprocess.run(
            ["nice", "-n", "19", sys.executable, "-c", EMBED, env["GRN_DATABASE_URL"],
             str(model), str(shards), str(shard_size)],
            cwd=tree, env=child_env(tree=tree), check=True,
        )  # fmt: skip
        (shards / ".done").touch()
    return env, shards


def reindexed(
    tree: Path, env: dict[str, str], root: Path, source: list[str], shards: Path | None,
    model: Path, shard_size: int,
) -> dict[str, Any]:  # fmt: skip
    """`grn reindex SOURCE` of `tree` into a new index folder `root` (the shards copied into
    its work folder first, when given): peak RSS, seconds, what the version holds."""
    shutil.rmtree(root, ignore_errors=True)
    if shards is not None:
        shutil.copytree(shards, root / "work", ignore=shutil.ignore_patterns(".done"))
    arguments = ["reindex", "--model", str(model), *source, "--index-root", str(root),
                 "--quiet", "--shard-size", str(shard_size)]  # fmt: skip
    run = measured(arguments, env, tree)
    store = IndexStore(root)
    version = store.current_version()
    assert version is not None, run["stdout"]
    manifest = store.manifest(version)
    run.update(count=manifest.count, factory=manifest.factory,
               embedded=manifest.stats["embedded"],
               recall_at_10=round(manifest.stats["recall_at_10"], 4))  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)
    return run


def slopes(rows: list[dict[str, Any]]) -> dict[str, float]:
    """KiB of peak RSS per scene between the smallest and the largest size, per tree."""
    out = {}
    for tree in ("baseline", "this"):
        mine = sorted((r for r in rows if r["tree"] == tree), key=lambda r: r["scenes"])
        if len(mine) >= 2:
            low, high = mine[0], mine[-1]
            grew = (high["peak_rss_mib"] - low["peak_rss_mib"]) * 1024
            out[tree] = round(grew / (high["scenes"] - low["scenes"]), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the "
                        "tree to compare with (git worktree add --detach DIR main)")  # fmt: skip
    parser.add_argument("--work", type=Path, required=True, help="archives, databases, shards")
    parser.add_argument("--scenes", type=int, nargs="*", default=[2000, 5000, 10000])
    parser.add_argument("--synth", type=int, nargs="*", default=[])
    parser.add_argument("--from-scratch", action="store_true", help="embed every image")
    parser.add_argument("--trees", nargs="*", default=["baseline", "this"])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    trees = {"baseline": args.baseline.resolve(), "this": REPO}
    work = args.work.resolve()
    report: dict[str, Any] = {
        "command": invocation(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_at_start": os.getloadavg()[0], "real": [], "synth": [],
    }  # fmt: skip
    for scenes in args.scenes:
        env, shards = prepared(work, scenes, args.model, args.shard_size, trees["baseline"])
        for name in args.trees:
            root = work / f"run-{scenes}" / f"index-{name}"
            copy = None if args.from_scratch else shards
            row = reindexed(trees[name], env, root, ["--catalog"], copy, args.model,
                            args.shard_size)  # fmt: skip
            row.update(tree=name, scenes=scenes, from_scratch=args.from_scratch)
            print(json.dumps(row), flush=True)
            report["real"].append(row)
            save_report(report, args.out)
    for scenes in args.synth:
        archive = work / f"synth-{scenes}"
        if not (archive / "vectors" / "manifest.json").is_file():
            shutil.rmtree(archive, ignore_errors=True)
            measured(["synth", "--scenes", str(scenes), "--out", str(archive),
                      "--model", str(args.model), "--images", str(UCM), "--quiet"], {},
                     REPO)  # fmt: skip
        env = {"GRN_MODEL_PATH": str(args.model)}
        for name in args.trees:
            root = work / f"synth-{scenes}-index-{name}"
            row = reindexed(trees[name], env, root, ["--archive", str(archive)], None,
                            args.model, args.shard_size)  # fmt: skip
            row.update(tree=name, scenes=scenes)
            print(json.dumps(row), flush=True)
            report["synth"].append(row)
            save_report(report, args.out)
    report["real_kib_per_scene"] = slopes(report["real"])
    report["synth_kib_per_scene"] = slopes(report["synth"])
    report["load_at_end"] = os.getloadavg()[0]
    save_report(report, args.out)
    print(json.dumps({k: report[k] for k in ("real_kib_per_scene", "synth_kib_per_scene")}))


if __name__ == "__main__":
    main()
