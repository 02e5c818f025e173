"""`radfusion serve` end to end in a real headless Chromium: load an image, draw the ROI with
the mouse, fill the form, score, and check the page against `radfusion predict --json`."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import roifile
from skimage.measure import find_contours
from typer.testing import CliRunner

from radfusion.cli import app as cli_app
from radfusion.data.readers import read_mask
from radfusion.predict import payload_records
from radfusion.synth import generate_cohort

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver; .ci/run installs them)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run):
    """`radfusion serve` as a user starts it, on a free local port."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "radfusion", "serve", str(tiny_run / "bundle"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"radfusion serve did not start: {proc.stdout.read().decode()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,2300",
        "--force-device-scale-factor=1",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def _outline(mask_path: Path, n: int = 14) -> np.ndarray:
    """A polygon of n points a clinician might click around the lesion (x, y)."""
    mask = np.asarray(read_mask(mask_path), dtype=float)
    contour = max(find_contours(np.pad(mask, 1), 0.5), key=len) - 1  # (row, col)
    idx = np.linspace(0, len(contour), n, endpoint=False).astype(int)
    return contour[idx][:, ::-1] + 0.5


@needs_browser
def test_clinician_scores_a_drawn_lesion_like_the_cli(server, browser, tiny_run, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    manifest = generate_cohort(
        tmp_path / "new", n=4, seed=11, prevalence=0.5, image_shape=(240, 320)
    )
    row = pd.read_csv(manifest).iloc[0]
    image = manifest.parent / row["image"]
    wait = WebDriverWait(browser, 120)
    js = browser.execute_script

    browser.get(server + "/")
    picker = browser.find_element(By.ID, "image-file")
    js("arguments[0].hidden = false", picker)  # the picker sits behind a styled label
    picker.send_keys(str(image))
    wait.until(lambda d: js("return window.radfusion.state.width") == 320)
    canvas = browser.find_element(By.ID, "canvas")
    wait.until(lambda _: canvas.is_displayed() and canvas.size["width"] > 320)

    # draw: click the outline's points with the mouse, close it on the first point
    rect = js("return arguments[0].getBoundingClientRect().toJSON()", canvas)
    scale = rect["width"] / 320

    def click(x: float, y: float) -> None:
        dx, dy = x * scale - rect["width"] / 2, y * scale - rect["height"] / 2
        ActionChains(browser).move_to_element_with_offset(
            canvas, round(dx), round(dy)
        ).click().perform()

    poly = _outline(manifest.parent / row["mask"])
    for x, y in poly:
        click(x, y)
    click(5, 5)  # a slip of the hand ...
    browser.find_element(By.ID, "undo").click()  # ... undone
    assert js("return window.radfusion.state.points.length") == len(poly)
    click(*poly[0])
    wait.until(lambda _: js("return window.radfusion.state.closed"))
    drawn = np.asarray(js("return window.radfusion.state.points"))
    assert np.abs(drawn - poly).max() <= 1.0  # the page recorded where the mouse clicked
    wait.until(lambda d: "ROI area" in d.find_element(By.ID, "roi-status").text)

    # the clinical form: two values given, the rest left blank and flagged
    browser.find_element(By.ID, "c-age").send_keys("58")
    Select(browser.find_element(By.ID, "c-sex")).select_by_value("F")
    flag = browser.find_element(By.CSS_SELECTOR, '.field[data-name="calcium"] .flag')
    assert flag.is_displayed() and "not given" in flag.text

    browser.find_element(By.ID, "score").click()
    wait.until(lambda _: js("return document.body.dataset.scored") == "1")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gradcam img")) == 2)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#contrib .crow")) > 0)
    rows = browser.find_elements(By.CSS_SELECTOR, "#scores tbody tr")
    page = {r.get_attribute("data-model"): float(r.get_attribute("data-probability")) for r in rows}
    chosen = [r.get_attribute("data-model") for r in rows if "chosen" in r.get_attribute("class")]
    calls = {
        r.get_attribute("data-model"): r.find_element(By.CSS_SELECTOR, ".call").text for r in rows
    }
    shot = tmp_path / "radfusion_serve.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    # the printed result (print stylesheet) fits on one page
    pdf = base64.b64decode(browser.print_page())
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1

    # the same image and ROI through the command line
    roi = tmp_path / "drawn.roi"
    roi.write_bytes(roifile.ImagejRoi.frompoints(drawn).tobytes())
    res = CliRunner().invoke(
        cli_app,
        [
            *("predict", str(tiny_run / "bundle"), "--image", str(image), "--mask", str(roi)),
            *("--clinical", "age=58", "--clinical", "sex=F", "--json"),
        ],
    )
    assert res.exit_code == 0, res.output
    cli = {r["model"]: r for r in payload_records(json.loads(res.output))}
    assert set(page) == set(cli)
    for model, p in page.items():
        assert abs(p - cli[model]["probability"]) <= 1e-6, model
        assert calls[model] == ("APT/PC" if cli[model]["predicted_class"] else "PA")
    assert sorted(chosen) == sorted(m for m, r in cli.items() if r["selected"])
    area = int(read_mask(roi, shape=(240, 320)).sum())
    assert f"ROI area: {area:,} px" in browser.find_element(By.ID, "roi-status").text


@needs_browser
def test_batch_page_scores_a_zip(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    manifest = generate_cohort(tmp_path / "batch", n=4, seed=12, prevalence=0.5)
    table = pd.read_csv(manifest).drop(columns=["label", "mask_reader2"])
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("manifest.csv", table.to_csv(index=False))
        for rel in [*table["image"], *table["mask"]]:
            zf.write(manifest.parent / rel, rel)
    browser.get(server + "/batch")
    browser.find_element(By.ID, "archive").send_keys(str(archive))
    browser.find_element(By.CSS_SELECTOR, "#batch-form button").click()
    WebDriverWait(browser, 300).until(
        lambda d: (
            d.find_element(By.ID, "batch-result").is_displayed()
            or d.find_element(By.ID, "error").is_displayed()
        )
    )
    assert not browser.find_element(By.ID, "error").is_displayed(), browser.find_element(
        By.ID, "error"
    ).text
    n_models = len(httpx.get(server + "/api/bundle").json()["models"])
    rows = browser.find_elements(By.CSS_SELECTOR, "#batch-table tbody tr")
    assert len(rows) == 4 * n_models
    assert "4 case(s)" in browser.find_element(By.ID, "batch-summary").text
    assert browser.find_element(By.ID, "download").get_attribute("href").startswith("blob:")
