"""The service where torch is not installed, as in the serving image (Dockerfile target
`serve`): servers, `grn classify` and `grn reindex` in processes where importing torch fails
(without_torch/sitecustomize.py first on PYTHONPATH) answer as the torch network does: the
model file's ONNX graph on ONNX Runtime, images resized by model.resize; `grn promote`'s gate
measures the val figures on that graph as torch does."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import faiss
import httpx
import numpy as np
import pytest
from commands import grn as grn_command
from PIL import Image
from servers import (
    REPO,
    LiveServer,
    Served,
    empty_database,
    eventually,
    prepared_database,
    server_env,
)

from model.archive import load_archive, scene_id

REFUSING = Path(__file__).parent / "without_torch"
TOLERANCE = 1e-4
"""As model.engine.TOLERANCE: how far the graph's outputs may be from torch's."""


def without_torch(record: Path) -> dict[str, str]:
    """The environment of a process that cannot import torch (refusals logged in `record`)."""
    paths = [str(REFUSING), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "GRN_TEST_REFUSED_IMPORTS": str(record),
    }


def refused(record: Path) -> set[str]:
    """The top-level modules a process was refused."""
    if not record.is_file():
        return set()
    return {line.split()[1].split(".")[0] for line in record.read_text().splitlines()}


def uploads(ucm_root: Path, ucm_subset: Path) -> dict[str, bytes]:
    """Two UCM scenes as they are (JPEG, 256 x 256) and a crop of a third that is not square
    (PNG, 256 x 180): every one is resized to the model's input size."""
    scenes = load_archive(ucm_root, ucm_subset).scenes
    crop = io.BytesIO()
    Image.open(scenes[7].path).convert("RGB").crop((0, 30, 256, 210)).save(crop, format="PNG")
    return {
        "a.jpg": scenes[2].path.read_bytes(),
        "b.jpg": scenes[11].path.read_bytes(),
        "crop.png": crop.getvalue(),
    }


def answers(server: LiveServer, images: dict[str, bytes], query: int) -> dict[str, object]:
    """/classify and /search (by upload and by scene id) of every image."""
    out: dict[str, object] = {}
    with server.client() as client:
        for name, data in images.items():
            r = client.post("/classify", files={"file": (name, data)})
            assert r.status_code == 200, r.text
            out[f"classify {name}"] = r.json()
            r = client.post("/search", files={"file": (name, data)}, data={"k": "8"})
            assert r.status_code == 200, r.text
            out[f"search {name}"] = r.json()
        r = client.post("/search", json={"scene_id": query, "k": 8})
        assert r.status_code == 200, r.text
        out["search by id"] = r.json()
    return out


def scores(body: object) -> dict[str, float]:
    """label -> probability of a /classify answer (one image)."""
    assert isinstance(body, dict)
    return {s["label"]: s["probability"] for s in body["labels"]}


def hits(body: object) -> dict[str, float]:
    """scene id -> score of a /search answer."""
    assert isinstance(body, dict)
    return {hit["id"]: hit["score"] for hit in body["hits"]}


def same_hits(mine: dict[str, float], theirs: dict[str, float]) -> None:
    """The same scenes with the same scores (to TOLERANCE); a scene found by one only is
    one whose score ties the last one kept (the tiny model scores many scenes alike)."""
    assert len(mine) == len(theirs)
    for found, other in ((mine, theirs), (theirs, mine)):
        last = min(found.values())
        for scene, score in found.items():
            if scene in other:
                assert score == pytest.approx(other[scene], abs=TOLERANCE), scene
            else:
                assert score == pytest.approx(last, abs=TOLERANCE), scene


