"""The render cache cannot fill the disk (issue 42, item 1): preview sizes snap to a few steps,
and thumbnails and previews stay within the cache's budget of bytes and files, the least
recently used going first; its size shows in /metrics and `grn status`. Through a real server
on real UCM scenes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from commands import grn
from PIL import Image
from servers import LiveServer, Served, live_server

from model.archive import load_archive, scene_id
from service.storage.db import Scene
from service.storage.render_cache import RenderCache, usage
from service.usecases.thumbnails import PREVIEW_SIZES, preview_size

BUDGET_BYTES = 120_000
"""About five full-size UCM previews (20-25 KB each) or twenty thumbnails."""
BUDGET_FILES = 40


def on_disk(root: Path) -> tuple[int, int]:
    """(bytes, files) under `root`, counted here rather than by the cache."""
    files = [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


@pytest.fixture(scope="module")
def bounded(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server whose render cache has a small budget."""
    workdir = tmp_path_factory.mktemp("render-cache")
    with live_server(
        "sqlite", served, ucm_root, ucm_subset, workdir,
        GRN_RENDER_CACHE_MAX_BYTES=str(BUDGET_BYTES),
        GRN_RENDER_CACHE_MAX_FILES=str(BUDGET_FILES),
    ) as (server, _):  # fmt: skip
        yield server


def test_preview_sizes_snap_up_to_a_step_or_full_resolution() -> None:
    large = Scene(width=3000, height=2000)
    assert [preview_size(n, large) for n in (1, 128, 129, 256, 600, 1024)] == [
        128, 128, 256, 256, 1024, 1024,
    ]  # fmt: skip
    assert preview_size(1025, large) is None and preview_size(None, large) is None
    assert {preview_size(n, large) for n in range(1, 9000)} == {*PREVIEW_SIZES, None}
    small = Scene(width=256, height=256)  # no step past the scene's own size
    assert {preview_size(n, small) for n in range(1, 9000)} == {128, None}


def test_a_thousand_distinct_sizes_write_two_files(
    bounded: LiveServer, ucm_subset: Path, ucm_root: Path
) -> None:
    archive = load_archive(ucm_root, ucm_subset)
    qid = scene_id(archive.scenes[3].name)
    previews = Path(bounded.env["GRN_THUMBNAIL_DIR"]) / "previews"
    before = set(previews.glob("*")) if previews.exists() else set()
    sides = set()
    with bounded.client() as client:
        for size in range(1, 1001):
            answer = client.get(f"/scenes/{qid}/preview", params={"size": size})
            assert answer.status_code == 200, answer.text
            side = max(Image.open(io.BytesIO(answer.content)).size)
            snapped = answer.headers["x-preview-size"]
            assert side == (256 if snapped == "full" else int(snapped)) and side >= min(size, 256)
            sides.add(side)
        assert sides == {128, 256}  # a 256 px scene: the 128 step, then its full size
        # a size outside any step is snapped, not refused; a size below 1 is a 422
        assert client.get(f"/scenes/{qid}/preview", params={"size": 50_000}).status_code == 200
        assert client.get(f"/scenes/{qid}/preview", params={"size": 0}).status_code == 422
    written = set(previews.glob("*")) - before
    assert len(written) == 2, written


def test_many_scenes_stay_within_the_budget_least_recently_used_first(
    bounded: LiveServer, ucm_subset: Path, ucm_root: Path
) -> None:
    archive = load_archive(ucm_root, ucm_subset)
    ids = [scene_id(s.name) for s in archive.scenes]
    root = Path(bounded.env["GRN_THUMBNAIL_DIR"])
    kept, dropped = ids[0], ids[1]
    with bounded.client() as client:
        first = {i: client.get(f"/scenes/{i}/thumbnail").content for i in (kept, dropped)}
        for n, other in enumerate(ids[2:]):
            for path in (f"/scenes/{other}/preview", f"/scenes/{other}/thumbnail"):
                assert client.get(path, params={"size": 64 + n}).status_code == 200
            if n % 2 == 0:  # used again and again: never the least recently used
                assert client.get(f"/scenes/{kept}/thumbnail").content == first[kept]
            held_bytes, held_files = on_disk(root)
            assert held_bytes <= BUDGET_BYTES and held_files <= BUDGET_FILES
        metrics = client.get("/metrics").text
        checksums = {s.id: s.checksum for s in _scenes(bounded, [kept, dropped])}
        thumbnails = {p.name.split("-")[0] for p in root.glob("*.jpg")}
        assert checksums[kept] in thumbnails and checksums[dropped] not in thumbnails
        # an evicted thumbnail is rendered again, the same
        assert client.get(f"/scenes/{dropped}/thumbnail").content == first[dropped]
    held_bytes, held_files = on_disk(root)
    assert held_bytes <= BUDGET_BYTES and held_files <= BUDGET_FILES
    # 124 scenes' previews and thumbnails were made: the budget, not the archive, bounds them
    assert held_bytes > BUDGET_BYTES * 0.5
    gauges = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("grn_render_cache_")
    }
    assert gauges["grn_render_cache_files"] <= BUDGET_FILES
    assert 0.5 * BUDGET_BYTES < gauges["grn_render_cache_bytes"] <= BUDGET_BYTES
    status = grn("status", "--json", env=bounded.env)
    cache = json.loads(status.stdout)["render_cache"]
    assert (cache["bytes"], cache["files"]) == on_disk(root)
    assert (cache["max_bytes"], cache["max_files"]) == (BUDGET_BYTES, BUDGET_FILES)


def _scenes(server: LiveServer, ids: list[int]) -> list[Scene]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from service.storage.db import make_engine

    engine = make_engine(server.env["GRN_DATABASE_URL"])
    with Session(engine) as session:
        found = list(session.scalars(select(Scene).where(Scene.id.in_(ids))))
    engine.dispose()
    return found


def test_the_cache_evicts_least_recently_used_and_shares_a_folder(tmp_path: Path) -> None:
    one = RenderCache(tmp_path, max_bytes=10_000, max_files=100)
    for n in range(8):
        one.put(f"a{n}.jpg", bytes(1000))
    assert one.get("a0.jpg") == bytes(1000)  # a hit makes a0 the most recently used
    for n in range(8, 12):
        one.put(f"a{n}.jpg", bytes(1000))
    names = {p.name for p in tmp_path.iterdir()}
    assert "a0.jpg" in names and "a1.jpg" not in names and "a11.jpg" in names
    assert usage(tmp_path).bytes <= 10_000 and one.evicted >= 2
    assert (one.counted("bytes"), one.counted("files")) == (
        usage(tmp_path).bytes, usage(tmp_path).files,
    )  # fmt: skip
    # two processes' caches on one folder: each counts again after a tenth of the budget
    two = RenderCache(tmp_path, max_bytes=10_000, max_files=100)
    for n in range(40):
        (one if n % 2 else two).put(f"b{n}.jpg", bytes(500))
        assert usage(tmp_path).bytes <= 10_000 * 1.1 + 500
    nothing = RenderCache(tmp_path / "off", max_bytes=0, max_files=0)
    nothing.put("c.jpg", b"x")
    assert nothing.get("c.jpg") is None and not (tmp_path / "off").exists()
