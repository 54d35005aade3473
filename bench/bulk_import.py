"""`grn import --bulk` at growing sizes, on SQLite and PostgreSQL, against the plain `grn
import` in the same run.

    python -m bench.bulk_import --sizes 10000 100000 1000000 \
        --postgres postgresql://postgres@127.0.0.1:5432/test --out docs/results/bulk-import.json

For each size, a synthetic archive (`grn synth`, kept under `--work` for the next run), then
for each database a fresh one (a new SQLite file; a new PostgreSQL database created beside
the one `--postgres` names, dropped after) and an empty index root, and in a child process:
`bulk_import` (reading labels.csv and scenes.csv, then the SQL writes) and `index_catalog`
(the FAISS version built from the vectors the archive carries, as `grn import --bulk` does).
Prints scenes/s of the SQL writes, of reading and writing together, and of the whole import
with the index, the child's peak RSS (after the SQL writes, and at the end), the database's
and the index version's bytes on disk, and each of these per scene. The baseline: the plain
`grn import` (each image decoded and hashed) of the `--baseline` first scenes of the smallest
archive, on SQLite. With `--tree LABEL=DIR` (repeated), each import runs once per tree, the
child importing that tree's packages (a worktree of an earlier commit measures the code
before a change in the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import REPO, UCM, child_env

MODEL = REPO / "runs/ucm-head"


def archive(work: Path, size: int) -> Path:
    """A synthetic archive of `size` scenes (made once)."""
    folder = work / f"synth-{size}"
    if not (folder / "vectors/manifest.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        from index.synth_archive import write_synthetic_archive
        from index.synth_params import DEFAULT_PARAMS, SynthParams

        started = time.perf_counter()
        write_synthetic_archive(
            SynthParams.load(DEFAULT_PARAMS), folder, size, images=UCM, progress=False
        )
        print(f"synth {size}: {time.perf_counter() - started:.1f} s", flush=True)
    return folder


def one(folder: Path, url: str, index_root: Path, plain: bool) -> dict[str, Any]:
    """One import, in this (child) process."""
    from service.settings import get_settings
    from service.storage.db import make_engine
    from service.storage.migrate import upgrade
    from service.usecases.bulk_import import bulk_import, index_catalog
    from service.usecases.importer import import_archive

    engine = make_engine(url)
    upgrade(engine)
    started = time.perf_counter()
    if plain:
        report = import_archive(engine, folder, progress=False)
        return {"scenes": report.added, "seconds": time.perf_counter() - started}
    bulk = bulk_import(engine, folder, progress=False)
    written_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    indexed = time.perf_counter()
    settings = get_settings().with_store(index_root=index_root)
    outcome = index_catalog(settings, engine, MODEL, progress=False)
    assert outcome.report is not None and outcome.report.count == bulk.added
    return {
        "scenes": bulk.added,
        "read_seconds": bulk.read_seconds,
        "write_seconds": bulk.write_seconds,
        "index_seconds": time.perf_counter() - indexed,
        "factory": outcome.report.manifest.factory,  # type: ignore[attr-defined]
        "seconds": time.perf_counter() - started,
        "written_peak_rss_mib": written_rss,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def child(folder: Path, url: str, plain: bool = False, tree: Path = REPO) -> dict[str, Any]:
    """One import in a child process of `tree`'s code, with its index version's bytes."""
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        command = [sys.executable, "-m", "bench.bulk_import", "--child", str(folder), url,
                   str(Path(scratch) / "index")] + (["--plain"] if plain else [])  # fmt: skip
        done = subprocess.run(
            command, cwd=tree, env=child_env(tree=tree), capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"{command} failed:\n{done.stderr[-3000:]}")
        got = json.loads(done.stdout.strip().splitlines()[-1])
        versions = Path(scratch) / "index/versions"
        if versions.is_dir():
            got["index_bytes"] = _bytes_under(versions)
        return got


def database_bytes(url: str, name: str) -> int:
    """The bytes the database at `url` (named `name` on PostgreSQL) takes on disk."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*"))
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT pg_database_size('{name}')")).scalar_one())
    finally:
        engine.dispose()


