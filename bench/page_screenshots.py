"""Screenshots of the web page's states, on a desktop and a 390 x 844 phone, from a running
service (docs/screenshots/ holds the ones taken from `make run`).

    make run &                      # the UCM archive and the head-mode model
    python -m bench.page_screenshots --url http://127.0.0.1:8000 --out docs/screenshots

Needs Debian's chromium and Playwright (the dev extra). States: the empty page, an upload
with its labels and neighbours, the viewer comparing the query with a result, a search by an
archive scene with a label filter, the archive browser, a file that is not an image, more and
less like two results, and a phrase.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

from bench._common import UCM


def save(page, out: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    # palette PNGs: a tenth of the size, still sharp text
    Image.open(path).convert("RGB").quantize(colors=256).save(path, optimize=True)
    print(path)


def settle(page) -> None:  # type: ignore[no-untyped-def]
    """The search answered and the images in view loaded (lazy ones below stay unloaded)."""
    page.wait_for_function("document.querySelector('#results').ariaBusy !== 'true'")
    page.wait_for_load_state("networkidle")


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    upload = args.archive / "images" / "harbor" / "harbor12.jpg"
    notes = args.out / "notes.jpg"
    notes.write_bytes(b"meeting notes, not an image")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for device, viewport in (("desktop", {"width": 1280, "height": 900}),
                                 ("phone", {"width": 390, "height": 844})):  # fmt: skip
            page = browser.new_page(viewport=viewport, is_mobile=device == "phone")
            page.goto(args.url)
            expect(page.locator("#status")).to_contain_text("ready")
            save(page, args.out, f"{device}-1-start")
            page.set_input_files("#file", str(upload))
            expect(page.locator("#results .card").first).to_be_visible()
            settle(page)
            save(page, args.out, f"{device}-2-upload")
            page.locator("#results .card").nth(4).click()
            page.wait_for_function("document.querySelector('#viewer-hit').naturalWidth > 0")
            save(page, args.out, f"{device}-3-viewer")
            page.click("#viewer-search")
            if device == "desktop":
                page.locator("#filters input[value='ship']").check()
            settle(page)
            save(page, args.out, f"{device}-4-by-scene")
            if device == "desktop":
                page.locator("#filters input[value='ship']").uncheck()
                settle(page)
            page.click("#browse")
            page.fill("#archive-name", "airplane")
            page.wait_for_function("document.querySelectorAll('#archive .card').length > 0")
            settle(page)
            save(page, args.out, f"{device}-5-archive")
            page.set_input_files("#file", str(notes))
            expect(page.locator("#message")).to_be_visible()
            save(page, args.out, f"{device}-6-bad-file")
            page.set_input_files("#file", str(upload))
            settle(page)
            page.locator("#results .card").nth(2).click()
            page.click("#viewer-more")
            settle(page)
            page.locator("#results .card").nth(6).click()
            page.click("#viewer-less")
            settle(page)
            save(page, args.out, f"{device}-7-feedback")
            page.fill("#text", "storage tanks, no trees, a volcano")
            page.keyboard.press("Enter")
            expect(page.locator("#understood")).to_be_visible(timeout=90_000)
            settle(page)
            save(page, args.out, f"{device}-8-text")
            page.close()
        browser.close()
    notes.unlink()


if __name__ == "__main__":
    main()
