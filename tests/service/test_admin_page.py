"""The admin page in a real headless browser (Debian's chromium driven by Playwright): a
person enters the key, drops images with labels, corrects one, removes it, runs a reindex
job and imports a STAC catalog, checking after each step what the page and the API then
show."""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pages import DESKTOP, PHONE
from servers import (
    CHROMIUM,
    REPO,
    LiveServer,
    Served,
    copy_served,
    prepared_database,
    server_env,
)
from stac_catalog import BAD_ITEMS, write_test_catalog

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
    page = browser.new_page(viewport=DESKTOP)
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


def make_run_settings(ucm_root: Path, tmp_path: Path) -> dict[str, str]:
    """The GRN_ settings `make run UCM=...` serves with: the Makefile as typed, its
    preparation skipped and a stand-in `grn` that prints the environment it is given."""
    stand_in = tmp_path / "grn"
    stand_in.write_text("#!/bin/sh\nenv\n")
    stand_in.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRN_")}
    typed = ["make", "-s", "-o", "serve-prepare", "run", f"UCM={ucm_root}", f"GRN={stand_in}"]
    printed = subprocess.run(typed, cwd=REPO, env=clean, capture_output=True, text=True, check=True)
    pairs = (line.split("=", 1) for line in printed.stdout.splitlines() if line.startswith("GRN_"))
    return dict(pairs)


@pytest.fixture(scope="module")
def make_run_server(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server over the UCM subset with the archive folder `make run` gives it (if any), and
    a key."""
    workdir = tmp_path_factory.mktemp("make-run")
    given = make_run_settings(ucm_root, workdir)
    archive = {key: given[key] for key in ("GRN_ARCHIVE_DIR",) if key in given}
    url = f"sqlite:///{workdir / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    env = server_env(served, url, workdir, GRN_API_KEY=KEY, **archive)
    with LiveServer(env, workdir / "server.log") as server:
        yield server


def test_make_run_serves_the_archive_it_imports(ucm_root: Path, tmp_path: Path) -> None:
    settings = make_run_settings(ucm_root, tmp_path)
    assert Path(settings["GRN_ARCHIVE_DIR"]) == ucm_root.resolve()


def test_write_buttons_wait_for_a_key(
    make_run_server: LiveServer, browser: Any, ucm_root: Path, ucm_subset: Path
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{make_run_server.url}/admin")
    expect(page.locator("#scenes tbody tr")).to_have_count(20)
    writes = page.locator(
        "#add, #job-reindex, #job-import, #job-train, #job-rollback, #scenes button"
    )
    assert writes.count() == 45  # add, four jobs, Correct and Remove on each of 20 rows
    for number in range(writes.count()):
        expect(writes.nth(number)).to_be_disabled()
    expect(page.locator("#key-note")).to_be_visible()

    page.fill("#api-key", KEY)
    page.click("#key-form button")
    expect(page.locator("#key-note")).to_be_hidden()
    for number in range(writes.count()):
        if writes.nth(number).get_attribute("id") != "add":  # it waits for images too
            expect(writes.nth(number)).to_be_enabled()
    expect(page.locator("#add")).to_be_disabled()
    page.set_input_files("#files", str(new_images(ucm_root, ucm_subset, 1)[0]))
    expect(page.locator("#add")).to_be_enabled()
    page.close()


def test_import_works_after_make_run(make_run_server: LiveServer, browser: Any) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{make_run_server.url}/admin")
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    page.click("#job-import")
    page.wait_for_selector("#jobs li, #jobs-message:not([hidden])")
    expect(page.locator("#jobs-message")).to_be_hidden()  # not "GRN_ARCHIVE_DIR is not set"
    expect(page.locator("#jobs li").first).to_have_attribute(
        "data-status", "succeeded", timeout=180_000
    )
    assert "import" in page.inner_text("#jobs li")
    with make_run_server.client() as client:
        assert client.get("/readyz").json()["scenes"] == 2100  # the whole UCM archive now
    page.close()


def test_the_admin_page_fits_a_phone(make_run_server: LiveServer, browser: Any) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    page.goto(f"{make_run_server.url}/admin")
    expect(page.locator("#scenes tbody tr")).to_have_count(20)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide on a {PHONE['width']} px phone"
    page.close()


def test_a_stac_catalog_is_imported_from_the_page(
    admin_server: LiveServer, browser: Any, ucm_root: Path, tmp_path: Path
) -> None:
    """The person names a STAC catalog and a most cloud cover: the job imports the clear
    item and the page shows its summary and each item that could not be imported."""
    catalog = write_test_catalog(tmp_path / "stac", ucm_root)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{admin_server.url}/admin")
    page.fill("#api-key", KEY)
    page.click("#key-form button")

    page.fill("#stac-source", str(tmp_path / "no-such-catalog.json"))
    page.click("#job-import-stac")
    page.wait_for_selector("#jobs-message:not([hidden])")
    assert "no-such-catalog.json: no such STAC file here" in page.inner_text("#jobs-message")

    page.fill("#stac-source", str(catalog))
    page.fill("#stac-max-cloud", "10")
    page.click("#job-import-stac")
    page.wait_for_selector("#jobs li[data-status=succeeded]", timeout=120_000)
    shown = page.inner_text("#jobs li")
    assert "import-stac" in shown
    assert "imported 2 scenes (0 already present) from 1 of 6 STAC items" in shown
    assert "2 items left out by max_cloud" in shown  # scene-b (60%), no-crs (not given)
    for name in ("no-geometry", "bad-date", "no-visual"):
        assert f"item {name}: {BAD_ITEMS[name]}" in shown, name
    assert page.locator("#jobs-message").is_hidden()
    with httpx.Client(base_url=admin_server.url, timeout=60) as client:
        june = client.get("/scenes", params={"month": "6"}).json()["scenes"]
    assert sorted(s["image"] for s in june) == ["scene-a_0_0", "scene-a_0_1"]
    assert {s["acquired"] for s in june} == {"2021-06-01T10:00:00Z"}
