"""`radfusion serve`: the web app's API, its limits and its safety rules (Starlette test
client, and one real uvicorn server for concurrent requests)."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import roifile
from PIL import Image
from starlette.testclient import TestClient
from typer.testing import CliRunner

from radfusion.bundle import load_bundle, predict_bundle, write_digest
from radfusion.cli import app as cli_app
from radfusion.data.manifest import Case
from radfusion.layout import RunLayout
from radfusion.predict import payload_records
from radfusion.serve import Limits, ServeSettings, create_app
from radfusion.serve.uploads import memory_folder
from tests.conftest import bomb_png_bytes

pytestmark = pytest.mark.slow  # builds the shared tiny study once (a few minutes)

CLINICAL = ["age", "sex", "calcium", "phosphate", "ipth"]


@pytest.fixture(scope="module")
def bundle(tiny_run):
    return load_bundle(tiny_run / "bundle")


@pytest.fixture(scope="module")
def client(bundle):
    return TestClient(create_app(bundle))


@pytest.fixture(scope="module")
def cases(tiny_run) -> pd.DataFrame:
    df = pd.read_csv(tiny_run / "cases.csv", dtype=str, keep_default_na=False)
    return df[df["split"] == "test"].reset_index(drop=True)


def _files(row, mask: bool = True) -> dict:
    files = {"image": ("scan.png", Path(row["image"]).read_bytes(), "image/png")}
    if mask:
        files["mask"] = ("roi.png", Path(row["mask"]).read_bytes(), "image/png")
    return files


def _expected(bundle, image, mask, clinical: dict[str, str]) -> pd.Series:
    case = Case("new_case", Path(image), Path(mask), 0, "new_case", clinical=clinical)
    return predict_bundle(bundle, [case]).set_index("model")["probability"]


def _got(payload: dict) -> pd.Series:
    return pd.DataFrame(payload_records(payload)).set_index("model")["probability"]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_health_names_the_verified_bundle(client, bundle):
    res = client.get("/api/health")
    assert res.status_code == 200
    body = res.json()
    assert body["status"] == "ok" and body["study"] == "tiny"
    assert body["models"] == len(bundle.models)
    import hashlib

    assert (
        body["bundle_sha256"]
        == hashlib.sha256((bundle.path / "bundle.json").read_bytes()).hexdigest()
    )


def test_health_says_when_the_models_are_ready(client, bundle):
    body = client.get("/api/health").json()
    for _ in range(600):  # the models load in a background thread
        if body["ready"]:
            break
        assert body["status"] == "ok" and body["loading_for_s"] >= 0
        time.sleep(0.1)
        body = client.get("/api/health").json()
    assert body["ready"] and body["loaded_after_s"] >= 0
    page = client.get("/").text
    assert 'id="model-status"' in page  # the page polls /api/health and says so


def test_a_bundle_whose_model_fails_its_format_check_is_reported_not_served(
    tiny_run, tmp_path, cases
):
    # start-up checks the hashes only; the formats are checked with the background load:
    # a model file that is not a skops file (its hash re-recorded, as a forger would) is
    # reported by /api/health, and scoring refuses with 503 instead of running anything
    import shutil

    from radfusion.utils import file_sha256

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run / "bundle", copy)
    meta = json.loads((copy / "bundle.json").read_text())
    rel = next(e["file"] for e in meta["models"] if "file" in e)
    (copy / rel).write_bytes(b"not a skops file")
    meta["files"][rel] = file_sha256(copy / rel)
    (copy / "bundle.json").write_text(json.dumps(meta))
    write_digest(copy)
    with pytest.raises(Exception, match="not a valid skops model file"):
        load_bundle(copy)  # the full check refuses it at once
    c = TestClient(create_app(load_bundle(copy, check_formats=False)))
    for _ in range(600):
        body = c.get("/api/health").json()
        if body["status"] == "error":
            break
        time.sleep(0.1)
    assert body["status"] == "error" and not body["ready"]
    assert "could not be loaded" in body["error"] and str(copy) not in body["error"]
    res = c.post("/api/predict", files=_files(cases.iloc[0]))
    assert res.status_code == 503 and "could not be loaded" in res.json()["error"]


def test_probabilities_are_stated_on_the_page_and_in_the_card(client, bundle):
    # the tiny study augments the minority class and weights the classes: every model but
    # the stacked / clinical one carries a prior shift, and the card says how it was undone
    shifts = {e["model"]: e["prior_shift"] for e in bundle.models}
    assert all(
        s["log_odds"] < 0 for m, s in shifts.items() if not m.startswith(("Stacked", "Clinical"))
    )
    info = client.get("/api/bundle").json()
    assert "prior-shift correction" in info["probabilities"]
    assert info["probabilities"] == bundle.meta["card"]["probabilities"]
    page = client.get("/").text
    assert 'id="card-probabilities"' in page and "prior-shift correction" in page


def test_bundle_info_drives_the_form_and_the_model_card(client, tiny_run):
    info = client.get("/api/bundle").json()
    assert info["class_names"] == ["PA", "APT/PC"]
    fields = {f["name"]: f for f in info["clinical"]}
    assert set(fields) == set(CLINICAL)
    train = pd.read_csv(tiny_run / "cases.csv")
    train = train[train["split"] == "train"]
    assert fields["age"]["kind"] == "numeric"
    assert fields["age"]["min"] == train["age"].min() and fields["age"]["max"] == train["age"].max()
    assert fields["sex"]["categories"] == sorted(train["sex"].unique())
    card = info["card"]
    assert card["cohort"]["images"] == 48 and set(card["cohort"]["centres"]) == {"H1", "H2"}
    # the radiomics stage checked PyRadiomics against the IBSI phantom; the card says so
    ibsi = json.loads(RunLayout(tiny_run).radiomics_ibsi_summary.read_text())
    assert card["feature_standardisation"] == ibsi["line"] and ibsi["ok"]
    metrics = pd.read_csv(tiny_run / "evaluation" / "metrics.csv")
    test_auc = metrics[(metrics["split"] == "test")].set_index("model")["auc"]
    for m in info["models"]:
        assert m["test"]["auc"] == pytest.approx(test_auc[m["model"]])
    page = client.get("/")
    assert page.status_code == 200
    for text in ("Model card", "APT/PC", "calcium", "training range", "IBSI", info["sha256"]):
        assert text in page.text
    # every asset the page uses is served by the app itself
    assert "http://" not in page.text.replace("http://www.w3.org", "")
    assert "https://" not in page.text
    for asset in ("/static/app.js", "/static/style.css", "/static/batch.js"):
        assert client.get(asset).status_code == 200


def test_predict_equals_predict_bundle_for_every_model(client, bundle, cases):
    for i, blank in ((0, False), (1, True)):
        row = cases.iloc[i]
        clinical = {} if blank else {c: row[c] for c in CLINICAL}
        res = client.post("/api/predict", files=_files(row), data=clinical)
        assert res.status_code == 200, res.text
        got = _got(res.json())
        want = _expected(bundle, row["image"], row["mask"], clinical)
        assert set(got.index) == {e["model"] for e in bundle.models}
        pd.testing.assert_series_equal(
            got.sort_index(), want.sort_index(), check_exact=False, rtol=0, atol=1e-9
        )


def test_predict_json_is_the_cli_payload(client, tiny_run, cases):
    row = cases.iloc[0]
    args = ["predict", str(tiny_run / "bundle"), "--image", row["image"], "--mask", row["mask"]]
    args += ["--clinical", f"age={row['age']}", "--clinical", f"sex={row['sex']}", "--json"]
    cli = CliRunner().invoke(cli_app, args)
    assert cli.exit_code == 0, cli.output
    res = client.post(
        "/api/predict", files=_files(row), data={"age": row["age"], "sex": row["sex"]}
    )
    web, want = res.json(), json.loads(cli.output)
    assert web.keys() == want.keys()  # the same payload: warnings and cases
    assert web["warnings"] == want["warnings"]
    web_r, want_r = pd.DataFrame(payload_records(web)), pd.DataFrame(payload_records(want))
    assert list(web_r.columns) == list(want_r.columns)  # same record shape, same order
    pd.testing.assert_frame_equal(web_r, want_r, check_exact=False, rtol=0, atol=1e-9)


def test_drawn_polygon_is_scored_as_the_same_imagej_roi(client, bundle, cases, tmp_path):
    row = cases.iloc[0]
    mask = np.asarray(Image.open(row["mask"])) > 0
    ys, xs = (v.tolist() for v in np.nonzero(mask))
    poly = [[min(xs), min(ys)], [max(xs) + 1, min(ys)], [max(xs) + 1, max(ys) + 1]]
    poly.append([min(xs) + 0.5, max(ys) + 1.25])
    res = client.post(
        "/api/predict",
        files={"image": ("x.png", Path(row["image"]).read_bytes())},
        data={"roi": json.dumps(poly), "age": row["age"]},
    )
    assert res.status_code == 200, res.text
    roi = tmp_path / "drawn.roi"
    roifile.ImagejRoi.frompoints(np.asarray(poly, dtype=float)).tofile(roi)
    want = _expected(bundle, row["image"], roi, {"age": row["age"]})
    pd.testing.assert_series_equal(
        _got(res.json()).sort_index(), want.sort_index(), check_exact=False, rtol=0, atol=1e-9
    )
    # the area shown while drawing is the pixel count of that same rasterised ROI
    area = client.post(
        "/api/roi", data={"roi": json.dumps(poly), "width": "160", "height": "120"}
    ).json()["area_px"]
    from radfusion.data.readers import read_mask

    assert area == int(read_mask(roi, shape=(120, 160)).sum())
    saved = client.post("/api/roi?format=imagej", data={"roi": json.dumps(poly)})
    assert saved.status_code == 200
    np.testing.assert_array_equal(
        roifile.ImagejRoi.frombytes(saved.content).coordinates(), np.asarray(poly, dtype=float)
    )


def test_roi_area_of_an_uploaded_imagej_roi_with_its_image(client, cases, tmp_path):
    """The page's "Mask or ImageJ .roi" control sends the image and the .roi file."""
    from radfusion.data.readers import read_mask

    row = cases.iloc[0]
    roi = tmp_path / "lesion.roi"
    roifile.ImagejRoi.frompoints(np.asarray([[20, 15], [90, 20], [80, 70], [25, 60]])).tofile(roi)
    res = client.post(
        "/api/roi",
        files={
            "image": ("scan.png", Path(row["image"]).read_bytes(), "image/png"),
            "mask": ("lesion.roi", roi.read_bytes(), "application/octet-stream"),
        },
    )
    assert res.status_code == 200, res.text
    shape = read_mask(row["mask"]).shape
    assert res.json()["area_px"] == int(read_mask(roi, shape=shape).sum()) > 0


