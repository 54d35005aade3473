"""`grn reconcile`: SQL is the truth; drift in the index is found and repaired."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from servers import REPO, Served, copy_served, prepared_database, train_tiny

from index.stores.faiss_versions import IndexStore
from model.archive import scene_id
from model.card import read_card


def grn(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )


def held(root: Path) -> set[int]:
    store = IndexStore(root)
    return set(store.ids(str(store.current_version())).tolist())


@pytest.fixture
def drifted(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> tuple[Served, str, set[int]]:
    """A copy of `served` (an index of the subset's 126 scenes) and SQL that drifted from it,
    holding 100 of those scenes and 10 UCM scenes outside the subset: the copy, the SQL URL
    and the ids of the scenes in SQL."""
    mine = copy_served(served, tmp_path)
    with ucm_subset.open(newline="") as handle:
        subset_rows = list(csv.reader(handle))
    with (ucm_root / "labels.csv").open(newline="") as handle:
        all_rows = list(csv.reader(handle))
    in_subset = {row[0] for row in subset_rows[1:]}
    others = [row for row in all_rows[1:] if row[0] not in in_subset][:10]
    archive = tmp_path / "archive"
    (archive / "images").mkdir(parents=True)
    rows = subset_rows[1:101] + others
    for row in rows:
        source = next((ucm_root / "images").glob(f"*/{row[0]}.*"))
        shutil.copy(source, archive / "images" / source.name)
    with (archive / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([subset_rows[0], *rows])
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, archive, archive / "labels.csv")
    return mine, url, {scene_id(row[0]) for row in rows}


def test_reconcile_finds_and_repairs_drift(
    drifted: tuple[Served, str, set[int]], tiny_config: Callable[..., object], tmp_path: Path
) -> None:
    mine, url, sql_ids = drifted
    env = {
        "GRN_DATABASE_URL": url,
        "GRN_MODEL_PATH": str(mine.model),
        "GRN_INDEX_ROOT": str(mine.index_root),
        "GRN_DEVICE": "cpu",
    }
    found = grn("reconcile", env=env)
    assert found.returncode == 1
    assert "10 scenes in SQL are not in the index" in found.stdout
    assert "26 indexed scenes are not in SQL" in found.stdout
    repaired = grn("reconcile", "--repair", "--quiet", env=env)
    assert repaired.returncode == 0, repaired.stderr
    assert "added 10, removed 26" in repaired.stdout
    assert held(mine.index_root) == sql_ids
    assert grn("reconcile", env=env).returncode == 0

    # a retrained model: the index must be rebuilt whole with it
    retrained = train_tiny(tiny_config, tmp_path / "retrain", seed=3)
    shutil.copy(retrained, mine.model)
    stale = grn("reconcile", env=env)
    assert stale.returncode == 1 and "a full rebuild is needed" in stale.stdout
    rebuilt = grn("reconcile", "--repair", "--quiet", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    store = IndexStore(mine.index_root)
    current = store.manifest(str(store.current_version()))
    assert current.model_version == read_card(mine.model).version and current.parent is None
    assert held(mine.index_root) == sql_ids


def test_reconcile_a_milvus_collection(
    drifted: tuple[Served, str, set[int]],
    tiny_config: Callable[..., object],
    ucm_root: Path,
    ucm_subset: Path,
    tmp_path: Path,
) -> None:
    pytest.importorskip("pymilvus")
    mine, url, sql_ids = drifted
    env = {"GRN_DATABASE_URL": url, "GRN_MODEL_PATH": str(mine.model), "GRN_DEVICE": "cpu"}
    uri = str(tmp_path / "milvus.db")
    milvus = ["--milvus", uri, "--index-root", str(tmp_path / "work")]
    built = grn("reindex", "--model", str(mine.model), "--archive", str(ucm_root),
                "--labels", str(ucm_subset), *milvus, "--quiet", env=env)  # fmt: skip
    assert built.returncode == 0, built.stderr
    found = grn("reconcile", *milvus, env=env)
    assert found.returncode == 1
    assert "10 scenes in SQL are not in the index" in found.stdout
    assert "26 indexed scenes are not in SQL" in found.stdout
    # what the service searches is what reconcile checks by default
    served_milvus = {**env, "GRN_VECTOR_STORE": "milvus", "GRN_MILVUS_URI": uri}
    by_settings = grn("reconcile", "--index-root", str(tmp_path / "work"), env=served_milvus)
    assert by_settings.stdout == found.stdout and by_settings.returncode == 1
    repaired = grn("reconcile", "--repair", "--quiet", *milvus, env=env)
    assert repaired.returncode == 0, repaired.stderr
    assert "holds 110 scenes (added 10, removed 26)" in repaired.stdout
    retrained = train_tiny(tiny_config, tmp_path / "retrain", seed=4)
    shutil.copy(retrained, mine.model)
    stale = grn("reconcile", *milvus, env=env)
    assert stale.returncode == 1 and "a full rebuild is needed" in stale.stdout
    rebuilt = grn("reconcile", "--repair", "--quiet", *milvus, env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "holds 110 scenes (added 110, removed 0)" in rebuilt.stdout
    from index.stores.milvus_collection import MilvusCollection

    store = MilvusCollection(uri, "scenes", 128, read_card(mine.model).version)
    assert set(store.ids().tolist()) == sql_ids
    store.close()


class TokenRecorder:
    """A gRPC server on 127.0.0.1 that records the metadata of every call and answers each
    UNAUTHENTICATED, as a Milvus server with authentication answers a client without the
    right token."""

    def __init__(self) -> None:
        from concurrent import futures

        import grpc

        self.seen: list[tuple[str, str | None]] = []
        recorder = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):  # type: ignore[no-untyped-def]
                metadata = dict(details.invocation_metadata)
                recorder.seen.append((details.method, metadata.get("authorization")))

                def reject(request, context):  # type: ignore[no-untyped-def]
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "a token is required")

                return grpc.unary_unary_rpc_method_handler(reject)

        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        self.server.add_generic_rpc_handlers((Handler(),))
        self.uri = f"http://127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)


def test_every_milvus_command_sends_the_token(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """GRN_MILVUS_TOKEN reaches a Milvus server from reconcile (and its repair), status and
    reindex alike: each fails here (the server refuses everything) with one clear line, and
    the server saw the token on every call."""
    pytest.importorskip("pymilvus")
    import base64

    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    recorder = TokenRecorder()
    token = "analyst:s3cret"
    env = {
        "GRN_DATABASE_URL": url, "GRN_MODEL_PATH": str(served.model), "GRN_DEVICE": "cpu",
        "GRN_MILVUS_TOKEN": token, "GRN_INDEX_ROOT": str(tmp_path / "index"),
    }  # fmt: skip
    served_milvus = {**env, "GRN_VECTOR_STORE": "milvus", "GRN_MILVUS_URI": recorder.uri}
    commands = [
        (["reconcile", "--milvus", recorder.uri], env),
        (["reconcile", "--repair", "--quiet"], served_milvus),
        (["status"], served_milvus),
        (["reindex", "--model", str(served.model), "--archive", str(ucm_root), "--labels",
          str(ucm_subset), "--milvus", recorder.uri, "--quiet"], env),
    ]  # fmt: skip
    try:
        for args, command_env in commands:
            before = len(recorder.seen)
            done = grn(*args, env=command_env)
            assert done.returncode == 1, (args, done.stdout, done.stderr)
            assert "Traceback" not in done.stderr, done.stderr
            assert "did not answer" in done.stdout + done.stderr, (args, done.stdout)
            calls = recorder.seen[before:]
            assert calls, args
            expected = base64.b64encode(token.encode()).decode()
            assert {auth for _, auth in calls} == {expected}, (args, calls)
    finally:
        recorder.close()
