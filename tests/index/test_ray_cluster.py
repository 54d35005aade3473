"""`grn embed` and `grn reindex` on a Ray cluster of three nodes on this host: a head and two
worker nodes started with `ray start` (`index.ray_cluster`), all on 127.0.0.1. Every scene
is embedded exactly once (ids and counts checked against the archive), nothing of the
cluster listens beyond loopback, and (marked `engines`, `make test-engines`) a worker node
SIGKILLed mid-run leaves a job that still finishes with every scene exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from model.archive import load_archive, scene_id
from model.train import fit

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[2]
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    from index.ray_cluster import LocalRayCluster

    with LocalRayCluster(workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def model(tiny_config: Callable[..., object], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ray-cluster-run")
    return Path(fit(tiny_config(run), resume=False).model_path)  # type: ignore[attr-defined]


def grn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ | (env or {}),
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return out


def archive_ids(ucm_root: Path, labels: Path) -> list[int]:
    return sorted(scene_id(s.name) for s in load_archive(ucm_root, labels).scenes)


def shard_ids(folder: Path) -> Counter[int]:
    """How many times each scene id is in the folder's Parquet files."""
    import pyarrow.parquet as pq

    counts: Counter[int] = Counter()
    for path in folder.glob("*.parquet"):
        counts.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return counts


def test_an_address_without_a_cluster_is_a_one_line_error(ucm_root: Path, tmp_path: Path) -> None:
    from index.ray_cluster import free_ports

    silent = f"127.0.0.1:{free_ports(1)[0]}"
    common = ["--model", str(tmp_path / "model"), "--archive", str(ucm_root)]
    for command, address, said in [
        (["reindex", *common, "--index-root", str(tmp_path / "index")], silent,
         f"no Ray cluster answers at {silent}"),
        (["embed", *common, "--out", str(tmp_path / "out")], "head-without-port",
         "is not a Ray cluster address"),
    ]:  # fmt: skip
        job = grn(*command, "--ray-address", address)
        _, err = job.communicate(timeout=300)
        assert job.returncode == 1, err
        assert err.startswith("error: ") and said in err and err.count("\n") == 1, err
    assert not (tmp_path / "index").exists() and not (tmp_path / "out").exists()


def test_the_cluster_has_three_nodes_listening_on_loopback_only(cluster: object) -> None:
    from index.ray_cluster import LocalRayCluster

    assert isinstance(cluster, LocalRayCluster)
    assert cluster.alive_nodes() == 3
    listening = cluster.listening()
    # each node's raylet (node manager and object manager) at least, the head's GCS
    assert len(listening) >= 7, listening
    assert cluster.port in {port for _, port, _ in listening}
    assert [entry for entry in listening if entry[0] not in LOOPBACK] == []


def test_embed_and_reindex_on_the_cluster_embed_every_scene_once(
    cluster: object, model: Path, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    from index.stores.faiss import Searcher
    from index.stores.faiss_versions import IndexStore

    address = cluster.address  # type: ignore[attr-defined]
    wanted = archive_ids(ucm_root, ucm_subset)
    # grn embed with the cluster from the settings (GRN_RAY_ADDRESS), no --ray
    shards = tmp_path / "shards"
    out = finish(grn("embed", "--model", str(model), "--archive", str(ucm_root), "--labels",
                     str(ucm_subset), "--out", str(shards), "--workers", "3", "--device",
                     "cpu", "--shard-size", "32", env={"GRN_RAY_ADDRESS": address}))  # fmt: skip
    assert f"embedded {len(wanted)} scenes (0 already in" in out
    counts = shard_ids(shards)
    assert sorted(counts) == wanted
    assert set(counts.values()) == {1}
    # grn reindex --ray-address: the index holds every scene, each embedded once
    index = tmp_path / "index"
    out = finish(grn("reindex", "--model", str(model), "--archive", str(ucm_root), "--labels",
                     str(ucm_subset), "--index-root", str(index), "--factory", "Flat",
                     "--device", "cpu", "--quiet", "--ray-address", address,
                     "--workers", "3"))  # fmt: skip
    assert f"{len(wanted)} scenes" in out
    store = IndexStore(index)
    manifest = store.manifest(store.current_version() or "")
    assert (manifest.count, manifest.stats["embedded"]) == (len(wanted), len(wanted))
    assert sorted(Searcher(store.load()).ids.tolist()) == wanted
    assert cluster.alive_nodes() == 3  # type: ignore[attr-defined]


def actor_processes(pids: list[int]) -> list[int]:
    """The Ray Data embedding actors' processes among `pids` (by their process title)."""
    found = []
    for pid in pids:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::") and b"MapWorker" in title:
            found.append(pid)
    return found


@pytest.mark.engines
def test_a_worker_node_killed_mid_run_leaves_every_scene_embedded_once(
    cluster: object, model: Path, ucm_root: Path, tmp_path: Path
) -> None:
    """`grn embed --ray-address` over 400 UCM scenes into files of 16: once the first file
    is written, the worker node that runs an embedding actor is SIGKILLed with all its
    processes (raylet, object store, workers), as a machine that dies. The job finishes on
    the head and the other worker: every scene in the files exactly once."""
    from index.ray_cluster import LocalRayCluster

    assert isinstance(cluster, LocalRayCluster)
    labels = tmp_path / "labels.csv"
    labels.write_text("".join((ucm_root / "labels.csv").open().readlines()[:401]))
    wanted = archive_ids(ucm_root, labels)
    shards = tmp_path / "shards"
    job = grn("embed", "--model", str(model), "--archive", str(ucm_root), "--labels",
              str(labels), "--out", str(shards), "--workers", "3", "--device", "cpu",
              "--shard-size", "16", "--ray-address", cluster.address)  # fmt: skip
    victim = None
    deadline = time.monotonic() + 300
    while job.poll() is None and victim is None and time.monotonic() < deadline:
        if any(shards.glob("*.parquet")):  # polls for the event: the job is under way
            victim = next((n for n in (1, 2) if actor_processes(cluster.nodes[n].pids())), None)
        time.sleep(0.05)
    assert victim is not None, "no worker node ran an embedding actor before the job ended"
    written = len(shard_ids(shards))
    killed = cluster.kill(victim)
    killed_at = time.monotonic()
    out = finish(job)
    print(f"worker node {victim} killed ({len(killed)} processes) with {written} of "
          f"{len(wanted)} scenes written; the job finished {time.monotonic() - killed_at:.1f} s "
          f"later: {out.strip()}")  # fmt: skip
    assert written < len(wanted), "the job was done before the kill"
    assert f"embedded {len(wanted)} scenes (0 already in" in out
    counts = shard_ids(shards)
    assert sorted(counts) == wanted
    duplicated = {i: n for i, n in counts.items() if n != 1}
    assert duplicated == {}, f"{len(duplicated)} scenes written more than once"
    assert killed and cluster.alive_nodes() == 2