def test_bundle_names_one_headline_model_and_flags_the_untrustworthy(client, bundle):
    info = client.get("/api/bundle").json()
    models = {m["model"]: m for m in info["models"]}
    head = info["headline"]["model"]
    chosen = [m for m in models.values() if m["selected"]]
    if head is None:  # flagged models never head the result: then there is no answer
        assert all(m["flags"] for m in chosen)
        assert "every chosen model is flagged" in info["headline"]["reason"]
    else:
        assert models[head]["selected"] and not models[head]["flags"]
    val = bundle.meta["card"]["validation"]
    # the card carries the report's miscalibration reasons on validation (issue 21's flag)
    miscalibrated = bundle.meta["card"]["miscalibration"]
    for name, m in models.items():
        t = m["threshold"]
        assert bool(m["flags"]) == (t <= 0.01 or t >= 0.99 or bool(miscalibrated.get(name))), name
        if miscalibrated.get(name):
            assert any("miscalibrated on validation" in f for f in m["flags"])
    # the model card on the page names every flagged model
    flagged_line = client.get("/").text.split('id="card-flagged"')[1].split("</dd>")[0]
    for name, m in models.items():
        assert (name in flagged_line) == bool(m["flags"]), name
    # the headline is the unflagged chosen model with the best validation AUC
    usable = [m for m in chosen if not m["flags"]]
    if head is not None:
        assert val[head]["auc"] == max(val[m["model"]]["auc"] for m in usable)
        assert "validation AUC" in info["headline"]["reason"]
    fields = {f["name"]: f for f in info["clinical"]}
    assert (fields["ipth"]["label"], fields["ipth"]["unit"]) == ("Intact PTH (iPTH)", "pmol/L")
    page = client.get("/").text
    assert "Intact PTH (iPTH)" in page and "pmol/L" in page


