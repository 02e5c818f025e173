"""The self-contained HTML study report of a (synthetic) run folder."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from radfusion.evaluation import evaluate_run
from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.layout import RunLayout
from radfusion.radiomics.ibsi import ibsi_check, read_ibsi_summary, write_ibsi
from radfusion.report import case_thumbnail, pick_example_cases, write_report
from radfusion.report.caveats import caveats
from radfusion.report.methods import methods_summary
from tests.test_evaluation import make_fake_run


class _Collector(HTMLParser):
    """Headings, table captions, image sources, hrefs and every tag name of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[str] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for key in ("href", "src", "action", "srcset", "poster"):
            if key in a and tag != "img":
                self.hrefs.append(a[key] or "")

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, _Collector]:
    run = make_fake_run(tmp_path_factory.mktemp("rep"))
    lay = RunLayout(run)  # the IBSI check as the radiomics stage writes it
    lay.radiomics_dir.mkdir(parents=True, exist_ok=True)
    write_ibsi(ibsi_check(), lay.radiomics_ibsi, lay.radiomics_ibsi_summary)
    ev = evaluate_run(run)
    path = write_report(run, ev)
    html = path.read_text(encoding="utf-8")
    parsed = _Collector()
    parsed.feed(html)
    return run, html, parsed


def test_report_is_self_contained_and_offline(report):
    run, html, parsed = report
    assert (run / "report" / "report.html").is_file()
    low = html.lower()
    assert "http://" not in low and "https://" not in low and 'src="//' not in low
    assert "<script" not in low and "<link" not in low and "@import" not in low
    assert "url(" not in low  # no CSS resource either
    # every image is an embedded PNG that decodes
    assert len(parsed.imgs) >= 20
    for src in parsed.imgs:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.width > 10
    # links are only in-page anchors
    assert parsed.hrefs and all(h.startswith("#") for h in parsed.hrefs)
    assert len(html) < 6_000_000


def test_report_has_the_papers_sections_and_tables(report):
    _, html, parsed = report
    text = " ".join(parsed.text)
    for heading in (
        "Methods summary (TRIPOD+AI)",
        "Table 1. Baseline characteristics",
        "Table 2. Performance",
        "Radiomics classifiers (Figure 3)",
        "Figure 4",
        "Example test cases (Figure 5)",
        "Figure S1",
        "Figure S2",
        "Calibration and decision curves",
        "Caveats and limitations",
        "Grad-CAM",
    ):
        assert heading in text, heading
    # Table 1 shows the configured clinical columns and the outcome with class names
    for item in ("age", "calcium", "sex", "Pathological subtype", "APT/PC", "PA"):
        assert f">{item}<" in html, item
    # Table 2 lists the selected model of every family on the three sets
    for model in ("Radiomics-LR", "1ch_ResNet18", "Merged2-LightGBM", "Clinical+imaging"):
        assert model in text
    assert text.count("Validation") >= 6
    # TRIPOD+AI items generated from config and fingerprint
    for topic in (
        "Data source",
        "Data dates",
        "Eligibility",
        "Outcome",
        "Sample size and events",
        "Data splitting",
        "Class imbalance",
        "Feature selection",
        "Models and tuning",
        "Operating threshold",
        "Software and reproducibility",
    ):
        assert f"<th>{topic}</th>" in html, topic
    assert "not recorded" in text  # accrual dates are not in the run
    assert "567" in text and "radiomics_paper.yaml" in text
    assert "training set only" in text  # demo preset: no validation augmentation
    assert "never tuned on" in text


def test_report_tables_written_as_csv(report):
    run, _, _ = report
    tables = run / "report" / "tables"
    for name in (
        "table1",
        "table2",
        "metrics_all",
        "thresholds",
        "sample_size",
        "feature_selection",
        "example_cases",
        "software_versions",
        "delong_test",
    ):
        assert (tables / f"{name}.csv").is_file(), name
    sizes = pd.read_csv(tables / "sample_size.csv")
    assert sizes.loc[sizes["Set"] == "All", "Cases"].item() == 60
    assert sizes.loc[sizes["Set"] == "All", "Events (APT/PC)"].item() == 24
    t2 = pd.read_csv(tables / "table2.csv")
    assert set(t2["Set"]) == {"Training", "Validation", "Test"}
    cases = pd.read_csv(tables / "example_cases.csv")
    assert cases["case_id"].nunique() == 3


