"""The admin page in a real headless browser (Debian's chromium driven by Playwright): a
person enters the key, drops images with labels, corrects one, removes it, and runs a
reindex job, checking after each step what the page and the API then show."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import CHROMIUM, LiveServer, Served, copy_served, prepared_database, server_env

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"
)
KEY = "admin-key-0123456789abcdef"


@pytest.fixture
def admin_server(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> Iterator[LiveServer]:
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    mine = copy_served(served, tmp_path / "served")
    env = server_env(mine, url, tmp_path, GRN_API_KEY=KEY, GRN_STORE_DIR=str(tmp_path / "store"))
    with LiveServer(env, tmp_path / "server.log") as server:
        yield server


def new_images(ucm_root: Path, subset: Path, count: int) -> list[Path]:
    with subset.open(newline="") as handle:
        taken = {row["image"] for row in csv.DictReader(handle)}
    found = []
    for path in sorted((ucm_root / "images").rglob("*.*")):
        if path.stem not in taken and path.parent.name == "harbor":
            found.append(path)
        if len(found) == count:
            return found
    raise AssertionError("not enough UCM scenes outside the subset")


def serious_violations(page: Any, axe_script: str) -> list[Any]:
    page.add_script_tag(content=axe_script)
    found = page.evaluate("async () => (await axe.run(document)).violations")
    return [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def test_add_correct_remove_and_run_a_job(
    admin_server: LiveServer, browser: Any, ucm_root: Path, ucm_subset: Path, axe_script: str
) -> None:
    images = new_images(ucm_root, ucm_subset, 2)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.on("dialog", lambda dialog: dialog.accept())  # the removal's confirmation
    page.goto(f"{admin_server.url}/admin")
    page.wait_for_selector("#add-labels input[value=ship]")

    # a wrong key: the page says why nothing was added
    page.fill("#api-key", "not-the-key-at-all")
    page.click("#key-form button")
    page.set_input_files("#files", [str(p) for p in images])
    assert "2 images chosen" in page.inner_text("#chosen")
    page.click("#add")
    page.wait_for_selector("#add-message:not([hidden])")
    assert "not valid" in page.inner_text("#add-message")

    # the right key: both added with the labels ticked, in the folder given
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    page.check("#add-ship")
    page.check("#add-water")
    page.fill("#add-folder", "harbour-survey")
    page.click("#add")
    page.wait_for_function("document.querySelectorAll('#added li').length === 2")
    assert page.inner_text("#added").count("added, searchable now") == 2
    with httpx.Client(base_url=admin_server.url, timeout=60) as client:
        listed = client.get("/scenes", params={"scene": "harbour-survey"}).json()
        assert listed["total"] == 2
        assert all(s["labels"] == ["ship", "water"] for s in listed["scenes"])
        hits = client.post(
            "/search", files={"file": (images[0].name, images[0].read_bytes())}, data={"k": "3"}
        ).json()["hits"]
        assert hits[0]["image"] == listed["scenes"][0]["image"] or hits[0]["score"] > 0.999

    assert not serious_violations(page, axe_script)

    # correct one: the table shows the new labels, and so does the API
    name = images[0].stem
    page.fill("#find-name", name)
    page.wait_for_function(
        f"document.querySelectorAll('#scenes tbody tr').length === 1 && "
        f"document.querySelector('#scenes tbody').innerText.includes('{name}')"
    )
    page.click("#scenes tbody tr button:has-text('Correct')")
    assert not serious_violations(page, axe_script)  # with the dialog open
    page.uncheck("#edit-ship")
    page.check("#edit-buildings")
    page.click("#edit-save")
    page.wait_for_function(
        "document.querySelector('#scenes tbody .scene-labels').innerText === 'buildings, water'"
    )
    scene_id = page.get_attribute("#scenes tbody tr", "data-scene-id")
    with httpx.Client(base_url=admin_server.url, timeout=60) as client:
        assert client.get(f"/scenes/{scene_id}").json()["labels"] == ["buildings", "water"]

    # remove it: gone from the table and the API
    page.click("#scenes tbody tr button:has-text('Remove')")
    page.wait_for_function("document.querySelectorAll('#scenes tbody tr').length === 0")
    with httpx.Client(base_url=admin_server.url, timeout=60) as client:
        assert client.get(f"/scenes/{scene_id}").status_code == 404

    # a reindex job, followed until it succeeds (the embedded worker runs it)
    page.click("#job-reindex")
    page.wait_for_selector("#jobs li[data-status]")
    page.wait_for_selector("#jobs li[data-status=succeeded]", timeout=120_000)
    assert "reindex" in page.inner_text("#jobs li")
    with httpx.Client(base_url=admin_server.url, timeout=60) as client:
        ready = client.get("/readyz").json()
        assert ready["scenes"] == 127  # 126 + 2 added - 1 removed