def test_explain_gives_gradcam_and_signed_contributions(client, bundle, cases):
    res = client.post("/api/explain", files=_files(cases.iloc[0]))
    assert res.status_code == 200, res.text
    body = res.json()
    assert [g["arm"] for g in body["gradcam"]] == ["1ch", "2ch"]
    for g in body["gradcam"]:
        assert g["image"].startswith("data:image/png;base64,")
        # drawn on the image at its own proportions (160 x 120 here), not a stretched square
        import base64

        shown = Image.open(io.BytesIO(base64.b64decode(g["image"].split(",", 1)[1])))
        assert abs(shown.width / shown.height - 160 / 120) < 0.05, g["arm"]
        # the ROI outline is drawn in green on every arm, 1ch included
        assert ((np.asarray(shown)[..., :3] == (0, 255, 51)).all(axis=-1)).sum() > 20
    rad = body["radiomics"]
    chosen = next(e for e in bundle.models if e["family"] == "radiomics" and e["selected"])
    assert rad["model"] == chosen["model"]
    contrib = [f["contribution"] for f in rad["features"]]
    from radfusion.radiomics.names import readable_feature_name

    assert [f["label"] for f in rad["features"]] == [
        readable_feature_name(f["feature"]) for f in rad["features"]
    ]
    assert contrib and all(np.isfinite(contrib))
    assert contrib == sorted(contrib, key=abs, reverse=True)


