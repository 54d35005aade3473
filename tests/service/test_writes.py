"""Scenes added, searched, corrected and removed through HTTP, on SQLite and PostgreSQL, with
two server processes (`GRN_WORKERS=2`), so a write made through one is read through the
other."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import REPO, LiveServer, Served, copy_served, prepared_database, server_env

from model.archive import scene_id

ADMIN_KEY = "admin-key-0123456789abcdef"
WRITE_KEY = "write-key-0123456789abcdef"
WRITER = {"X-API-Key": WRITE_KEY}


def unused_scenes(ucm_root: Path, subset: Path, count: int) -> list[tuple[str, Path, set[str]]]:
    """UCM scenes the served subset does not hold: (name, file, labels)."""
    with subset.open(newline="") as handle:
        taken = {row["image"] for row in csv.DictReader(handle)}
    found = []
    with (ucm_root / "labels.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        labels = [c for c in reader.fieldnames or [] if c not in ("image", "scene", "split")]
        for row in reader:
            if row["image"] in taken or row["scene"] not in ("airplane", "harbor", "beach"):
                continue
            path = next(ucm_root.glob(f"**/{row['image']}.*"))
            found.append((row["image"], path, {n for n in labels if row[n] == "1"}))
            if len(found) == count:
                break
    return found


@dataclass(frozen=True)
class Writable:
    server: LiveServer
    store: Path
    env: dict[str, str]

    def grn(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A `grn` command with the service's settings, as an operator types it."""
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
        )


@pytest.fixture
def writable(
    database_url: str,
    served: Served,
    ucm_root: Path,
    ucm_subset: Path,
    tmp_path: Path,
) -> Iterator[Writable]:
    """Two server processes over the UCM subset, on a database of their own."""
    prepared_database(database_url, ucm_root, ucm_subset)
    mine = copy_served(served, tmp_path / "served")
    store = tmp_path / "store"
    env = server_env(
        mine,
        database_url,
        tmp_path,
        GRN_API_KEY=ADMIN_KEY,
        GRN_WRITE_KEY=WRITE_KEY,
        GRN_STORE_DIR=str(store),
        GRN_WORKERS="2",
    )
    with LiveServer(env, tmp_path / "server.log") as server:
        yield Writable(server, store, env)


def search_by_file(url: str, path: Path, **fields: Any) -> dict[str, Any]:
    """A search by upload on a new connection (so either process may answer)."""
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post(
            "/search", files={"file": (path.name, path.read_bytes())}, data=fields
        )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def total(client: httpx.Client) -> int:
    return int(client.get("/scenes", params={"limit": 1}).json()["total"])