def database(kind: str, postgres: str, scratch: Path, name: str) -> tuple[str, Any]:
    """A fresh database's URL and what drops it."""
    if kind == "sqlite":
        path = scratch / f"{name}.db"
        return f"sqlite:///{path}", lambda: [os.remove(p) for p in scratch.glob(f"{name}.db*")]
    from sqlalchemy import create_engine, text

    admin = create_engine(
        postgres.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        connection.execute(text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    base = postgres.rsplit("/", 1)[0]
    return f"{base}/{name}", drop


def workspace(kind: str, postgres: str, work: Path, name: str) -> tuple[str, Any, Path]:
    """A fresh database (URL, what drops it) and an emptied scratch folder `work/name`."""
    url, drop = database(kind, postgres, work, name)
    scratch = work / name
    shutil.rmtree(scratch, ignore_errors=True)
    return url, drop, scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "grn-bulk")
    parser.add_argument("--baseline", type=int, default=5000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=3, metavar=("ARCHIVE", "URL", "INDEX"))
    parser.add_argument("--plain", action="store_true")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="measure this tree's code too (default: this one, as `this`)",
    )
    args = parser.parse_args()
    if args.child:
        folder, url, index_root = args.child
        print(json.dumps(one(Path(folder), url, Path(index_root), args.plain)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    smallest = archive(args.work, min(args.sizes))
    base = args.work / f"plain-{args.baseline}"
    if not base.is_dir():  # the first scenes of the smallest archive, as their own archive
        shutil.copytree(smallest, base, symlinks=True, ignore=shutil.ignore_patterns("vectors"))
        for name in ("labels.csv", "scenes.csv"):
            lines = (base / name).read_text().splitlines(keepends=True)[: args.baseline + 1]
            (base / name).write_text("".join(lines))
    url, drop = database("sqlite", args.postgres, args.work, "grn_bulk_plain")
    try:
        plain = child(base, url, plain=True)
    finally:
        drop()
    rate = plain["scenes"] / plain["seconds"]
    print(f"baseline: plain grn import of {plain['scenes']} scenes on SQLite: "
          f"{plain['seconds']:.1f} s, {rate:,.0f} scenes/s", flush=True)  # fmt: skip
    results.append({"kind": "plain", "database": "sqlite", **plain})
    trees = dict(t.split("=", 1) for t in args.tree) if args.tree else {"this": str(REPO)}
    print("| scenes | database | code | read s | SQL write s | SQL scenes/s (write) | read + "
          "write scenes/s | index | index s | whole import scenes/s | peak RSS MiB after "
          "write / end | database KiB/scene | index KiB/scene |")  # fmt: skip
    print(
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
    )
    for size in args.sizes:
        folder = archive(args.work, size)
        for kind in args.databases:
            for label, tree in trees.items():
                results.append(_measured(folder, kind, args, size, label, Path(tree)))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


def _measured(
    folder: Path, kind: str, args: argparse.Namespace, size: int, label: str, tree: Path
) -> dict[str, Any]:
    """One bulk import of `folder` into a fresh database of `kind`, by `tree`'s code."""
    name = f"grn_bulk_{size}"
    url, drop = database(kind, args.postgres, args.work, name)
    try:
        got = child(folder, url, tree=tree)
        got["database_bytes"] = database_bytes(url, name)
    finally:
        drop()
    sql = got["read_seconds"] + got["write_seconds"]
    written = got.get("written_peak_rss_mib")
    print(
        f"| {size:,} | {kind} | {label} | {got['read_seconds']:.1f} | "
        f"{got['write_seconds']:.1f} | {got['scenes'] / got['write_seconds']:,.0f} | "
        f"{got['scenes'] / sql:,.0f} | {got['factory']} | {got['index_seconds']:.1f} | "
        f"{got['scenes'] / got['seconds']:,.0f} | "
        f"{'-' if written is None else f'{written:,.0f}'} / {got['peak_rss_mib']:,.0f} | "
        f"{got['database_bytes'] / 1024 / size:.2f} | "
        f"{got.get('index_bytes', 0) / 1024 / size:.2f} |",
        flush=True,
    )
    return {"kind": "bulk", "database": kind, "size": size, "code": label, "tree": str(tree),
            **got}  # fmt: skip


if __name__ == "__main__":
    main()