def _truncated_png(row) -> bytes:
    return Path(row["image"]).read_bytes()[:200]


@pytest.mark.parametrize(
    ("name", "status", "words"),
    [
        ("no image", 400, "image: no file"),
        ("text as image", 415, "unsupported file format"),
        ("truncated png", 422, "the image"),
        ("zero-byte image", 400, "image: the file is empty"),
        ("zero-byte mask", 400, "mask: the file is empty"),
        ("no roi", 400, "outline the lesion"),
        ("empty mask", 422, "empty"),
        ("mask of another size", 422, "mask"),
        ("unknown clinical key", 422, "unknown clinical key"),
        ("non-numeric clinical value", 422, "age"),
        ("roi of two points", 400, "at least 3"),
        ("roi not json", 400, "JSON"),
        ("json body", 415, "multipart"),
    ],
)
def test_bad_uploads_get_a_4xx_with_a_message(client, cases, name, status, words):
    row = cases.iloc[0]
    image = Path(row["image"]).read_bytes()
    mask = Path(row["mask"]).read_bytes()
    files: dict = {"image": ("x.png", image), "mask": ("m.png", mask)}
    data: dict = {}
    if name == "no image":
        files.pop("image")
    elif name == "text as image":
        files["image"] = ("x.png", b"patient name: nobody\n" * 20)
    elif name == "truncated png":
        files["image"] = ("x.png", _truncated_png(row))
    elif name == "zero-byte image":
        files["image"] = ("x.png", b"")
    elif name == "zero-byte mask":
        files["mask"] = ("m.png", b"")
    elif name == "no roi":
        files.pop("mask")
    elif name == "empty mask":
        files["mask"] = ("m.png", _png(np.zeros((120, 160), np.uint8)))
    elif name == "mask of another size":
        files["mask"] = ("m.png", _png(np.full((50, 60), 255, np.uint8)))
    elif name == "unknown clinical key":
        data = {"weight": "70"}
    elif name == "non-numeric clinical value":
        data = {"age": "sixty"}
    elif name == "roi of two points":
        files.pop("mask")
        data = {"roi": "[[1, 2], [3, 4]]"}
    elif name == "roi not json":
        files.pop("mask")
        data = {"roi": "around the nodule"}
    if name == "json body":
        res = client.post("/api/predict", json={"image": "x"})
    else:
        res = client.post("/api/predict", files=files, data=data)
    assert res.status_code == status, res.text
    message = res.json()["error"]
    assert words.lower() in message.lower()
    assert "/dev/shm" not in message and "radfusion-serve-" not in message
    assert "Traceback" not in res.text


