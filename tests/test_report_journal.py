"""The report as a journal reads it: consistent text, Table 2 CIs, calibration intercept and
slope, the participant flow, the filled reporting checklists and the printed PDF."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from radfusion.evaluation import evaluate_run
from radfusion.evaluation.run import has_importance, lasso_caption
from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.report import write_report
from radfusion.report.calibration import calibration_summary, flagged_models
from radfusion.report.checklists import AUTHOR, FILLED, fill_checklists, load_checklist
from radfusion.report.html import esc
from radfusion.report.methods import methods_summary, subgroups_text, synthetic_sentence
from radfusion.report.pdf import find_chromium, print_html, write_pdf
from radfusion.report.samplesize import training_events
from radfusion.stats import calibration_fit, format_p_value, miscalibration_reasons
from tests.test_evaluation import make_fake_run


class _Sections(HTMLParser):
    """``<h2>`` titles and the text of the whole page."""

    def __init__(self) -> None:
        super().__init__()
        self.h2: list[str] = []
        self.text: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self._in_h2 = self._in_h2 or tag == "h2"

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self.h2.append(data)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    run = make_fake_run(tmp_path_factory.mktemp("journal"))
    ev = evaluate_run(run)
    path = write_report(run, ev)
    html = path.read_text(encoding="utf-8")
    parsed = _Sections()
    parsed.feed(html)
    return run, ev, html, parsed


# --- statistics --------------------------------------------------------------------------------
def test_calibration_fit_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(3)
    lp = rng.normal(0, 1.5, 400)
    y = (rng.random(400) < 1 / (1 + np.exp(-(0.4 + 0.6 * lp)))).astype(int)
    p = 1 / (1 + np.exp(-lp))
    fit = calibration_fit(y, p)
    ref = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit()
    assert fit.slope.value == pytest.approx(ref.params[1], rel=1e-6)
    assert (fit.slope.low, fit.slope.high) == pytest.approx(tuple(ref.conf_int()[1]), rel=1e-5)
    citl = sm.GLM(y, np.ones((400, 1)), family=sm.families.Binomial(), offset=lp).fit()
    assert fit.intercept.value == pytest.approx(citl.params[0], rel=1e-6)
    assert (fit.intercept.low, fit.intercept.high) == pytest.approx(
        tuple(citl.conf_int()[0]), rel=1e-5
    )


def test_perfectly_calibrated_model_has_slope_one_and_intercept_zero():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20000)
    y = (rng.random(20000) < p).astype(int)
    fit = calibration_fit(y, p)
    assert fit.slope.low < 1 < fit.slope.high
    assert fit.intercept.low < 0 < fit.intercept.high
    assert miscalibration_reasons(y, p) == []


def test_calibrated_model_of_a_rare_outcome_is_not_flagged():
    # at a prevalence of ~7% (the paper's), a calibrated model gives every case a
    # probability below 0.5; that is not a degenerate model
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.15, 400)
    y = (rng.random(400) < p).astype(int)
    assert 0 < y.sum() < 400 and (p < 0.5).all()
    assert miscalibration_reasons(y, p) == []


def test_degenerate_model_is_flagged():
    y = np.array([0] * 30 + [1] * 10)
    p = np.full(40, 0.97)  # every probability near one class, as the demo's 1ch arm
    reasons = miscalibration_reasons(y, p)
    assert any("Brier" in r for r in reasons) and any("every probability" in r for r in reasons)
    preds = pd.DataFrame(
        {"model": "M", "split": "test", "label": y, "probability": p, "case_id": range(40)}
    )
    summary = calibration_summary(preds, ["M"])
    assert summary["citl"].item() < 0  # risks overestimated
    assert flagged_models(summary) == [f"M (test set): {'; '.join(reasons)}"]


def test_separated_classes_give_no_slope():
    fit = calibration_fit(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert np.isnan(fit.slope.value) and np.isfinite(fit.brier)


# --- figures -----------------------------------------------------------------------------------
def test_lasso_caption_names_only_what_is_drawn():
    coefs_only = {"coefficients": {"a": 0.3}}
    assert "path" not in lasso_caption("merged1", coefs_only).lower()
    both = {"coefficients": {"a": 0.3}, "lasso_path": {"Cs": [1.0], "coefs": [[0.3]]}}
    assert "LASSO path" in lasso_caption("radiomics", both)


def test_all_zero_importance_is_not_plotted():
    assert not has_importance(pd.DataFrame({"feature": ["a", "b"], "importance": [0.0, 0.0]}))
    assert not has_importance(pd.DataFrame({"feature": ["a"], "importance": [np.nan]}))
    assert has_importance(pd.DataFrame({"feature": ["a", "b"], "importance": [0.0, -0.2]}))


# --- the report --------------------------------------------------------------------------------
def test_methods_and_sections_agree(built):
    run, ev, html, parsed = built
    folder = RunArtifacts(run)
    text = " ".join(parsed.text)
    headings = " ".join(parsed.h2)
    # every section the methods name exists, and the subgroup sentence matches the section
    for name in re.findall(
        r"section '([^']+)'", " ".join(i.text for i in methods_summary(folder, ev))
    ):
        assert name in headings, name
    assert "Per-centre and subgroup performance" in headings
    assert "not analysed" not in subgroups_text(folder)
    (run / "evaluation" / "subgroups.csv").rename(run / "evaluation" / "subgroups.bak")
    try:
        assert "not analysed" in subgroups_text(RunArtifacts(run))
    finally:
        (run / "evaluation" / "subgroups.bak").rename(run / "evaluation" / "subgroups.csv")
    # units said plainly, no raw column headers, a real cohort not called synthetic
    assert "Counted per patient" in text and "Counted per image" in text
    for raw in (">odds_ratio<", ">p_value<", ">ci_low<"):
        assert raw not in html
    assert synthetic_sentence(folder) == "" and "SYNTHETIC" not in html


def test_synthetic_cohort_is_said_to_be_synthetic(built, tmp_path):
    run, ev, _, _ = built
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "manifest.csv").write_text("case_id\n")
    (cohort / "synth.json").write_text('{"n": 60, "seed": 0}')
    fp = run / "fingerprint.json"
    old = fp.read_text() if fp.exists() else None
    import json

    data = json.loads(old) if old else {}
    fp.write_text(json.dumps({**data, "manifest": str(cohort / "manifest.csv")}))
    try:
        folder = RunArtifacts(run)
        assert "SYNTHETIC DATA" in synthetic_sentence(folder)
        items = {i.topic: i.text for i in methods_summary(folder, ev)}
        assert "SYNTHETIC DATA" in items["Data source"]
    finally:
        if old is None:
            fp.unlink()
        else:
            fp.write_text(old)


def test_table2_has_wilson_cis_and_calibration_table(built):
    run, ev, html, _ = built
    t2 = pd.read_csv(run / "report" / "tables" / "table2.csv")
    m = ev.metrics.set_index(["model", "split"])
    row = t2[t2["Set"] == "Test"].iloc[0]
    mr = m.loc[(row["Model"], "test")]
    for col in ("ACC", "SEN", "SPE", "PPV", "NPV"):
        assert re.fullmatch(r"\d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\)", str(row[col])), (col, row[col])
        assert str(row[col]).startswith(f"{mr[col.lower()]:.3f} ({mr[col.lower() + '_low']:.3f}")
    cal = pd.read_csv(run / "report" / "tables" / "calibration.csv")
    assert set(cal["model"]) == set(ev.main_models)
    assert {"citl", "citl_low", "slope", "slope_high", "brier", "flag"} <= set(cal.columns)
    assert "Calibration slope (95% CI)" in html
    flow = pd.read_csv(run / "report" / "tables" / "participant_flow.csv")
    assert flow.set_index("stage").loc["Analysed", "images"] == 60
    assert (
        flow.set_index("stage").loc["Test", "events"]
        == ev.metrics.query("split == 'test'")["n_pos"].max()
    )
    assert 'aria-label="Participant flow diagram"' in html


def test_checklists_are_filled_from_the_run(built):
    run, ev, html, _ = built
    folder = run / "report" / "checklists"
    sizes = {"tripod_ai": 52, "claim_2024": 44, "metrics": 30}
    for name, n in sizes.items():
        items = load_checklist(name)
        assert len(items) == n and items["item"].is_unique
        filled = pd.read_csv(folder / f"{name}.csv", dtype=str).fillna("")
        assert len(filled) == n and (folder / f"{name}.md").is_file()
        assert set(filled["status"]) <= {
            FILLED,
            AUTHOR,
            "partly: author to complete",
            "not applicable",
        }
        # a filled item always says what it was filled with
        assert (filled.loc[filled["status"] == FILLED, "value"] != "").all()
        # every link points at a section of the report
        for anchor in set(filled["report section"]) - {""}:
            assert f'id="{esc(anchor)}"' in html, anchor
    tripod = pd.read_csv(folder / "tripod_ai.csv", dtype=str).set_index("item")
    for item in ("10", "11", "12a", "13", "20a", "23a"):
        assert tripod.loc[item, "status"] == FILLED, item
    assert tripod.loc["1", "status"] == AUTHOR  # the title is the authors' to write
    assert "EPV" in tripod.loc["10", "value"] and "Riley" in tripod.loc["10", "value"]
    # Item numbers as published (TRIPOD+AI, BMJ 2024; CLAIM 2024, Radiol Artif Intell 2024).
    assert "qualifications" in tripod.loc["9c", "topic"]
    assert "how and when measured" in tripod.loc["9b", "topic"]
    claim = pd.read_csv(folder / "claim_2024.csv", dtype=str).set_index("item")
    assert claim.loc["13", "topic"] == "Image acquisition protocol"
    assert claim.loc["21", "status"] == FILLED and "Riley" in claim.loc["21", "value"]
    assert "flow diagram" in claim.loc["35", "topic"] and claim.loc["35", "status"] == FILLED
    assert claim.loc["33", "topic"] == "Testing on external data"
    assert "Availability" in claim.loc["43", "topic"] and "funding" in claim.loc["44", "topic"]
    metrics = pd.read_csv(folder / "metrics.csv").set_index("item")
    assert metrics.loc[4, "verdict"] == "yes"  # centres H1 and H2
    assert metrics.loc[27, "verdict"] == "no"  # random split: no external test
    assert metrics.loc[3, "verdict"] == "unknown"  # reference standard: never guessed
    [m] = [c for c in fill_checklists(RunArtifacts(run), ev) if c.name == "metrics"]
    w = m.table.set_index("item")
    yes = w.loc[w["verdict"] == "yes", "weight"].sum()
    no = w.loc[w["verdict"] == "no", "weight"].sum()
    assert m.score["score"] == pytest.approx(100 * yes / (yes + no))
    assert m.score["low"] <= m.score["score"] <= m.score["high"]
    assert "Reporting checklists" in html and "TRIPOD+AI (2024)" in html


def test_print_html_opens_supplements_and_sets_paper():
    html = "<style>@page { size: A4; margin: 1mm; }</style><details><summary>x</summary></details>"
    out = print_html(html, "Letter")
    assert "<details open>" in out and "size: Letter;" in out
    with pytest.raises(Exception, match="paper"):
        print_html(html, "B5")


@pytest.mark.skipif(
    find_chromium() is None or shutil.which("pdftotext") is None,
    reason="needs chromium and pdftotext (poppler-utils)",
)
def test_pdf_holds_every_table1_column_and_supplement(built):
    run, ev, _, _ = built
    pdf = write_pdf(run / "report" / "report.html", run / "report" / "report.pdf")
    text = subprocess.run(
        ["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "report.pdf" not in text  # no printed header/footer with file names
    # Table 1's last columns are printed, not cut off behind a scrollbar
    t1 = ev.table1
    for col in [c for c in t1.columns if str(c).startswith("p (")]:
        for p in t1[col].dropna():
            assert format_p_value(float(p)) in text, (col, p)
    for test_name in ("MWU", "Fisher"):
        assert test_name in text
    # collapsed supplements are printed open
    for caption in (
        "Every model on every set",
        "Tuning results per family",
        "Reporting checklists",
    ):
        assert caption in text, caption
    pages = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
    assert re.search(r"Page size:\s+59[45]\.\d+ x 841\.\d+", pages)  # A4


def test_cli_pdf_without_chromium_fails_in_one_line(built, monkeypatch):
    from typer.testing import CliRunner

    from radfusion.cli import app

    run, _, _, _ = built
    monkeypatch.setattr("radfusion.report.pdf.find_chromium", lambda: None)
    res = CliRunner().invoke(app, ["report", str(run), "--pdf"])
    assert res.exit_code == 2
    assert "install" in res.output and "chromium" in res.output.lower()
    assert "Traceback" not in res.output


# --- sample size and journal figures ----------------------------------------------------------
def test_riley_sample_size_is_stated_with_what_follows(built):
    run, _, _, parsed = built
    folder = run / "report" / "tables"
    riley = pd.read_csv(folder / "sample_size_riley.csv")
    assert {"Required n", "(i) shrinkage >= 0.9", "(iii) risk ± 0.05"} <= set(riley.columns)
    cfg = RunArtifacts(run).config
    n_train, _ = training_events(RunArtifacts(run), cfg)
    # the fake run's training set is far below the criteria for its candidate features
    cand = riley[riley["Predictors"].str.endswith("candidate")]
    assert (cand["Required n"] > n_train).all()
    text = " ".join(" ".join(parsed.text).split())
    assert "Riley et al." in text and "internal test-set estimates are the ones to read" in text
    assert "15% of its maximum" in text
    assert "below Riley et al.'s criterion (i)" in text  # and in the caveats box


def test_every_report_figure_is_written_as_svg_and_300_dpi_png(built):
    from PIL import Image

    run, ev, _, _ = built
    layout = RunArtifacts(run).layout
    assert ev.figures
    for key, info in ev.figures.items():
        svg, png = layout.report_figure(key, ".svg"), layout.report_figure(key, ".png")
        assert svg.stat().st_size > 0 and png.stat().st_size > 0, key
        assert b"<svg" in svg.read_bytes()[:2000], key
        with Image.open(png) as big, Image.open(info.path) as screen:
            assert big.info["dpi"] == pytest.approx((300, 300), abs=0.5), key
            assert big.size[0] == pytest.approx(2 * screen.size[0], abs=2), key


def test_an_evaluation_without_journal_copies_is_named_not_rewritten(built, tmp_path):
    from radfusion.evaluation.figures import journal_paths

    run = tmp_path / "run"
    shutil.copytree(built[0], run)
    figures = run / "evaluation" / "figures"
    old = sorted(p for p in figures.glob("roc_*.png") if not p.stem.endswith(".300dpi"))
    for png in old:
        for p in journal_paths(png).values():
            p.unlink()
    shutil.rmtree(run / "report" / "figures")
    before = {p: p.read_bytes() for p in (run / "evaluation").rglob("*") if p.is_file()}
    html = write_report(run).read_text(encoding="utf-8")
    # a finished evaluation is not redrawn behind its stage record: its files stay as they were
    assert {p: p.read_bytes() for p in (run / "evaluation").rglob("*") if p.is_file()} == before
    layout = RunArtifacts(run).layout
    assert not layout.report_figure("roc_test", ".svg").exists()
    assert layout.report_figure("calibration_test", ".svg").stat().st_size > 0
    assert f"{len(old)} figure(s) have no journal copy" in html and "--from evaluation" in html
