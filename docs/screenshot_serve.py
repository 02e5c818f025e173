"""Regenerate docs/serve*.png: `radfusion serve` on the demo bundle, as a clinician uses it.

Starts ``radfusion serve`` on 127.0.0.1 with the bundle of ``make demo``, opens the page in
Debian's headless Chromium (selenium), loads a test-set APT/PC image of the demo cohort,
outlines its lesion with mouse clicks, fills the clinical form from the cohort sheet
(phosphate left blank, to show the flag), presses Score and saves full-page screenshots at
1400 px (``serve.png``) and on a 390 px phone (``serve_phone.png``), and the printed page
(``serve_print.png`` where poppler's ``pdftoppm`` is installed, else ``serve_print.pdf``).

    python docs/screenshot_serve.py [--run demo_output/run] [--out docs/serve.png]
"""

from __future__ import annotations

import argparse
import base64
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from skimage.measure import find_contours

from radfusion.data.readers import read_mask

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _outline(mask_path: Path, n: int = 16) -> np.ndarray:
    """A polygon of n points around the lesion (x, y), as a clinician would click it."""
    mask = np.asarray(read_mask(mask_path), dtype=float)
    contour = max(find_contours(np.pad(mask, 1), 0.5), key=len) - 1
    idx = np.linspace(0, len(contour), n, endpoint=False).astype(int)
    return contour[idx][:, ::-1] + 0.5


def _full_page(browser, path: Path, width: int) -> None:
    """A screenshot of the whole page (not only the window) at ``width`` CSS pixels."""
    time.sleep(0.5)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=REPO / "demo_output" / "run")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "serve.png")
    args = ap.parse_args()
    cases = pd.read_csv(args.run / "cases.csv", dtype={"case_id": str})
    manifest_path = Path(
        next(
            line
            for line in (args.run / "config.yaml").read_text().splitlines()
            if "manifest:" in line
        )
        .split("manifest:", 1)[1]
        .strip()
    )
    manifest = pd.read_csv(manifest_path, dtype={"case_id": str}).set_index("case_id")
    case = cases[(cases["split"] == "test") & (cases["label"] == 1)].iloc[0]["case_id"]
    row = manifest.loc[case]
    image, mask = manifest_path.parent / row["image"], manifest_path.parent / row["mask"]
    width = np.asarray(read_mask(mask)).shape[1]

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "radfusion",
        "serve",
        str(args.run / "bundle"),
        "--port",
        str(port),
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    opts = Options()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--force-device-scale-factor=1"):  # fmt: skip
        opts.add_argument(arg)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        js = browser.execute_script
        wait = WebDriverWait(browser, 120)
        browser.get(url + "/")
        browser.find_element(By.ID, "image-file").send_keys(str(image))
        wait.until(lambda _: js("return window.radfusion.state.width") == width)
        canvas = browser.find_element(By.ID, "canvas")
        rect = js("return arguments[0].getBoundingClientRect().toJSON()", canvas)
        scale = rect["width"] / width
        poly = _outline(mask)
        for x, y in [*poly, poly[0]]:
            dx, dy = x * scale - rect["width"] / 2, y * scale - rect["height"] / 2
            ActionChains(browser).move_to_element_with_offset(
                canvas, round(dx), round(dy)
            ).click().perform()
        wait.until(lambda _: js("return window.radfusion.state.closed"))
        for name in ("age", "calcium", "ipth"):
            browser.find_element(By.ID, f"c-{name}").send_keys(str(row[name]))
        Select(browser.find_element(By.ID, "c-sex")).select_by_value(str(row["sex"]))
        browser.find_element(By.ID, "score").click()
        wait.until(lambda _: js("return document.body.dataset.scored") == "1")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gradcam img")) == 2)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#contrib .crow")) > 0)
        _full_page(browser, args.out, 1400)
        phone = args.out.with_name(args.out.stem + "_phone.png")
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
        )
        browser.find_element(By.ID, "zoom-fit").click()
        _full_page(browser, phone, 390)
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        pdf_bytes = base64.b64decode(browser.print_page())
        printed = args.out.with_name(args.out.stem + "_print.png")
        if shutil.which("pdftoppm"):  # poppler-utils: the printed page as a picture
            with tempfile.TemporaryDirectory() as tmp:
                pdf = Path(tmp) / "print.pdf"
                pdf.write_bytes(pdf_bytes)
                stem = printed.with_suffix("")
                subprocess.run(
                    ["pdftoppm", "-png", "-r", "90", "-singlefile", pdf, stem], check=True
                )
        else:
            printed = printed.with_suffix(".pdf")
            printed.write_bytes(pdf_bytes)
        print(f"{args.out}, {phone}, {printed}: case {case} (test set, APT/PC)")
    finally:
        browser.quit()
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