def test_oversized_upload_and_decompression_bomb_are_refused(bundle, cases):
    small = TestClient(create_app(bundle, ServeSettings(limits=Limits(max_bytes=20_000))))
    row = cases.iloc[0]
    big = np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)
    res = small.post("/api/predict", files={"image": ("x.png", _png(big)), "mask": ("m.png", b"x")})
    assert res.status_code == 413 and "limit" in res.json()["error"]
    # a small file that decodes to many pixels is refused before it is decoded
    bomb = io.BytesIO()
    Image.new("1", (4000, 3000)).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 20_000
    few = TestClient(create_app(bundle, ServeSettings(limits=Limits(max_pixels=1_000_000))))
    res = few.post("/api/predict", files={"image": ("x.png", bomb.getvalue()), **_mask(row)})
    assert res.status_code == 413 and "pixels" in res.json()["error"]


@pytest.mark.parametrize("where", ["predict", "explain", "mask", "roi", "image", "batch"])
def test_a_decompression_bomb_gets_413_in_every_upload_path(client, cases, where):
    """Issue 26: a 388-byte PNG declaring 20000 x 20000 pixels got HTTP 500 (Pillow's
    DecompressionBombError escaped); the CLI refused the same file with exit 2."""
    row = cases.iloc[0]
    bomb = bomb_png_bytes(20000)
    if where == "batch":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("manifest.csv", "case_id,image,mask\na,a.png,a_mask.png\n")
            zf.writestr("a.png", bomb)
            zf.writestr("a_mask.png", Path(row["mask"]).read_bytes())
        res = client.post("/api/batch", files={"archive": ("b.zip", buf.getvalue())})
    elif where == "mask":
        files = {"image": ("x.png", Path(row["image"]).read_bytes()), "mask": ("m.png", bomb)}
        res = client.post("/api/predict", files=files)
    else:
        files = {"image": ("x.png", bomb), **_mask(row)}
        res = client.post(f"/api/{where}", files=files)
    assert res.status_code == 413, res.text
    assert "more pixels than radfusion will decode" in res.json()["error"]


def _mask(row) -> dict:
    return {"mask": ("m.png", Path(row["mask"]).read_bytes())}