def test_the_server_without_torch_answers_as_the_torch_network(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """Two servers over one database: one runs the torch network itself (GRN_ENGINE=torch,
    torchvision's resize), one cannot import torch. Classifications and searches agree."""
    record = tmp_path / "refused.txt"
    images = uploads(ucm_root, ucm_subset)
    query = scene_id(load_archive(ucm_root, ucm_subset).scenes[5].name)
    with empty_database("sqlite", tmp_path) as url:
        prepared_database(url, ucm_root, ucm_subset)
        (tmp_path / "torch").mkdir()
        (tmp_path / "graph").mkdir()
        torch_env = server_env(served, url, tmp_path / "torch", GRN_ENGINE="torch")
        with LiveServer(torch_env, tmp_path / "torch.log") as server:
            reference = answers(server, images, query)
        graph_env = server_env(served, url, tmp_path / "graph", **without_torch(record))
        with LiveServer(graph_env, tmp_path / "graph.log") as server:
            ours = answers(server, images, query)
            with server.client() as client:
                ready = client.get("/readyz").json()
    assert "torch" in refused(record), "the server never tried torch: the test proves nothing"
    assert ready["status"] == "ready" and ready["warning"] is None, ready
    for name in images:
        theirs, mine = reference[f"classify {name}"], ours[f"classify {name}"]
        assert isinstance(theirs, dict) and isinstance(mine, dict)
        assert mine["model_version"] == theirs["model_version"]
        assert scores(mine).keys() == scores(theirs).keys()
        for label, probability in scores(theirs).items():
            assert scores(mine)[label] == pytest.approx(probability, abs=TOLERANCE), (name, label)
        assert mine["predicted"] == theirs["predicted"]
        same_hits(hits(ours[f"search {name}"]), hits(reference[f"search {name}"]))
    by_id, reference_by_id = ours["search by id"], reference["search by id"]
    assert isinstance(by_id, dict) and isinstance(reference_by_id, dict)
    # the index alone (nothing ran the network): the same hits in the same order
    assert [(h["id"], h["score"]) for h in by_id["hits"]] == [
        (h["id"], h["score"]) for h in reference_by_id["hits"]
    ]


def grn(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`grn ARGS` in this process's environment with `env` over it."""
    return grn_command(*args, env={**os.environ, **env})


def vectors(index_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The ids and vectors of an index root's current version (a Flat index)."""
    version = (index_root / "current").read_text().strip()
    folder = index_root / "versions" / version
    index = faiss.read_index(str(folder / "index.faiss"))
    ids = np.load(folder / "ids.npy")
    return ids, np.stack([index.reconstruct(int(i)) for i in ids])


def test_reindex_and_classify_without_torch_give_the_torch_installs_vectors(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """`grn reindex` where torch is missing (what the worker of the serving image runs)
    builds the index the torch install built, and `grn classify` gives its labels."""
    record = tmp_path / "refused.txt"
    env = {**without_torch(record), "GRN_MODEL_PATH": str(served.model), "OMP_NUM_THREADS": "1"}
    built = grn(
        ["reindex", "--model", str(served.model), "--archive", str(ucm_root), "--labels",
         str(ucm_subset), "--index-root", str(tmp_path / "index"), "--factory", "Flat",
         "--quiet"],
        env,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    assert "torch" in refused(record)
    ids, ours = vectors(tmp_path / "index")
    their_ids, theirs = vectors(served.index_root)
    np.testing.assert_array_equal(ids, their_ids)
    np.testing.assert_allclose(ours, theirs, atol=TOLERANCE)

    images = [load_archive(ucm_root, ucm_subset).scenes[i].path for i in (1, 8)]
    labelled = grn(["classify", "--json", *map(str, images)], env)
    assert labelled.returncode == 0, labelled.stderr
    reference = grn(
        ["classify", "--json", *map(str, images)], {"GRN_MODEL_PATH": str(served.model)}
    )
    assert reference.returncode == 0, reference.stderr
    for mine, theirs in zip(json.loads(labelled.stdout), json.loads(reference.stdout), strict=True):
        assert [s["label"] for s in mine["labels"]] == [s["label"] for s in theirs["labels"]]
        np.testing.assert_allclose(
            [s["probability"] for s in mine["labels"]],
            [s["probability"] for s in theirs["labels"]],
            atol=TOLERANCE,
        )


def test_a_gpu_or_a_model_without_its_graph_is_refused_clearly_without_torch(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """No torch: a model file that stores no graph (torch would export one) and a GPU device
    each stop with one line that says what to do, and change no file."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from model.card import GRAPH_KEY

    bare = tmp_path / "bare" / "model.safetensors"
    bare.parent.mkdir()
    with safe_open(str(served.model), framework="numpy") as handle:
        metadata = handle.metadata()
    save_file(
        {k: v for k, v in load_file(str(served.model)).items() if k != GRAPH_KEY},
        str(bare),
        metadata=metadata,
    )
    written = bare.read_bytes()
    image = str(load_archive(ucm_root, ucm_subset).scenes[0].path)
    env = {**without_torch(tmp_path / "refused.txt"), "GRN_MODEL_PATH": str(bare)}
    result = grn(["classify", image], env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "carries no ONNX graph" in result.stderr
    assert f"grn model add-graph --model {bare}" in result.stderr
    assert bare.read_bytes() == written

    index = tmp_path / "index"
    result = grn(
        ["reindex", "--model", str(served.model), "--archive", str(ucm_root), "--labels",
         str(ucm_subset), "--index-root", str(index), "--device", "cuda", "--quiet"],
        env,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "needs torch" in result.stderr
    assert not (index / "current").exists()


def test_promote_without_torch_runs_the_gate_on_the_models_graph(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`grn promote` as typed on the serving image (no torch): the gate embeds SQL's 21
    labelled val scenes with the model file's ONNX graph and measures what torch measures;
    the model goes into service with an index of its own. A GPU is refused in one line."""
    from model.card import read_card
    from service.storage.catalog_archive import catalog_archive
    from service.storage.db import make_engine
    from service.usecases.promotion import HISTORY, val_figures

    record = tmp_path / "refused.txt"
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    served_file = tmp_path / "models" / "model.safetensors"
    env = {
        **without_torch(record), "GRN_DATABASE_URL": url, "GRN_MODEL_PATH": str(served_file),
        "GRN_INDEX_ROOT": str(tmp_path / "index"), "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    refused_gpu = grn(["promote", "--model", str(served.model), "--device", "cuda"], env)
    assert refused_gpu.returncode == 1, refused_gpu.stdout + refused_gpu.stderr
    assert refused_gpu.stderr.startswith("error: ") and refused_gpu.stderr.count("\n") == 1
    assert "needs torch" in refused_gpu.stderr and "trainer image" in refused_gpu.stderr
    assert not served_file.exists()

    promoted = grn(["promote", "--model", str(served.model)], env)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "torch" in refused(record), "the process never tried torch: the test proves nothing"
    assert "no model is served: it passes" in promoted.stdout
    assert "in service, with an index of its own" in promoted.stdout
    assert served_file.read_bytes() == served.model.read_bytes()
    version_built = (tmp_path / "index" / "current").read_text().strip()
    assert len(np.load(tmp_path / "index" / "versions" / version_built / "ids.npy")) == 126
    version = read_card(served.model).version
    history = json.loads((served_file.parent / HISTORY / f"{version}.json").read_text())

    monkeypatch.setenv("GRN_ENGINE", "torch")  # the reference: torch runs the network
    engine = make_engine(url)
    try:
        theirs = val_figures(served.model, catalog_archive(engine), device="cpu")
    finally:
        engine.dispose()
    ours = history["val_figures"]
    assert ours.keys() == theirs.keys() == {"knn_sample_f1", "map", "classifier_sample_f1"}
    for name, figure in theirs.items():
        assert ours[name] == pytest.approx(figure, abs=1e-3), name


def test_up_without_torch_waits_for_the_trainer_then_indexes_and_serves(
    ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """Compose's split: `grn up` on the serving image (no torch) imports the archive, then
    waits for the model that `grn up --train-only` (the trainer, with torch) writes, indexes
    with the model's graph and serves."""
    from test_prepare import KEY, TINY_TRAINING, run_up, small_archive, stop

    archive = small_archive(ucm_root, ucm_subset, tmp_path / "archive", count=40)
    model = tmp_path / "models" / "run" / "model.safetensors"
    env = {
        "GRN_ENVIRONMENT": "production",
        "GRN_API_KEY": KEY,
        "GRN_DATABASE_URL": f"sqlite:///{tmp_path / 'grn.db'}",
        "GRN_ARCHIVE_DIR": str(archive),
        "GRN_MODEL_PATH": str(model),
        "GRN_INDEX_ROOT": str(tmp_path / "index"),
        "GRN_THUMBNAIL_DIR": str(tmp_path / "thumbnails"),
        "GRN_TRAIN_OPTIONS": TINY_TRAINING,
        "GRN_DEVICE": "cpu",
        "GRN_INDEX_POLL_SECONDS": "0.5",
        "OMP_NUM_THREADS": "1",
    }
    record = tmp_path / "refused.txt"
    api, port = run_up({**env, **without_torch(record)}, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            def waiting() -> str | None:
                try:
                    message = str(client.get("/readyz").json().get("message", ""))
                except httpx.HTTPError:
                    return None
                return message if "in the trainer service" in message else None

            message = eventually(waiting, "the api waiting for the trainer's model", 120)
            assert "training a model into" in message and not model.exists()

            trainer = grn(["up", "--train-only"], env)
            assert trainer.returncode == 0, trainer.stdout + trainer.stderr
            assert model.is_file()

            def ready() -> dict[str, object] | None:
                answer = client.get("/readyz")
                return answer.json() if answer.status_code == 200 else None

            body = eventually(ready, "the api serving the trainer's model", 240)
    finally:
        stop(api)
    log = (tmp_path / "api.log").read_text()
    assert body["scenes"] == 40 and body["index_count"] == 40, log
    assert "grn up: imported 40 scenes" in log and "in the trainer service" in log
    assert "torch" in refused(record)

    again = grn(["up", "--train-only"], env)
    assert again.returncode == 0 and "is present: not training" in again.stdout + again.stderr
    (archive / "labels.csv").unlink()
    bare = grn(["up", "--train-only"], {**env, "GRN_MODEL_PATH": str(tmp_path / "m2.st")})
    assert bare.returncode == 1 and bare.stderr.startswith("error: ")
    assert "holds no labels.csv" in bare.stderr and bare.stderr.count("\n") == 1
