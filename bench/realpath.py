"""The real-image path at archive scale: N distinct image files (`bench.variant_archive`)
imported and embedded end to end with the normal commands, against the bare network.

In one run, in this order (the bare network between the pipelines, so that each pipeline
has a baseline measured next to it on the same loaded machine):

1. the bare network: `predict` on pre-decoded, pre-resized batches of the archive's first
   images, in a child process with `grn`'s thread settings (`--bare-seconds` each time);
2. `grn db upgrade`, then `grn import ARCHIVE` into a new SQLite database: seconds,
   images/s, the process's peak RSS (`wait4`), and the distinct file checksums SQL holds;
3. `grn reindex --catalog` (plain, one process) SIGKILLed once half its shards are
   written, then run again: the second run's manifest says how many scenes it embedded, so
   the shards finished before the kill were not recomputed if that is N less what they held;
4. `grn reindex --catalog --ray --workers W` (Ray Data on this machine) killed the same way
   once half the scenes are in its Parquet shards, then run again;
5. disk per scene: the database, each index version, the shards at the kill; the peak RSS of
   each `grn` process (and with Ray, of its process tree: raylet, workers, object store).

Sustained images/s: of a killed plain run, the scenes its shards held over the time between
the first and the last shard written (start-up excluded); of a killed Ray run, which writes
its files in bursts, its scenes over the whole run (start-up included); of a resumed run,
its own `embed_images_per_s` (the embedding step, shards read back and, with Ray, its
start-up included).

    .venv/bin/python -m bench.realpath --scenes 20000 --work ../scratch/realpath \
        --out docs/results/realpath-20000.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import GRN, MODEL, REPO, child_env
from bench.variant_archive import write_variant_archive
from index.stores.faiss_versions import IndexStore

PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(root: int) -> tuple[int, set[int]]:
    """(RSS of `root` and all its descendants in bytes, their pids), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, total, seen = [root], 0, set()
    while todo:
        pid = todo.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError):
            continue
        seen.add(pid)
        todo.extend(parents.get(pid, []))
    return total, seen


