"""The web page in a real headless browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import LiveServer, Served, prepared_database, server_env

from model.archive import load_archive

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page_server(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("web")
    url = f"sqlite:///{workdir / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    with LiveServer(server_env(served, url, workdir), workdir / "server.log") as server:
        yield server


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_upload_shows_labels_and_thumbnails(
    page_server: LiveServer, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    scene = load_archive(ucm_root, ucm_subset).scenes[30]
    want = httpx.post(
        f"{page_server.url}/classify", files={"file": (scene.path.name, scene.path.read_bytes())}
    ).json()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(page_server.url)
        expect(page.locator("#status")).to_contain_text("ready: 126 scenes")
        expect(page.locator("#filters input")).to_have_count(17)

        page.set_input_files("#file", str(scene.path))
        expect(page.locator("#labels li")).to_have_count(17)
        shown = page.locator("#labels li.present > span:first-child").all_inner_texts()
        assert sorted(shown) == sorted(want["predicted"])
        cards = page.locator("#results .card")
        expect(cards).to_have_count(20)
        expect(page.locator("#page-info")).to_have_text("1–20 of 20")
        page.wait_for_function(
            "[...document.querySelectorAll('#results .card img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        assert "score" in cards.first.inner_text()
        page.screenshot(path=str(tmp_path / "web-page.png"), full_page=True)
        assert (tmp_path / "web-page.png").stat().st_size > 10_000

        # a label filter narrows the results to scenes that carry it
        page.locator("#filters input[value='buildings']").check()
        page.wait_for_function(
            "[...document.querySelectorAll('#results .card .tags')]"
            ".every(t => t.textContent.split(', ').includes('buildings'))"
        )

        # clicking a result searches by that archive scene
        first_name = cards.first.locator(".name").inner_text()
        cards.first.click()
        expect(page.locator("#preview-caption")).to_contain_text(f"archive scene {first_name}")
        expect(cards).not_to_have_count(0)

        # a broken file gets a clear message, not a crash
        broken = tmp_path / "broken.jpg"
        broken.write_bytes(b"this is not an image")
        page.set_input_files("#file", str(broken))
        expect(page.locator("#message")).to_contain_text("broken.jpg")
        expect(page.locator("#message")).to_contain_text("cannot decode image")
        browser.close()
