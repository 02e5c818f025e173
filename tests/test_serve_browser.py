"""`radfusion serve` end to end in a real headless Chromium: load an image, draw the ROI with
the mouse or load a mask / ImageJ .roi through the visible file controls (by keyboard), fill
the form, score, and check the page against `radfusion predict --json`; the page at 390 px
(no horizontal overflow, Fit shows the whole image), axe-core's accessibility rules and one
printed page on A4 and Letter."""

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
    assert picker.is_displayed()  # a real, visible file control
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
        r.get_attribute("data-model"): r.find_element(By.CSS_SELECTOR, ".call").get_attribute(
            "textContent"
        )
        for r in rows
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


# --- uploads by keyboard, the phone layout, accessibility, print --------------------------
def _cli_scores(tiny_run: Path, image: Path, mask: Path) -> dict[str, dict]:
    args = ["predict", str(tiny_run / "bundle"), "--image", str(image), "--mask", str(mask)]
    res = CliRunner().invoke(cli_app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return {r["model"]: r for r in payload_records(json.loads(res.stdout))}


def _page_scores(browser) -> dict[str, dict]:
    from selenium.webdriver.common.by import By

    out = {}
    for r in browser.find_elements(By.CSS_SELECTOR, "#scores tbody tr"):
        cells = r.find_elements(By.CSS_SELECTOR, "td")
        out[r.get_attribute("data-model")] = {
            "probability": float(r.get_attribute("data-probability")),
            "p_text": cells[2].get_attribute("textContent"),
            "t_text": cells[3].get_attribute("textContent"),
            "call": cells[4].get_attribute("textContent"),
        }
    return out


def _assert_like_the_cli(browser, cli: dict[str, dict], info: dict) -> None:
    from selenium.webdriver.common.by import By

    page = _page_scores(browser)
    assert set(page) == set(cli)
    pos, neg = info["class_names"][1], info["class_names"][0]
    for model, row in page.items():
        assert abs(row["probability"] - cli[model]["probability"]) <= 1e-6, model
        assert row["call"] == (pos if cli[model]["predicted_class"] else neg), model
        # the digits shown never contradict the call
        shown_p, shown_t = float(row["p_text"]), float(row["t_text"])
        assert (shown_p >= shown_t) == bool(cli[model]["predicted_class"]), (model, row)
    # one headline: the bundle's headline model, with its own call; none when every
    # chosen model is flagged (the tiny study's 8 validation cases flag them all)
    head = info["headline"]["model"]
    box = browser.find_element(By.ID, "headline")
    if head is None:
        assert "No single answer" in box.text and not box.find_elements(By.ID, "headline-call")
        return
    assert box.get_attribute("data-model") == head
    call = browser.find_element(By.ID, "headline-call").text
    assert call == (pos if cli[head]["predicted_class"] else neg)


def _score_and_wait(browser, wait) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    js = browser.execute_script
    js("delete document.body.dataset.scored")
    score = browser.find_element(By.ID, "score")
    wait.until(lambda _: score.is_enabled())
    score.send_keys(Keys.ENTER)  # a keyboard press on the focused button
    wait.until(lambda _: js("return document.body.dataset.scored") == "1")


def _tab_order(browser, steps: int = 40) -> list[str]:
    """Ids (or tag names) of the elements Tab visits from the top of the page, each with
    whether its focus ring is visible."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    js = browser.execute_script
    js("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    seen = []
    for _ in range(steps):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        el = js(
            "const e = document.activeElement, s = getComputedStyle(e);"
            "return [e.id || e.tagName, s.outlineStyle, parseFloat(s.outlineWidth)]"
        )
        seen.append(el)
    return seen


@needs_browser
def test_keyboard_user_loads_image_mask_and_roi_and_scores_like_the_cli(
    server, browser, tiny_run, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    manifest = generate_cohort(tmp_path / "new", n=2, seed=21, prevalence=0.5)
    row = pd.read_csv(manifest).iloc[0]
    image, mask = manifest.parent / row["image"], manifest.parent / row["mask"]
    shape = read_mask(mask).shape
    info = httpx.get(server + "/api/bundle").json()
    wait = WebDriverWait(browser, 180)
    js = browser.execute_script

    browser.get(server + "/")
    order = _tab_order(browser, 12)
    assert "image-file" in [o[0] for o in order]  # the image picker is reached by Tab ...
    for name, style, width in order:  # ... and every control shows where the focus is
        if name == "BODY":  # past the last control, focus leaves the page
            continue
        assert style != "none" and width >= 2, (name, style, width)
    browser.find_element(By.ID, "image-file").send_keys(str(image))  # what the dialog does
    wait.until(lambda _: js("return window.radfusion.state.width") == shape[1])
    ids = [o[0] for o in _tab_order(browser, 40)]
    for control in ("zoom-fit", "mask-file", "image-file-2", "c-age", "c-sex"):
        assert control in ids, (control, ids)

    # a mask image through the visible "Mask or ImageJ .roi" control
    picker = browser.find_element(By.ID, "mask-file")
    assert picker.is_displayed()
    picker.send_keys(str(mask))
    area = int(read_mask(mask).sum())
    wait.until(lambda d: f"ROI area: {area:,} px" in d.find_element(By.ID, "roi-status").text)
    assert not browser.find_element(By.ID, "error").is_displayed()
    _score_and_wait(browser, wait)
    _assert_like_the_cli(browser, _cli_scores(tiny_run, image, mask), info)

    # an ImageJ .roi through the same control
    contour = _outline(mask, n=20)
    roi = tmp_path / "lesion.roi"
    roi.write_bytes(roifile.ImagejRoi.frompoints(contour).tobytes())
    picker.send_keys(str(roi))
    area = int(read_mask(roi, shape=shape).sum())
    wait.until(lambda d: f"ROI area: {area:,} px" in d.find_element(By.ID, "roi-status").text)
    _score_and_wait(browser, wait)
    _assert_like_the_cli(browser, _cli_scores(tiny_run, image, roi), info)


def _axe_violations(browser) -> list[str]:
    """Serious and critical axe-core violations of the page as it is now (axe is served by
    the app from its vendored copy, never fetched from the internet)."""
    browser.set_script_timeout(120)
    result = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        const run = () => axe.run(document, {resultTypes: ["violations"]})
          .then((r) => done(r.violations.map((v) => [v.id, v.impact, v.help,
                 v.nodes.slice(0, 3).map((n) => n.target.join(" "))])))
          .catch((e) => done([["axe-error", "critical", String(e), []]]));
        if (window.axe) { run(); return; }
        const s = document.createElement("script");
        s.src = "/static/vendor/axe.min.js"; s.onload = run;
        s.onerror = () => done([["axe-missing", "critical", "axe.min.js not served", []]]);
        document.head.append(s);"""
    )
    return [v for v in result if v[1] in ("serious", "critical")]


