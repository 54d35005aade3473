"""The serving set alone (issue 42 item 4): requirements/serve.lock installed with
`--require-hashes` into a new virtual environment, then the project without its
dependencies, as the serving image does. torch is not there, `pip check` is clean, and
`grn search` there answers as the development install does. Minutes (a real install from
the package index), so it runs with `make test-engines`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from commands import grn
from servers import REPO, Served, prepared_database, server_env
from test_without_torch import same_hits

from model.archive import load_archive, scene_id

pytestmark = pytest.mark.engines

SOURCES = ("model", "index", "service", "migrations", "pyproject.toml", "README.md")


def run(
    *command: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, env=env
    )


def serving_install(tmp_path: Path) -> Path:
    """A new environment holding the serving set and the project (from a copy of its
    sources, so that the repository gets no build folders); its bin folder."""
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    locked = run(
        python, "-m", "pip", "install", "--quiet", "--require-hashes", "--requirement",
        REPO / "requirements" / "serve.lock", cwd=tmp_path,
    )  # fmt: skip
    assert locked.returncode == 0, locked.stderr
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(REPO / name, source / name)
    project = run(python, "-m", "pip", "install", "--quiet", "--no-deps", source, cwd=tmp_path)
    assert project.returncode == 0, project.stderr
    return venv / "bin"


def hits(done: subprocess.CompletedProcess[str]) -> dict[str, float]:
    """scene id -> score of `grn search --format json`."""
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    return {str(hit["id"]): hit["score"] for hit in body["hits"]}


def test_the_serving_set_alone_installs_and_searches(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    bin_folder = serving_install(tmp_path)
    checked = run(bin_folder / "python", "-m", "pip", "check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    no_torch = run(bin_folder / "python", "-c", "import torch", cwd=tmp_path)
    assert "No module named 'torch'" in no_torch.stderr
    # the installed package, not the repository's sources
    where = run(
        bin_folder / "python", "-c", "import service; print(service.__file__)", cwd=tmp_path
    )
    assert where.stdout.startswith(str(bin_folder.parent / "lib")), where.stdout

    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    settings = server_env(served, url, tmp_path)
    scenes = load_archive(ucm_root, ucm_subset).scenes
    queries = [
        ["--scene", str(scene_id(scenes[5].name))],  # the index alone
        [str(scenes[11].path)],  # an upload: the model file's graph on ONNX Runtime
    ]
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **settings}
    for query in queries:
        args = ["search", *query, "--k", "6", "--format", "json"]
        mine = hits(run(bin_folder / "grn", *args, cwd=tmp_path, env=bare))
        theirs = hits(grn(*args, env=settings))
        assert len(mine) == 6
        same_hits(mine, theirs)
