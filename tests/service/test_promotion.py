"""Retraining from SQL with a gate, through the API and the CLI as an operator uses them: a
retrained model that is better on val is promoted with its own index; one trained on labels
made wrong is not; `grn promote --force` puts it in anyway; a rollback brings the previous
model back. Each step is checked in `/readyz` and by a search."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from servers import (
    REPO,
    LiveServer,
    Served,
    copy_served,
    ended_job,
    prepared_database,
    server_env,
)
from sqlalchemy import text

from service.storage.db import make_engine

KEY = "admin-key-0123456789abcdef"
AUTH = {"X-API-Key": KEY}


def served_version(client: httpx.Client, expected_not: str | None = None) -> str:
    """The model in service, once it differs from `expected_not` (the swap follows the job)."""
    deadline = time.monotonic() + 30
    while True:
        version: str = client.get("/readyz").json()["model_version"]
        if version != expected_not or time.monotonic() > deadline:
            return version
        client.post("/admin/reload", headers=AUTH)
        time.sleep(0.5)


def test_retrain_gate_force_and_rollback(
    served: Served, ucm_root: Path, ucm_wide_val: Path, tmp_path: Path
) -> None:
    # 189 scenes: 4 train, 4 val (the gate's 84 scenes) and 1 test per folder
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_wide_val)
    mine = copy_served(served, tmp_path / "served")
    env = server_env(mine, url, tmp_path, GRN_API_KEY=KEY)
    env["HOME"] = str(tmp_path)  # a feature cache of its own
    first = None
    with LiveServer(env, tmp_path / "server.log") as server, server.client() as client:
        original = client.get("/readyz").json()["model_version"]

        # the served model is a 1-epoch tiny network: a head-mode model trained on SQL's
        # labels is better on val, so the gate promotes it, with an index of its own
        started = client.post("/admin/train", headers=AUTH, json={"epochs": 20})
        assert started.status_code == 202, started.text
        job = ended_job(client, started.json()["id"], KEY)
        assert job["status"] == "succeeded", job["output"]
        assert any("passes" in line for line in job["output"]), job["output"]
        first = served_version(client, expected_not=original)
        assert first != original
        ready = client.get("/readyz").json()
        assert ready["index_count"] == ready["scenes"] == 189
        ids = [s["id"] for s in client.get("/scenes", params={"limit": 3}).json()["scenes"]]
        hits = client.post("/search", json={"scene_id": ids[0], "k": 5})
        assert hits.status_code == 200 and hits.json()["model_version"] == first

        # labels made wrong in SQL (every train scene: airplane only): the retrained model
        # is worse on val and stays out; the job says which figure was lower
        engine = make_engine(url)
        with engine.begin() as connection:
            airplane = connection.execute(
                text("SELECT id FROM labels WHERE name = 'airplane'")
            ).scalar_one()
            train = "SELECT id FROM scenes WHERE split = 'train'"
            connection.execute(text(f"DELETE FROM scene_labels WHERE scene_id IN ({train})"))
            connection.execute(
                text(f"INSERT INTO scene_labels (scene_id, label_id) SELECT id, {airplane} "
                     f"FROM scenes WHERE split = 'train'")
            )  # fmt: skip
        engine.dispose()
        train = client.post("/admin/train", headers=AUTH, json={"epochs": 20})
        refused = ended_job(client, train.json()["id"], KEY)
        assert refused["status"] == "failed" and refused["returncode"] == 3, refused["output"]
        assert any("not promoted: lower" in line for line in refused["output"]), refused
        assert client.get("/readyz").json()["model_version"] == first

        # forced: the CLI as typed
        runs = sorted(p for p in (tmp_path / "served").iterdir() if p.name.startswith("retrain-"))
        assert len(runs) == 2
        forced = subprocess.run(
            [sys.executable, "-m", "service.cli", "promote", "--model", str(runs[-1]), "--force"],
            cwd=REPO, capture_output=True, text=True, env={**os.environ, **env},
        )  # fmt: skip
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert "promoted anyway (--force)" in forced.stdout
        second = served_version(client, expected_not=first)
        assert second not in (first, original)
        listed = subprocess.run(
            [sys.executable, "-m", "service.cli", "models"],
            cwd=REPO, capture_output=True, text=True, env={**os.environ, **env},
        ).stdout  # fmt: skip
        header, newest, *_ = listed.splitlines()
        assert header.split()[:2] == ["served", "version"]
        assert newest.split()[:2] == ["*", second] and first in listed

        # rollback: the model before, with its index version put back
        rolled = ended_job(client, client.post("/admin/rollback", headers=AUTH).json()["id"], KEY)
        assert rolled["status"] == "succeeded", rolled["output"]
        assert served_version(client, expected_not=second) == first
        ready = client.get("/readyz").json()
        assert ready["index_count"] == 189 and ready["model_version"] == first