def test_add_search_correct_delete(writable: Writable, ucm_root: Path, ucm_subset: Path) -> None:
    server, store = writable.server, writable.store
    (name, path, labels), (_, other_path, _) = unused_scenes(ucm_root, ucm_subset, 2)
    data = path.read_bytes()
    with server.client() as client:
        before = total(client)
        # without a key, or with a wrong one: refused, nothing written
        files = {"file": (path.name, data)}
        assert client.post("/scenes", files=files).status_code == 401
        refused = client.post("/scenes", files=files, headers={"X-API-Key": "wrong" * 5})
        assert refused.status_code == 403
        # the write key may not run admin jobs
        assert client.post("/admin/reload", headers=WRITER).status_code == 403

        added = client.post(
            "/scenes",
            files=files,
            data={
                "name": name,
                "scene": "airport",
                "labels": ",".join(sorted(labels)),
                "metadata": json.dumps({"sensor": "test", "gsd_m": 0.3}),
            },
            headers=WRITER,
        )
        assert added.status_code == 201, added.text
        body = added.json()
        assert body["searchable"] is True
        (scene,) = body["scenes"]
        new_id = int(scene["id"])
        assert new_id == scene_id(name) and not scene["duplicate"]
        assert set(scene["labels"]) == labels and scene["scene"] == "airport"
        assert scene["metadata"] == {"sensor": "test", "gsd_m": 0.3}
        assert total(client) == before + 1
        stored = list(store.rglob("*.*"))
        assert len(stored) == 1 and stored[0].read_bytes() == data

        # the same file again is the same scene: a 409 naming it, nothing written
        again = client.post("/scenes", files={"file": ("copy.jpg", data)}, headers=WRITER)
        assert again.status_code == 409 and again.json()["error"] == "duplicate"
        assert int(again.json()["details"][0]["id"]) == new_id and total(client) == before + 1
        # among new images, it comes back marked as the scene it is
        mixed = client.post(
            "/scenes",
            files=[
                ("file", ("copy.jpg", data)),
                ("file", (other_path.name, other_path.read_bytes())),
            ],
            data={"scenes": json.dumps([{}, {"name": "mixed-new"}])},
            headers=WRITER,
        )
        assert mixed.status_code == 201, mixed.text
        assert [s["duplicate"] for s in mixed.json()["scenes"]] == [True, False]
        assert int(mixed.json()["scenes"][0]["id"]) == new_id
        removed = client.delete(f"/scenes/{scene_id('mixed-new')}", headers=WRITER)
        assert removed.status_code == 204 and total(client) == before + 1

    # searchable at once, through either process: by its image, by its id, by its labels
    for _ in range(4):
        hits = search_by_file(server.url, path, k="5")["hits"]
        assert int(hits[0]["id"]) == new_id and hits[0]["score"] > 0.999
        assert len(hits) == 5
    with httpx.Client(base_url=server.url, timeout=60) as client:
        by_id = client.post("/search", json={"scene_id": str(new_id), "k": 5})
        assert by_id.status_code == 200, by_id.text
        assert new_id not in [int(h["id"]) for h in by_id.json()["hits"]]
        assert len(by_id.json()["hits"]) == 5
        detail = client.get(f"/scenes/{new_id}").json()
        assert detail["metadata"]["sensor"] == "test"
        image = client.get(f"/scenes/{new_id}/image")
        assert image.status_code == 200 and image.content == data
        assert client.get(f"/scenes/{new_id}/thumbnail").status_code == 200
    label = sorted(labels)[0]
    hits = search_by_file(server.url, path, k="3", labels_all=label)["hits"]
    assert int(hits[0]["id"]) == new_id

    with server.client() as client:
        # corrections: an unknown label is a 400 naming the known ones, nothing changed
        wrong = client.patch(f"/scenes/{new_id}", json={"labels": ["volcano"]}, headers=WRITER)
        assert wrong.status_code == 400 and "airplane" in wrong.json()["message"]
        assert set(client.get(f"/scenes/{new_id}").json()["labels"]) == labels
        fixed = client.patch(
            f"/scenes/{new_id}",
            json={"labels": ["buildings"], "metadata": None, "scene": "corrected"},
            headers=WRITER,
        )
        assert fixed.status_code == 200, fixed.text
        assert fixed.json()["labels"] == ["buildings"] and fixed.json()["metadata"] is None
    ids = [int(h["id"]) for h in search_by_file(server.url, path, k="3", labels_all=label)["hits"]]
    assert new_id not in ids
    hits = search_by_file(server.url, path, k="3", labels_all="buildings")["hits"]
    assert int(hits[0]["id"]) == new_id and hits[0]["scene"] == "corrected"

    with server.client() as client:
        # a broken image, an unknown label, a taken name: each a 4xx, nothing written
        broken = client.post("/scenes", files={"file": ("x.jpg", b"not an image")}, headers=WRITER)
        assert broken.status_code == 400
        unknown = client.post(
            "/scenes",
            files={"file": (other_path.name, other_path.read_bytes())},
            data={"labels": "volcano"},
            headers=WRITER,
        )
        assert unknown.status_code == 400 and unknown.json()["error"] == "unknown_label"
        taken = client.post(
            "/scenes",
            files={"file": (other_path.name, other_path.read_bytes())},
            data={"name": name},
            headers=WRITER,
        )
        assert taken.status_code == 409 and taken.json()["error"] == "scene_conflict"
        assert total(client) == before + 1

        # removal: gone from searches and listings at once, its file too
        assert client.delete(f"/scenes/{new_id}").status_code == 401
        assert client.delete(f"/scenes/{new_id}", headers=WRITER).status_code == 204
        assert client.get(f"/scenes/{new_id}").status_code == 404
        assert client.delete(f"/scenes/{new_id}", headers=WRITER).status_code == 404
        assert total(client) == before and not list(store.rglob("*.*"))
    for _ in range(4):
        hits = search_by_file(server.url, path, k="5")["hits"]
        assert new_id not in [int(h["id"]) for h in hits] and len(hits) == 5


def test_removed_indexed_scene_leaves_searches_whole(
    writable: Writable, ucm_root: Path, ucm_subset: Path
) -> None:
    """An imported scene the index version holds: removed, no search returns it, and a
    search still returns k hits; its file stays in the archive folder."""
    server = writable.server
    with server.client() as client:
        first = client.get("/scenes", params={"limit": 1, "scene": "harbor"}).json()["scenes"][0]
        victim = int(first["id"])
        path = next(ucm_root.glob(f"**/{first['image']}.*"))
        hits = search_by_file(server.url, path, k="10")["hits"]
        assert int(hits[0]["id"]) == victim
        assert (
            client.delete(f"/scenes/{victim}", headers={"X-API-Key": ADMIN_KEY}).status_code == 204
        )
        assert path.is_file()
        by_id = client.post("/search", json={"scene_id": str(victim)})
        assert by_id.status_code == 404
    for _ in range(4):
        after = search_by_file(server.url, path, k="10")["hits"]
        assert victim not in [int(h["id"]) for h in after] and len(after) == 10
        assert [h["id"] for h in after] == [h["id"] for h in hits[1:]] + [after[-1]["id"]]