class Watched:
    """A `grn` child process, its process tree's RSS sampled every 0.5 s, and a `stop_when`
    check (seconds since start -> True to SIGKILL it) run at each sample."""

    def __init__(
        self, arguments: list[str], env: dict[str, str],
        stop_when: Callable[[float], bool] | None = None,
    ) -> None:  # fmt: skip
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [*GRN, *arguments], cwd=REPO, env=child_env(env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.peak_tree = 0
        self.killed_at: float | None = None
        self.tree: set[int] = set()
        self._stop_when = stop_when
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        samples = 0
        while self.process.poll() is None:
            total, pids = _tree_rss(self.process.pid)
            self.tree |= pids - {self.process.pid}
            self.peak_tree = max(self.peak_tree, total)
            elapsed = time.perf_counter() - self.started
            samples += 1
            # checked every 2 s, as it reads the shard folder
            checking = self._stop_when and self.killed_at is None and samples % 4 == 0
            if checking and self._stop_when(elapsed):  # type: ignore[misc]
                self.killed_at = elapsed
                self.process.send_signal(signal.SIGKILL)
            time.sleep(0.5)

    def wait(self) -> dict[str, Any]:
        """Wait for the process: its exit status, seconds, output and peak RSS (its own from
        `wait4`, the tree's from the samples), in MiB."""
        out, err = self.process.communicate()
        seconds = time.perf_counter() - self.started
        self._thread.join()
        usage = getattr(self.process, "rusage", None)
        own = usage.ru_maxrss / 1024 if usage is not None else None
        return {
            "returncode": self.process.returncode, "seconds": round(seconds, 1),
            "peak_rss_mib": None if own is None else round(own, 1),
            "peak_tree_rss_mib": round(self.peak_tree / 2**20, 1),
            "stdout": out.strip().splitlines()[-3:], "stderr": err.strip().splitlines()[-3:],
        }  # fmt: skip


def _popen_with_rusage() -> None:
    """Popen's wait keeps the child's resource usage (ru_maxrss: its peak RSS)."""

    def _try_wait(self: subprocess.Popen[str], wait_flags: int) -> tuple[int, int]:
        pid, status, usage = os.wait4(self.pid, wait_flags)
        if pid:
            self.rusage = usage  # type: ignore[attr-defined]
        return pid, status

    subprocess.Popen._try_wait = _try_wait  # type: ignore[attr-defined,assignment]


def bare_rate(model: Path, archive: Path, seconds: float) -> float:
    """Images/s of the bare network: `predict` over pre-decoded, pre-resized batches, in a
    child process with `grn reindex`'s thread settings."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.realpath", "--bare-of", str(model), str(archive),
         str(seconds)],
        cwd=REPO, env=child_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def _bare_child(model: str, archive: str, seconds: float) -> None:
    import torch

    from model.archive import load_archive
    from model.card import load_model
    from model.imageio import read_image
    from model.inference import configure_cpu_threads, default_batch_size, predict, prepare_batch

    configure_cpu_threads()
    device = torch.device("cpu")
    net, card = load_model(model, device)
    net = net.eval().to(memory_format=torch.channels_last)
    size = default_batch_size(device)
    images = [read_image(s.path) for s in load_archive(archive).scenes[: size * 8]]
    batches = [
        prepare_batch(images[i : i + size], card.input_size) for i in range(0, 8 * size, size)
    ]
    predict(net, card, batches[0], device)  # warm-up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for batch in batches:
            predict(net, card, batch, device)
            count += len(batch)
    print(count / (time.perf_counter() - started))


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _shards(index_root: Path, ray: bool) -> tuple[int, int]:
    """(scenes, bytes) in the embedding shards under INDEX/work now."""
    if ray:
        import pyarrow.parquet as pq

        scenes = 0
        for path in (index_root / "work").rglob("*.parquet"):
            try:
                scenes += pq.ParquetFile(path).metadata.num_rows
            except Exception:  # a file still being written
                continue
        files = list((index_root / "work").rglob("*.parquet"))
    else:
        files = list((index_root / "work").rglob("shard-*.npz"))
        scenes = -1  # counted from the shard size by the caller
    return scenes, sum(p.stat().st_size for p in files)


def killed_and_resumed(
    label: str, arguments: list[str], index_root: Path, env: dict[str, str], scenes: int,
    shard_size: int, ray: bool,
) -> dict[str, Any]:  # fmt: skip
    """Run `grn reindex ARGUMENTS`, SIGKILL it once half the scenes are in shards, run it
    again; what each did."""
    half = scenes // 2
    first_shard: list[float] = []

    def done_now() -> int:
        if ray:
            return _shards(index_root, True)[0]
        return len(list((index_root / "work").rglob("shard-*.npz"))) * shard_size

    def past_half(elapsed: float) -> bool:
        done = done_now()
        if done and not first_shard:
            first_shard.append(elapsed)
        return done >= half

    print(f"{label}: killed at half way ...", flush=True)
    killed = Watched(arguments, env, past_half)
    run = killed.wait()
    done, shard_bytes = _shards(index_root, ray)
    done = done if ray else len(list((index_root / "work").rglob("shard-*.npz"))) * shard_size
    done = min(done, scenes)
    run.update(killed_at_s=killed.killed_at, scenes_in_shards=done,
               shard_bytes_per_scene=round(shard_bytes / max(done, 1), 1))  # fmt: skip
    if ray and killed.killed_at:
        # Ray writes its files in bursts (the first can come just before the kill): the
        # whole run, start-up included
        run["images_per_s_startup_included"] = round(done / killed.killed_at, 1)
    elif first_shard and killed.killed_at:
        span = killed.killed_at - first_shard[0]
        # the scenes written after the first shard appeared, over the time since
        run["sustained_images_per_s"] = round((done - shard_size) / span, 1) if span > 0 else None
    # Ray's processes, orphaned by the kill, end on their own (fate sharing): how long
    waited = time.perf_counter()
    while any(Path(f"/proc/{p}").exists() for p in killed.tree):
        if time.perf_counter() - waited > 120:
            break
        time.sleep(0.5)
    run["children_gone_after_s"] = round(time.perf_counter() - waited, 1)
    run["left_running"] = sorted(p for p in killed.tree if Path(f"/proc/{p}").exists())
    print(f"{label}: resumed ...", flush=True)
    resumed = Watched(arguments, env).wait()
    store = IndexStore(index_root)
    version = store.current_version()
    assert version is not None, resumed["stderr"]
    manifest = store.manifest(version)
    stats = manifest.stats
    resumed.update(
        embedded=stats["embedded"], count=manifest.count,
        sustained_images_per_s=round(stats["embed_images_per_s"], 1),
        not_recomputed=stats["embedded"] == scenes - done,
        index_bytes_per_scene=round(store.size_on_disk(version) / manifest.count, 1),
    )  # fmt: skip
    print(json.dumps({"killed": run, "resumed": resumed}), flush=True)
    return {"killed": run, "resumed": resumed, "index_version": version}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=20000)
    parser.add_argument("--work", type=Path, help="where the archive, database "
                        "and indexes go (large; delete it afterwards)")  # fmt: skip
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--bare-seconds", type=float, default=30.0)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--bare-of", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_of:
        _bare_child(args.bare_of[0], args.bare_of[1], float(args.bare_of[2]))
        return
    if args.work is None:
        parser.error("--work is required")
    _popen_with_rusage()
    started = time.perf_counter()
    archive = write_variant_archive(args.work / f"archive-{args.scenes}", args.scenes)
    generated_s = time.perf_counter() - started
    run = args.work / f"run-{args.scenes}"
    database = run / "grn.db"
    env = {"GRN_DATABASE_URL": f"sqlite:///{database}", "GRN_MODEL_PATH": str(args.model)}
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()},
        "scenes": args.scenes, "shard_size": args.shard_size, "ray_workers": args.ray_workers,
        "archive_bytes_per_scene": round(_bytes(archive / "images") / args.scenes, 1),
        "generated_s": round(generated_s, 1), "bare_images_per_s": [], "load": [],
    }  # fmt: skip

    def bare() -> None:
        rate = bare_rate(args.model, archive, args.bare_seconds)
        result["bare_images_per_s"].append(round(rate, 1))
        result["load"].append(os.getloadavg()[0])
        print(f"bare network: {rate:.1f} images/s (load {os.getloadavg()[0]:.2f})", flush=True)

    bare()
    run.mkdir(parents=True, exist_ok=True)
    database.unlink(missing_ok=True)
    Watched(["db", "upgrade"], env).wait()
    imported = Watched(["import", str(archive), "--quiet"], env).wait()
    with sqlite3.connect(database) as connection:
        count, distinct = connection.execute(
            "SELECT COUNT(*), COUNT(DISTINCT checksum) FROM scenes"
        ).fetchone()
    imported.update(images_per_s=round(args.scenes / imported["seconds"], 1), scenes=count,
                    distinct_files=distinct)  # fmt: skip
    print(json.dumps({"import": imported}), flush=True)
    result["import"] = imported
    result["database_bytes_per_scene"] = round(_bytes(run) / count, 1)
    bare()
    common = ["reindex", "--model", str(args.model), "--catalog", "--quiet",
              "--shard-size", str(args.shard_size)]  # fmt: skip
    plain_root = run / "index-plain"
    result["plain"] = killed_and_resumed(
        "plain", [*common, "--index-root", str(plain_root)], plain_root, env, args.scenes,
        args.shard_size, ray=False,
    )  # fmt: skip
    bare()
    if not args.skip_ray:
        ray_root = run / "index-ray"
        ray_args = [*common, "--index-root", str(ray_root), "--ray", "--workers",
                    str(args.ray_workers)]  # fmt: skip
        result["ray"] = killed_and_resumed(
            "ray", ray_args, ray_root, env, args.scenes, args.shard_size, ray=True
        )
        result["ray"]["same_vectors_as_plain"] = same_vectors(plain_root, ray_root)
        bare()
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


def same_vectors(a: Path, b: Path) -> bool:
    """Whether two index roots serve the same ids and, to 1e-4, the same vectors."""
    import numpy as np

    from index.vectors import find_ivf, stored_ids

    def vectors(root: Path) -> tuple[np.ndarray, np.ndarray]:
        index = IndexStore(root).load().index
        ivf = find_ivf(index)
        if ivf is not None:
            ivf.make_direct_map()  # reconstruction by id
        ids = np.sort(stored_ids(index))
        return ids, index.reconstruct_batch(ids)

    (ids_a, rows_a), (ids_b, rows_b) = vectors(a), vectors(b)
    return bool(np.array_equal(ids_a, ids_b) and np.allclose(rows_a, rows_b, atol=1e-4))


if __name__ == "__main__":
    main()