def test_token_is_required_when_set(bundle, cases):
    c = TestClient(create_app(bundle, ServeSettings(token="s3cret")))
    assert c.get("/api/health").status_code == 200  # liveness stays open
    assert c.get("/api/bundle").status_code == 401
    assert c.post("/api/predict", files=_files(cases.iloc[0])).status_code == 401
    assert c.get("/api/bundle", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/bundle", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    page = c.get("/?token=s3cret", follow_redirects=False)
    assert page.status_code == 303 and "radfusion_token" in page.headers["set-cookie"]
    assert c.get("/").status_code == 200  # the cookie now opens the pages


def test_uploads_stay_in_memory_unless_kept(bundle, cases, tmp_path, caplog):
    shm = memory_folder()
    before = set(shm.glob("radfusion-serve-*")) if shm else set()
    row = cases.iloc[0]
    c = TestClient(create_app(bundle))
    with caplog.at_level("DEBUG", logger="radfusion"):
        assert c.post("/api/predict", files=_files(row), data={"age": "61"}).status_code == 200
    if shm:
        assert set(shm.glob("radfusion-serve-*")) == before  # removed after the request
    # the records' messages (caplog.text also holds source line numbers, e.g. app.py:610)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "scan.png" not in logged and "61" not in logged
    keep = tmp_path / "kept"
    k = TestClient(create_app(bundle, ServeSettings(keep_uploads=keep)))
    assert k.post("/api/predict", files=_files(row)).status_code == 200
    (folder,) = keep.iterdir()
    assert (folder / "image.png").read_bytes() == Path(row["image"]).read_bytes()
    assert (folder / "mask.png").is_file()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_batch_zip_gives_a_csv_of_every_models_scores(client, bundle, cases):
    rows = cases.iloc[:2]
    members, manifest = {}, []
    for r in rows.itertuples():
        members[f"img/{r.case_id}.png"] = Path(r.image).read_bytes()
        members[f"roi/{r.case_id}.png"] = Path(r.mask).read_bytes()
        manifest.append(
            {"case_id": r.case_id, "image": f"img/{r.case_id}.png", "mask": f"roi/{r.case_id}.png"}
            | {c: getattr(r, c) for c in CLINICAL}
        )
    members["manifest.csv"] = pd.DataFrame(manifest).to_csv(index=False).encode()
    res = client.post("/api/batch", files={"archive": ("b.zip", _zip(members))})
    assert res.status_code == 200, res.text
    got = pd.read_csv(io.StringIO(res.text)).set_index(["case_id", "model"])["probability"]
    want = predict_bundle(
        bundle,
        [
            Case(
                r.case_id,
                Path(r.image),
                Path(r.mask),
                0,
                r.case_id,
                clinical=dict((c, getattr(r, c)) for c in CLINICAL),
            )
            for r in rows.itertuples()
        ],
    ).set_index(["case_id", "model"])["probability"]
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), rtol=0, atol=1e-9)
    # a manifest that reaches outside the zip, and a member path that escapes it
    outside = pd.DataFrame(
        [
            {"case_id": "a", "image": rows.iloc[0]["image"], "mask": "m.png"}
            | dict.fromkeys(CLINICAL, "")
        ]
    )
    bad = _zip({"manifest.csv": outside.to_csv(index=False).encode(), "m.png": b""})
    res = client.post("/api/batch", files={"archive": ("b.zip", bad)})
    assert res.status_code == 400 and "outside the zip" in res.json()["error"]
    res = client.post("/api/batch", files={"archive": ("b.zip", _zip({"../evil.csv": b"x"}))})
    assert res.status_code == 400 and "outside the archive" in res.json()["error"]
    res = client.post("/api/batch", files={"archive": ("b.zip", b"not a zip")})
    assert res.status_code == 415


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_concurrent_requests_are_scored_correctly(bundle, cases):
    import httpx
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(bundle), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/api/predict"
        picks = [cases.iloc[i % 3] for i in range(6)]

        def one(row) -> pd.Series:
            r = httpx.post(url, files=_files(row), data={"age": row["age"]}, timeout=120)
            assert r.status_code == 200, r.text
            return _got(r.json())

        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(one, picks))
        for row, got in zip(picks, results, strict=True):
            want = _expected(bundle, row["image"], row["mask"], {"age": row["age"]})
            pd.testing.assert_series_equal(
                got.sort_index(), want.sort_index(), check_exact=False, rtol=0, atol=1e-9
            )
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_cli_serve_refuses_a_bad_bundle_and_guards_other_hosts(tiny_run, tmp_path, monkeypatch):
    runner = CliRunner()
    res = runner.invoke(cli_app, ["serve", str(tmp_path)])
    assert res.exit_code == 2 and "not a radfusion bundle" in res.output
    started: dict = {}

    def fake_run(bundle, *, host, port, settings):
        started.update(host=host, port=port, token=settings.token)

    monkeypatch.setattr("radfusion.serve.app.run_server", fake_run)
    res = runner.invoke(cli_app, ["serve", str(tiny_run / "bundle"), "--host", "0.0.0.0"])
    assert res.exit_code == 0, res.output
    assert started["token"] and f"?token={started['token']}" in res.output
    res = runner.invoke(cli_app, ["serve", str(tiny_run / "bundle")])
    assert started == {"host": "127.0.0.1", "port": 8000, "token": None}


def test_cli_serve_requires_a_signature_made_with_the_trusted_key(tiny_run, tmp_path, monkeypatch):
    import shutil

    runner = CliRunner()
    monkeypatch.setattr("radfusion.serve.app.run_server", lambda *a, **k: None)
    b = Path(shutil.copytree(tiny_run / "bundle", tmp_path / "bundle"))
    key = tmp_path / "secret.key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef")
    res = runner.invoke(cli_app, ["serve", str(b), "--trusted-key", str(key)])
    assert res.exit_code == 2 and "is not signed" in res.output
    assert runner.invoke(cli_app, ["sign", str(b), "--key", str(key)]).exit_code == 0
    res = runner.invoke(cli_app, ["serve", str(b), "--trusted-key", str(key)])
    assert res.exit_code == 0 and "signature checked" in res.output, res.output
    # an edit of bundle.json after signing, digest recomputed: the signature catches it
    meta = json.loads((b / "bundle.json").read_text())
    meta["models"][0]["threshold"] = 0.999
    (b / "bundle.json").write_text(json.dumps(meta))
    write_digest(b)
    res = runner.invoke(cli_app, ["serve", str(b), "--trusted-key", str(key)])
    assert res.exit_code == 2 and "does not match the trusted key" in res.output
    # without a key, the digest alone catches a changed byte of bundle.json
    (b / "bundle.json").write_text(json.dumps(meta) + " ")
    res = runner.invoke(cli_app, ["serve", str(b)])
    assert res.exit_code == 2 and "bundle.json does not match its recorded SHA-256" in res.output