def test_reindex_from_sql_folds_the_writes_in(
    writable: Writable, ucm_root: Path, ucm_subset: Path
) -> None:
    """Added and removed scenes are not drift while SQL keeps the added ones' embeddings;
    `grn reindex --catalog` builds a version that holds exactly SQL's scenes, and the
    service searches it as it searched before."""
    server = writable.server
    (name, path, _), (name2, path2, _) = unused_scenes(ucm_root, ucm_subset, 2)
    with server.client() as client:
        for scene_name, file in ((name, path), (name2, path2)):
            response = client.post(
                "/scenes",
                files={"file": (file.name, file.read_bytes())},
                data={"name": scene_name},
                headers=WRITER,
            )
            assert response.status_code == 201, response.text
        victim = client.get("/scenes", params={"limit": 1}).json()["scenes"][0]
        assert client.delete(f"/scenes/{victim['id']}", headers=WRITER).status_code == 204
        before = search_by_file(server.url, path, k="10")["hits"]

    found = writable.grn("reconcile")
    assert found.returncode == 1, found.stdout + found.stderr  # the removal is drift
    assert "1 indexed scenes are not in SQL" in found.stdout
    assert "2 scenes added through the API are searched" in found.stdout

    built = writable.grn("reindex", "--model", writable.env["GRN_MODEL_PATH"], "--catalog",
                         "--incremental", "--quiet")  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    assert "added 2, removed 1" in built.stdout
    clean = writable.grn("reconcile")
    assert clean.returncode == 0 and "the index matches SQL" in clean.stdout, clean.stdout

    with server.client() as client:
        assert client.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
        ready = client.get("/readyz").json()
        assert ready["index_count"] == ready["scenes"] == 127
    after = search_by_file(server.url, path, k="10")["hits"]
    assert [h["id"] for h in after] == [h["id"] for h in before]
    np_scores = [round(h["score"], 4) for h in after]
    assert np_scores == [round(h["score"], 4) for h in before]

    # an archive given both ways, or neither, is refused with one line
    both = writable.grn("reindex", "--model", writable.env["GRN_MODEL_PATH"], "--catalog",
                        "--archive", str(ucm_root))  # fmt: skip
    assert both.returncode == 2 and "--archive FOLDER or --catalog" in both.stderr


@pytest.mark.parametrize("point", ["scene-stored", "scene-committed"])
def test_a_crash_while_adding_loses_and_duplicates_nothing(
    point: str, served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """The server SIGKILLed after storing the file, or after committing the row: after a
    restart the archive holds the scene once or not at all, sending it again gives it
    exactly once, and `grn reconcile` finds no drift."""
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    mine = copy_served(served, tmp_path / "served")
    env = server_env(mine, url, tmp_path, GRN_WRITE_KEY=WRITE_KEY,
                     GRN_STORE_DIR=str(tmp_path / "store"))  # fmt: skip
    ((name, path, _),) = unused_scenes(ucm_root, ucm_subset, 1)
    files = {"file": (path.name, path.read_bytes())}
    with LiveServer({**env, "GRN_FAULT_KILL_AT": point}, tmp_path / "killed.log") as server:
        with pytest.raises(httpx.HTTPError), server.client() as client:
            client.post("/scenes", files=files, data={"name": name}, headers=WRITER)
        server.process.wait(timeout=30)
        assert server.process.returncode == -9
    with LiveServer(env, tmp_path / "server.log") as server, server.client() as client:
        present = client.get(f"/scenes/{scene_id(name)}").status_code == 200
        assert present == (point == "scene-committed")
        again = client.post("/scenes", files=files, data={"name": name}, headers=WRITER)
        assert again.status_code == (409 if present else 201), again.text
        assert total(client) == 127
        hits = search_by_file(server.url, path, k="3")["hits"]
        assert int(hits[0]["id"]) == scene_id(name)
    found = Writable(server, tmp_path / "store", env).grn("reconcile")
    assert found.returncode == 0, found.stdout + found.stderr
    assert "1 scenes added through the API are searched" in found.stdout


def test_an_archive_store_that_cannot_be_written_is_a_clear_503(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """GRN_STORE_DIR unusable (here a file where a folder should be; in a container, a
    volume its user may not write): the upload says so, nothing is added."""
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    mine = copy_served(served, tmp_path / "served")
    blocked = tmp_path / "store"
    blocked.write_text("not a folder")
    env = server_env(mine, url, tmp_path, GRN_WRITE_KEY=WRITE_KEY, GRN_STORE_DIR=str(blocked))
    ((_, path, _),) = unused_scenes(ucm_root, ucm_subset, 1)
    with LiveServer(env, tmp_path / "server.log") as server, server.client() as client:
        refused = client.post(
            "/scenes", files={"file": (path.name, path.read_bytes())}, headers=WRITER
        )
        assert refused.status_code == 503, refused.text
        body = refused.json()
        assert body["error"] == "archive_store_unavailable" and "GRN_STORE_DIR" in body["message"]
        assert total(client) == 126 and blocked.read_text() == "not a folder"
