"""The web page in a real browser (Debian's Chromium through chromedriver and selenium),
against a live synthetic run: the video plays, the boxes lie on the scene's ground truth,
the lists and numbers update, a stopped source shows as down, and a class name holding
markup and script is shown as text, with nothing run.

STREAMER_WEB_SCREENSHOT=docs/web.png makes the first test save the page there (README).
"""

from __future__ import annotations

import os
import shutil
import time

import cv2
import numpy as np
import pytest
from conftest import ROOT, need_tool

from streamer.outputs.overlay import class_colour
from streamer.sources.synthetic import SyntheticScene
from streamer.standin.server import ApiServer
from support.running import wait_until
from support.web import Served, SwitchableSource

pytestmark = pytest.mark.system

HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b id="injected">b</b>'
PAGE_LOAD_TIMEOUT_S = 5  # the MJPEG <img> never finishes loading: the page is judged by what it shows


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = need_tool("chromium"), need_tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    yield driver
    driver.quit()


def open_page(driver, url: str) -> None:
    from selenium.common.exceptions import TimeoutException

    try:
        driver.get(url)
    except TimeoutException:
        pass  # the stream keeps the load event from ever firing


def text(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def cells(driver, body_id: str) -> list[list[str]]:
    return driver.execute_script(
        f"return [...document.getElementById('{body_id}').rows].map(r => [...r.cells].map(c => c.textContent))"
    )


def video_shot(driver) -> np.ndarray:
    from selenium.webdriver.common.by import By

    png = driver.find_element(By.ID, "video").screenshot_as_png
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def edge_hits(shot: np.ndarray, box: tuple[int, int, int, int], colour, scale: float, min_y: int) -> float:
    """Share of points along the left, right and bottom edges of ``box`` (scene pixels) with
    the class colour within a few pixels in the screenshot (the top edge may be under the
    status band or the label)."""
    x0, y0, x1, y1 = (round(v * scale) for v in box)
    points = [(x, y1) for x in np.linspace(x0 + 10, x1 - 10, 12)]
    points += [(x, y) for x in (x0, x1) for y in np.linspace(max(y0, min_y) + 10, y1 - 10, 8)]
    hits = 0
    for x, y in points:
        x, y = int(x), int(y)
        patch = shot[max(0, y - 6) : y + 7, max(0, x - 6) : x + 7].reshape(-1, 3).astype(int)
        # A wide colour tolerance: JPEG halves the chroma, so a thin line blends with its neighbours.
        hits += bool(patch.size and (np.linalg.norm(patch - np.array(colour), axis=1) < 100).any())
    return hits / len(points)


def test_page_shows_live_video_boxes_detections_status_and_a_stopped_source(api_server, browser):
    source = SwitchableSource(1280, 720, 30.0, moving=False)
    s = Served(api_server.url, source=source)
    try:
        open_page(browser, s.url + "/")
        assert wait_until(lambda: browser.execute_script("return document.getElementById('video').naturalWidth"), 15)
        assert wait_until(lambda: len(cells(browser, "detections")) == 3, 15)
        first, shots = video_shot(browser), []

        def a_new_frame() -> bool:
            shots.append(video_shot(browser))
            return not np.array_equal(first, shots[-1])

        wait_until(a_new_frame, 10, "the video to show another frame")  # frames that change
        shot = shots[-1]
        assert shot.std() > 10
        scale = shot.shape[1] / 1280
        for name, box in SyntheticScene(1280, 720, 30.0, moving=False).boxes(0):
            assert edge_hits(shot, box, class_colour(name), scale, 60) >= 0.8, name
            moved = (box[0] + 60, box[1] + 60, box[2] + 60, box[3] + 60)  # the check can fail
            assert edge_hits(shot, moved, class_colour(name), scale, 60) < 0.5, name
        assert sorted(row[0] for row in cells(browser, "detections")) == ["blue-box", "green-circle", "red-square"]
        assert sorted(cells(browser, "classes")) == [["blue-box", "1"], ["green-circle", "1"], ["red-square", "1"]]
        uptime, frames = text(browser, "uptime"), text(browser, "frame")
        assert float(text(browser, "capture-fps").split()[0]) > 10
        assert wait_until(lambda: text(browser, "uptime") != uptime and text(browser, "frame") != frames, 10)
        assert text(browser, "source-state") == "open" and text(browser, "alert") == ""
        assert text(browser, "name") == "synthetic" and browser.title == "synthetic - streamer"  # the camera's name
        assert text(browser, "stale") == ""
        assert browser.execute_script("return fetch('favicon.ico').then(r => r.status)") == 200
        if os.environ.get("STREAMER_WEB_SCREENSHOT"):
            browser.save_screenshot(str(ROOT / os.environ["STREAMER_WEB_SCREENSHOT"]))
        source.down.set()
        assert wait_until(lambda: text(browser, "source-state") == "reconnecting", 15)
        assert "Source down: reconnecting" in text(browser, "alert")
        # the detections still listed are the last result's: marked stale, with their age
        assert text(browser, "stale").startswith("stale: ")
        assert browser.execute_script("return document.getElementById('detections-table').className") == "stale"
        assert browser.execute_script("return getComputedStyle(document.getElementById('alert')).display") == "block"
        health = s.client.get("/healthz")
        assert health.status_code == 503 and "source reconnecting" in health.json()["reasons"]
    finally:
        s.close()


def test_a_class_name_holding_markup_is_shown_as_text_and_nothing_runs(browser):
    with ApiServer("127.0.0.1", 0, class_names={"red-square": HOSTILE}) as server:
        s = Served(server.url)
        try:
            open_page(browser, s.url + "/")
            assert wait_until(lambda: HOSTILE in [row[0] for row in cells(browser, "detections")], 15)
            assert HOSTILE in [row[0] for row in cells(browser, "classes")]
            time.sleep(1.0)  # time for an onerror to fire, had the markup got in
            assert browser.execute_script("return window.__pwned") is None
            assert browser.execute_script("return document.getElementById('injected')") is None
            assert browser.execute_script("return document.scripts.length") == 1
            assert browser.execute_script("return document.images.length") == 1  # the video only
        finally:
            s.close()


def test_chromium_is_the_one_the_install_script_names():
    script = (ROOT / "scripts" / "install-system-deps.sh").read_text()
    assert "chromium chromium-driver" in script
    assert shutil.which("chromium") is None or shutil.which("chromedriver") is not None