def test_a_blank_category_is_imputed_as_in_training(client, cases):
    # scikit-learn warns when a value is not a known category instead of a missing one: a
    # blank sex must reach the clinical model's imputer as missing
    import warnings

    row = cases.iloc[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = client.post("/api/predict", files=_files(row), data={"age": row["age"]})
    assert res.status_code == 200, res.text
    assert not [w for w in caught if "unknown categories" in str(w.message)]


def test_roi_area_of_an_uploaded_mask_with_its_image(client, cases):
    """/api/roi read the image part twice and the second read came back empty: an image
    with a mask file answered 400 "image: no file uploaded"."""
    row = cases.iloc[0]
    res = client.post("/api/roi", files=_files(row))
    assert res.status_code == 200, res.text
    mask = np.asarray(Image.open(row["mask"])) > 0
    assert res.json()["area_px"] == int(mask.sum())


def test_clinical_values_outside_training_are_warned_and_implausible_refused(client, cases):
    """Issue 26: age=-5 and age=1e300 were scored without a word by the API."""
    row = cases.iloc[0]
    res = client.post("/api/predict", files=_files(row), data={"age": "110"})
    assert res.status_code == 200, res.text
    (w,) = [w for w in res.json()["cases"][0]["warnings"] if w["code"] == "out_of_range"]
    assert "'age' value 110 is outside the training range" in w["message"]
    for age in ("-5", "1e300"):  # the preset's plausible range: age 0 to 120
        res = client.post("/api/predict", files=_files(row), data={"age": age})
        assert res.status_code == 422 and "implausible_value" in res.text, res.text


def test_a_dicom_image_is_previewed_and_scored_like_the_file(client, bundle, cases, tmp_path):
    from .test_readers import _dicom

    row = cases.iloc[0]
    pixels = np.asarray(Image.open(row["image"]).convert("L"))
    dcm = tmp_path / "scan.dcm"
    _dicom(dcm, pixels)
    preview = client.post("/api/image", files={"image": ("scan", dcm.read_bytes())})
    assert preview.status_code == 200, preview.text
    assert (preview.json()["width"], preview.json()["height"]) == (pixels.shape[1], pixels.shape[0])
    res = client.post("/api/predict", files={"image": ("scan", dcm.read_bytes()), **_mask(row)})
    assert res.status_code == 200, res.text
    want = _expected(bundle, dcm, row["mask"], {})
    pd.testing.assert_series_equal(
        _got(res.json()).sort_index(), want.sort_index(), check_exact=False, rtol=0, atol=1e-9
    )


def test_a_bundle_without_a_model_card_still_serves(tiny_run, tmp_path):
    import shutil

    old = tmp_path / "bundle"
    shutil.copytree(tiny_run / "bundle", old)
    meta = json.loads((old / "bundle.json").read_text())
    del meta["card"]  # bundles written before the model card existed
    (old / "bundle.json").write_text(json.dumps(meta))
    write_digest(old)
    c = TestClient(create_app(load_bundle(old)))
    page = c.get("/")
    assert page.status_code == 200 and "not recorded" in page.text
    assert c.get("/api/bundle").json()["clinical"][0]["name"] == "age"


def test_a_local_server_refuses_foreign_host_names(bundle):
    c = TestClient(
        create_app(bundle, ServeSettings(allowed_hosts=["127.0.0.1", "localhost"])),
        base_url="http://127.0.0.1:8000",
    )
    assert c.get("/api/bundle").status_code == 200
    assert c.get("/api/bundle", headers={"host": "evil.example:8000"}).status_code == 400


def test_uploaded_parts_are_closed_after_each_request(client, cases):
    # the server log once showed "ResourceWarning: Unclosed file <SpooledTemporaryFile>"
    # for every form: the parsed parts are now closed when the request is answered
    import gc
    import warnings

    image = Path(cases.iloc[0]["image"]).read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert client.post("/api/image", files={"image": ("x.png", image)}).status_code == 200
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