def _overflow(browser) -> tuple[int, int]:
    return tuple(
        browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    )


def _big_case(tmp_path: Path) -> tuple[Path, Path]:
    """A 1400 x 900 image and its mask (a synthetic case, enlarged)."""
    from PIL import Image

    manifest = generate_cohort(tmp_path / "big", n=2, seed=22, prevalence=0.5)
    row = pd.read_csv(manifest).iloc[0]
    image, mask = tmp_path / "big.png", tmp_path / "big_mask.png"
    Image.open(manifest.parent / row["image"]).resize((1400, 900)).save(image)
    Image.open(manifest.parent / row["mask"]).resize((1400, 900), Image.NEAREST).save(mask)
    return image, mask


@needs_browser
def test_phone_layout_accessibility_and_one_printed_page(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.print_page_options import PrintOptions
    from selenium.webdriver.support.ui import WebDriverWait

    image, mask = _big_case(tmp_path)
    wait = WebDriverWait(browser, 180)
    js = browser.execute_script
    browser.get(server + "/batch")
    assert _axe_violations(browser) == []

    def phone(on: bool) -> None:
        if on:
            browser.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
            )
        else:
            browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    phone(True)
    browser.get(server + "/")
    assert _overflow(browser)[1] == 390
    steps = {"start": _overflow(browser)}
    browser.find_element(By.ID, "image-file").send_keys(str(image))
    wait.until(lambda _: js("return window.radfusion.state.width") == 1400)
    steps["image"] = _overflow(browser)

    def fits() -> bool:
        # Fit shows the whole image: the canvas fits the viewer in width and height
        return js(
            "const c = document.getElementById('canvas');"
            "const w = document.getElementById('canvas-wrap');"
            "return c.width <= w.clientWidth && c.height <= w.clientHeight + 1"
        )

    browser.find_element(By.ID, "zoom-in").click()
    browser.find_element(By.ID, "zoom-fit").click()
    assert fits()
    browser.find_element(By.ID, "mask-file").send_keys(str(mask))
    wait.until(lambda d: "ROI area" in d.find_element(By.ID, "roi-status").text)
    steps["mask"] = _overflow(browser)
    browser.find_element(By.ID, "c-ipth").send_keys("500")  # outside the training range
    _score_and_wait(browser, wait)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gradcam img")) == 2)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#contrib .crow")) > 0)
    steps["scored"] = _overflow(browser)
    browser.find_element(By.CSS_SELECTOR, "#all-models summary").click()
    steps["all models"] = _overflow(browser)
    for step, (scroll, inner) in steps.items():
        assert scroll <= inner, f"{step}: the page is {scroll} px wide in a {inner} px window"
    # the out-of-range value travels into the result's warnings, with its plain name
    warnings = browser.find_element(By.ID, "warnings").text
    assert "Intact PTH (iPTH)" in warnings and "outside the training range" in warnings
    # readable feature names, no raw PyRadiomics names
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#contrib .cname")]
    assert names and all("_" not in n for n in names), names
    assert _axe_violations(browser) == []
    browser.save_screenshot(str(tmp_path / "serve_390.png"))

    phone(False)
    browser.set_window_size(1400, 1000)
    browser.find_element(By.ID, "zoom-fit").click()
    assert fits()
    assert _axe_violations(browser) == []
    browser.save_screenshot(str(tmp_path / "serve_1400.png"))
    print(f"screenshots: {tmp_path}")

    # the printout: one page on A4 and on Letter, holding the result, its warnings and the
    # model card's caveats
    for name, (w, h) in {"A4": (21.0, 29.7), "Letter": (21.59, 27.94)}.items():
        opts = PrintOptions()
        opts.page_width, opts.page_height = w, h
        opts.background = True
        pdf = base64.b64decode(browser.print_page(opts))
        (tmp_path / f"print_{name}.pdf").write_bytes(pdf)
        assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1, name
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    for sel in ("#headline", "#warnings", "#snapshot", "#gradcam img", ".card-grid ul"):
        assert browser.find_element(By.CSS_SELECTOR, sel).is_displayed(), sel
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