def test_validation_augmentation_is_flagged(tmp_path):
    run = make_fake_run(tmp_path, n=40, families=("radiomics",))
    text = (
        (run / "config.yaml")
        .read_text()
        .replace("augment_validation: false", "augment_validation: true")
    )
    (run / "config.yaml").write_text(text)
    folder = RunArtifacts(run)
    ev = evaluate_run(run, figures=False)
    assert not ev.figures
    notes = " ".join(caveats(folder, ev))
    assert "validation set was augmented" in notes.lower()
    items = {i.topic: i.text for i in methods_summary(folder, ev)}
    assert "AND validation" in items["Class imbalance"]
    assert "Not in this run" in notes  # no deep or merged families


def test_example_cases_and_thumbnail(report):
    run, _, _ = report
    preds = pd.read_parquet(run / "predictions.parquet")
    mains = sorted(preds.loc[preds["selected"], "model"].unique())
    thr = dict.fromkeys(mains, 0.5)
    ids = pick_example_cases(preds, mains, thr, n=3)
    assert len(ids) == 3 and len(set(ids)) == 3
    test_ids = set(preds.loc[preds["split"] == "test", "case_id"])
    assert set(ids) <= test_ids
    labels = preds.drop_duplicates("case_id").set_index("case_id")["label"]
    assert labels[ids[0]] == 1 and labels[ids[1]] == 0
    cases = pd.read_csv(run / "cases.csv").set_index("case_id")
    png = case_thumbnail(cases.loc[ids[0], "image"], cases.loc[ids[0], "mask"], max_side=40)
    with Image.open(io.BytesIO(png)) as im:
        rgb = im.convert("RGB")
        assert max(rgb.size) == 40
        red = [p for p in rgb.getdata() if p[0] > 200 and p[1] < 80 and p[2] < 80]
        assert red  # the ROI outline is drawn


def test_report_reuses_a_current_evaluation(report):
    run, _, _ = report
    stamp = (run / "evaluation" / "metrics.csv").stat().st_mtime_ns
    write_report(run)  # evaluation matches the predictions: not recomputed
    assert (run / "evaluation" / "metrics.csv").stat().st_mtime_ns == stamp
    assert re.search(r"fake-study: study report", (run / "report" / "report.html").read_text())


def test_report_states_the_ibsi_phantom_check(report):
    run, html, _ = report
    summary = read_ibsi_summary(RunLayout(run).radiomics_ibsi_summary)
    assert summary["line"].startswith("Feature extraction: PyRadiomics")
    assert html.count(summary["line"]) == 2  # methods (radiomics item) and supplement
    assert "IBSI digital phantom (feature standardisation)" in html
    full = pd.read_csv(RunLayout(run).radiomics_ibsi)
    table = pd.read_csv(RunLayout(run).report_table("ibsi_phantom"))
    assert len(table) == len(full) and set(table["status"]) == set(full["status"])


def test_failed_inner_cv_fits_are_a_caveat_and_shown_in_the_tuning_table(tmp_path):
    run = make_fake_run(tmp_path, n=40, families=("radiomics",))
    path = run / "models" / "radiomics" / "cv_results.csv"
    cv = pd.read_csv(path)
    note = "3 of 9 inner-CV fits failed (ValueError: x); scored on 2 of 3 folds"
    cv["failed_fits"] = [3] + [0] * (len(cv) - 1)
    cv["tuning_note"] = [note] + [""] * (len(cv) - 1)
    cv.to_csv(path, index=False)
    ev = evaluate_run(run, figures=False)
    notes = caveats(RunArtifacts(run), ev)
    first = f"Radiomics-{cv['classifier'].iloc[0]} hyperparameter tuning: {note}"
    assert [n for n in notes if "hyperparameter tuning" in n] == [
        f"{first}; its inner-CV AUC rests on those folds only."
    ]
    html = write_report(run, ev).read_text(encoding="utf-8")
    assert "Tuning note" in html and "Failed inner-CV fits" in html
