"""`grn` as a person types it, over a real local set-up (a model, its FAISS index and
SQLite holding the same scenes): exit codes 0 (success), 1 (failure) and 2 (usage), errors
on one line without Python reprs, tables under a header row, and `--json` on every read
command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from commands import grn
from servers import Served, prepared_database, server_env

from model.archive import load_archive, scene_id

HIT_HEADER = ["rank", "score", "id", "image", "labels"]


@pytest.fixture(scope="module")
def local(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The GRN_ settings of a model, its index and SQLite over the UCM subset."""
    workdir = tmp_path_factory.mktemp("cli-as-typed")
    url = f"sqlite:///{workdir / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    return server_env(served, url, workdir)


@pytest.fixture(scope="module")
def scenes(ucm_root: Path, ucm_subset: Path) -> list[str]:
    """The ids of the subset's scenes, as the CLI prints them."""
    return [str(scene_id(s.name)) for s in load_archive(ucm_root, ucm_subset).scenes]


def one_line_error(stderr: str) -> str:
    """The error a command printed: one line, `error: ...`, no Python repr or traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "'" not in lines[0] and '"' not in lines[0], stderr
    return lines[0]


def test_a_search_by_scene_is_a_table_under_a_header(
    local: dict[str, str], scenes: list[str]
) -> None:
    done = grn("search", "--scene", scenes[5], "--k", "4", env=local)
    assert done.returncode == 0, done.stderr
    header, *rows = [line.split() for line in done.stdout.splitlines()]
    assert header == HIT_HEADER
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert all(row[2] in scenes and row[2] != scenes[5] for row in rows)
    scores = [float(row[1]) for row in rows]
    assert scores == sorted(scores, reverse=True)


def test_a_search_by_text_says_what_it_understood(local: dict[str, str]) -> None:
    """`grn search --text` here (no server): the phrase read onto the catalog's folders and
    labels, said on stderr, the hits in that folder; nothing understood is a failure."""
    done = grn("search", "--text", "Golf courses, no sand", "--k", "20", env=local)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "understood: folder golfcourse; not sand"
    rows = [row.split() for row in done.stdout.splitlines()[1:]]
    assert len(rows) == 2  # the subset's 6 golf courses, 4 of them with sand
    assert all(row[3].startswith("golfcourse") and "sand" not in row[4] for row in rows)
    failed = grn("search", "--text", "a volcano at dusk", env=local)
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]  # under the encoder's loading bar
    assert last.startswith(
        "error: nothing of the text was understood (not understood: volcano, dusk)"
    )


def test_a_scene_that_is_not_indexed_is_a_one_line_failure(local: dict[str, str]) -> None:
    done = grn("search", "--scene", "12345", env=local)
    assert done.returncode == 1
    line = one_line_error(done.stderr)
    assert line.startswith("error: scene 12345 is not in index ") and done.stdout == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["search", "--scene", "abc"], "error: --scene takes a scene id, a whole number, not abc"),
        (["search", "--more-like", "x1"], "error: --more-like takes a scene id"),
        (["search", "--scene", "1", "--k", "ten"], "error: invalid value for --k: not a whole"),
        (["search", "--scene", "1", "--format", "xml"], "error: --format must be table, json"),
        (["search"], "error: give an image file, --scene ID"),
        (["import"], "error: give an archive folder, or --stac PATH_OR_URL"),
        (["synth"], "error: Missing "),
        (["search", "--scene", "1", "--no-such-option"], "error: No such option: "),
        (["no-such-command"], "error: No such command "),
    ],
)
def test_usage_errors_exit_2_on_one_line(local: dict[str, str], args: list[str], says: str) -> None:
    done = grn(*args, env=local)
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith(says), line
    assert "Traceback" not in done.stderr and "Input should be" not in line
    if args[-1] == "abc":  # the non-numeric id: one line, nothing quoted
        assert one_line_error(done.stderr) == says


def test_nothing_to_search_is_a_one_line_failure(
    local: dict[str, str], scenes: list[str], tmp_path: Path
) -> None:
    done = grn("search", "--scene", scenes[0], env={**local, "GRN_MODEL_PATH": str(tmp_path)})
    assert done.returncode == 1
    assert one_line_error(done.stderr).startswith("error: nothing to search: ")


def test_read_commands_answer_json(local: dict[str, str], scenes: list[str]) -> None:
    def answer(*args: str, code: int = 0) -> object:
        done = grn(*args, env=local)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        return json.loads(done.stdout)

    status = answer("status", "--json")
    assert isinstance(status, dict) and status["stale"] == []
    assert status["scenes"]["sql"] == status["scenes"]["indexed"] == len(scenes)

    hits = answer("search", "--scene", scenes[5], "--k", "3", "--json")
    assert isinstance(hits, dict) and hits["query_id"] == scenes[5]
    assert len(hits["hits"]) == 3 and hits["model_version"] == status["model"]["version"]
    assert answer("search", "--scene", scenes[5], "--k", "3", "--format", "json") == hits

    by_labels = answer("search", "--labels-all", "airplane", "--k", "2", "--json")
    assert isinstance(by_labels, dict)
    assert all("airplane" in hit["labels"] for hit in by_labels["hits"])

    models = answer("models", "--json")
    assert isinstance(models, dict)
    assert [m["version"] for m in models["models"] if m["served"]] == [status["model"]["version"]]

    drift = answer("reconcile", "--json")
    assert isinstance(drift, dict) and drift["clean"] and drift["drift"] == []

    schema = answer("db", "current", "--json")
    assert isinstance(schema, dict) and schema["current"] is True
    assert schema["revision"] == status["schema"]["revision"]


def test_classify_answers_a_table_or_json(local: dict[str, str], ucm_root: Path) -> None:
    images = sorted((ucm_root / "images" / "airplane").iterdir())[:2]
    table = grn("classify", *map(str, images), env=local)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["file", "predicted"]
    assert [row.split()[0] for row in rows] == [image.name for image in images]
    as_json = grn("classify", *map(str, images), "--json", env=local)
    assert as_json.returncode == 0, as_json.stderr
    assert [r["filename"] for r in json.loads(as_json.stdout)] == [i.name for i in images]
    missing = grn("classify", str(ucm_root / "no-such.jpg"), env=local)
    assert missing.returncode == 1 and "no-such.jpg" in one_line_error(missing.stderr)


def test_models_is_a_table_under_a_header(local: dict[str, str]) -> None:
    done = grn("models", env=local)
    assert done.returncode == 0, done.stderr
    header, served = done.stdout.splitlines()
    assert header.split() == ["served", "version", "knn_sample_f1", "map", "served_at"]
    assert served.split()[0] == "*" and served.split()[1].startswith("grn-")


def test_stale_is_a_failure_and_still_answers_json(local: dict[str, str], tmp_path: Path) -> None:
    stale = {**local, "GRN_INDEX_ROOT": str(tmp_path / "no-index")}
    done = grn("status", "--json", env=stale)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["index"]["version"] is None and report["stale"]
    drift = grn("reconcile", "--json", env=stale)
    assert drift.returncode == 1 and json.loads(drift.stdout)["clean"] is False
