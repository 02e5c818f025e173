"""Evaluation of a run folder: thresholds, metrics, DeLong matrices, tables and figures.

``make_fake_run`` writes a small synthetic run folder following the pipeline's contract
(config, fingerprint, versions, cases with tiny images, predictions of six families, selection
records, histories ...); test_report.py reuses it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from PIL import Image
from sklearn.metrics import roc_auc_score

from radfusion.config import load_preset
from radfusion.errors import ConfigError, RadfusionError
from radfusion.evaluation import (
    FAMILY_COLORS,
    choose_thresholds,
    delong_matrices,
    evaluate_run,
    load_evaluation,
    main_models,
    metrics_table,
    model_colors,
    validate_predictions,
)
from radfusion.evaluation.figures import plot_roc
from radfusion.stats import delong_test

# family -> (model name per classifier, selected classifier, signal strength)
FAKE_FAMILIES = {
    "radiomics": (["LR", "SVM", "KNN", "RF", "MLP", "XGBoost", "LightGBM"], "LR", 1.6),
    "1ch": (["ResNet"], "ResNet", 0.9),
    "2ch": (["ResNet"], "ResNet", 1.3),
    "merged1": (["LR", "XGBoost", "LightGBM"], "XGBoost", 1.8),
    "merged2": (["LR", "XGBoost", "LightGBM"], "LightGBM", 2.0),
    "clinical": (["LR"], "LR", 1.2),
}
FAMILY_PREFIX = {
    "radiomics": "Radiomics",
    "1ch": "1ch",
    "2ch": "2ch",
    "merged1": "Merged1",
    "merged2": "Merged2",
}


def _model_name(family: str, clf: str) -> str:
    if family == "clinical":
        return "Clinical+imaging"
    if family in ("1ch", "2ch"):
        return f"{family}_ResNet18"
    return f"{FAMILY_PREFIX[family]}-{clf}"


def make_fake_run(
    root: Path,
    n: int = 60,
    seed: int = 0,
    families: tuple[str, ...] = tuple(FAKE_FAMILIES),
    image_side: int = 64,
) -> Path:
    """A synthetic run folder: label-correlated probabilities, tiny PNG images and masks."""
    rng = np.random.default_rng(seed)
    run = root / "run"
    (run / "stages").mkdir(parents=True)
    cfg = load_preset("demo")
    cfg.name = "fake-study"
    (run / "config.yaml").write_text(cfg.to_yaml())

    n_pos = round(0.4 * n)
    labels = np.array([1] * n_pos + [0] * (n - n_pos))
    split = np.empty(n, dtype=object)
    for lab in (0, 1):
        idx = np.flatnonzero(labels == lab)
        k = len(idx)
        n_val = n_test = round(0.15 * k)
        split[idx] = ["train"] * (k - n_val - n_test) + ["val"] * n_val + ["test"] * n_test
    rows = []
    for i in range(n):
        cid = f"case{i:03d}"
        img = rng.normal(110, 25, (image_side, image_side + 16)).clip(0, 255)
        yy, xx = np.mgrid[:image_side, : image_side + 16]
        r = 14 if labels[i] else 10
        m = ((yy - image_side / 2) / r) ** 2 + ((xx - (image_side + 16) / 2) / (r + 4)) ** 2 <= 1
        img[m] = rng.normal(60, 10, m.sum()).clip(0, 255)
        ip, mp = run / "images" / f"{cid}.png", run / "masks" / f"{cid}.png"
        ip.parent.mkdir(exist_ok=True)
        mp.parent.mkdir(exist_ok=True)
        Image.fromarray(img.astype(np.uint8)).save(ip)
        Image.fromarray((m * 255).astype(np.uint8)).save(mp)
        rows.append(
            {
                "case_id": cid,
                "label": int(labels[i]),
                "split": split[i],
                "group": f"p{i:03d}",
                "center": "H1" if i % 3 else "H2",
                "patient_id": f"p{i:03d}",
                "age": int(rng.normal(55 + 4 * labels[i], 12)),
                "calcium": round(float(rng.normal(2.7 + 0.3 * labels[i], 0.2)), 2),
                "phosphate": round(float(rng.lognormal(np.log(0.55), 0.3)), 2),
                "ipth": round(float(rng.lognormal(np.log(17 + 10 * labels[i]), 0.5)), 1),
                "sex": "M" if rng.random() < 0.25 + 0.2 * labels[i] else "F",
                "image": str(ip.resolve()),
                "mask": str(mp.resolve()),
            }
        )
    cases = pd.DataFrame(rows)
    cases.to_csv(run / "cases.csv", index=False)

    pred_rows = []
    for fam in families:
        clfs, chosen, strength = FAKE_FAMILIES[fam]
        for clf in clfs:
            noise_scale = 1.0 + 0.3 * rng.random()
            logit = 0.6 * strength * (2 * labels - 1) + rng.normal(0, noise_scale, n)
            logit = logit + np.where(split == "train", 0.4 * (2 * labels - 1), 0.0)
            prob = 1 / (1 + np.exp(-logit))
            for i in range(n):
                pred_rows.append(
                    {
                        "case_id": f"case{i:03d}",
                        "split": split[i],
                        "label": int(labels[i]),
                        "family": fam,
                        "model": _model_name(fam, clf),
                        "classifier": clf,
                        "probability": float(prob[i]),
                        "selected": clf == chosen,
                    }
                )
    pd.DataFrame(pred_rows).to_parquet(run / "predictions.parquet", index=False)

    per_split = {
        s: {str(k): int(((split == s) & (labels == k)).sum()) for k in (0, 1)}
        for s in ("train", "val", "test")
    }
    (run / "fingerprint.json").write_text(
        json.dumps(
            {
                "manifest": str(root / "manifest.csv"),
                "manifest_sha256": "ab" * 32,
                "n_cases": n,
                "cases_per_label": {"0": int((labels == 0).sum()), "1": int(labels.sum())},
                "cases_per_split": per_split,
                "created": "2026-01-01T00:00:00+00:00",
            }
        )
    )
    (run / "versions.json").write_text(
        json.dumps(
            {
                "python": "3.11.9",
                "radfusion": "0.1.0",
                "numpy": "2.1",
                "scikit-learn": "1.9",
                "torch": "2.13",
                "monai": "1.6",
                "pyradiomics": "3.1.4",
                "seed": 0,
                "platform": "Linux-x86_64",
            }
        )
    )
    feats = [f"original_glcm_Feature{j}" for j in range(12)]
    cs = np.logspace(-2, 1, 8).tolist()
    coefs = [[float(np.tanh(c) * np.sin(j + 1)) for j in range(12)] for c in cs]
    for fam in ("radiomics", "merged2"):  # the deep arms have no selection record
        if fam not in families:
            continue
        (run / "stages" / f"selection_{fam}.json").write_text(
            json.dumps(
                {
                    "counts": {
                        "input": 567 if fam == "radiomics" else 512,
                        "icc": None,
                        "spearman": 40,
                        "lasso": 12,
                    },
                    "icc_skipped": "no mask_reader2 column",
                    "kept": feats,
                    "coefficients": dict(zip(feats, coefs[-3], strict=True)),
                    "lasso_path": {"Cs": cs, "coefs": coefs, "features": feats},
                    "C": cs[-3],
                }
            )
        )
    if "radiomics" in families:
        imp_dir = run / "models" / "radiomics" / "LR"
        imp_dir.mkdir(parents=True)
        pd.DataFrame({"feature": feats, "importance": np.linspace(-1, 1, 12)}).to_csv(
            imp_dir / "importance.csv", index=False
        )
        pd.DataFrame(
            {
                "classifier": FAKE_FAMILIES["radiomics"][0],
                "cv_auc": np.linspace(0.7, 0.9, 7).round(3),
                "best_params": ['{"C": 1.0}'] * 7,
                "fit_seconds": np.ones(7),
            }
        ).to_csv(run / "models" / "radiomics" / "cv_results.csv", index=False)
    for arm in ("1ch", "2ch"):
        if arm not in families:
            continue
        d = run / "deep" / arm
        (d / "gradcam").mkdir(parents=True)
        ep = np.arange(1, 7)
        pd.DataFrame(
            {
                "epoch": ep,
                "train_loss": 0.7 / ep + (0.1 if arm == "1ch" else 0.0),
                "train_auc": 1 - 0.3 / ep,
                "val_auc": 0.6 + (0.02 if arm == "1ch" else 0.04) * ep,
            }
        ).to_csv(d / "history.csv", index=False)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            d / "gradcam" / "case050.png"
        )
    if "clinical" in families:
        (run / "clinical").mkdir()
        pd.DataFrame(
            {
                "term": ["intercept", "age", "calcium", "imaging_score"],
                "coef": [-3.0, 0.01, 0.9, 2.5],
                "odds_ratio": np.exp([-3.0, 0.01, 0.9, 2.5]),
                "ci_low": [0.01, 0.98, 1.1, 5.0],
                "ci_high": [0.2, 1.04, 5.0, 30.0],
                "p_value": [0.001, 0.5, 0.03, 0.00001],
            }
        ).to_csv(run / "clinical" / "coefficients.csv", index=False)
    return run


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("ev"))


@pytest.fixture(scope="module")
def preds(fake_run: Path) -> pd.DataFrame:
    return validate_predictions(pd.read_parquet(fake_run / "predictions.parquet"))


def test_thresholds_never_depend_on_test_predictions(preds):
    cfg = load_preset("demo").evaluation
    for source in ("train", "val"):
        cfg.threshold_source = source
        base = choose_thresholds(preds, cfg)
        shaken = preds.copy()
        test = shaken["split"] == "test"
        shaken.loc[test, "probability"] = np.random.default_rng(1).random(int(test.sum()))
        shaken.loc[test, "label"] = 1 - shaken.loc[test, "label"]
        assert choose_thresholds(shaken, cfg) == base
        # ...while the source split does drive them
        moved = preds.copy()
        src = moved["split"] == source
        moved.loc[src, "probability"] = moved.loc[src, "probability"] ** 3
        assert choose_thresholds(moved, cfg) != base
    cfg.threshold = "fixed"
    cfg.fixed_threshold = 0.3
    assert set(choose_thresholds(preds, cfg).values()) == {0.3}


def test_youden_on_a_split_with_one_class_is_refused(preds):
    cfg = load_preset("demo").evaluation
    cfg.threshold_source = "val"
    one_class = preds[~((preds["split"] == "val") & (preds["label"] == 1))]
    with pytest.raises(ConfigError, match="val split"):
        choose_thresholds(one_class, cfg)


def test_metrics_on_a_hand_example():
    # 8 test cases; at threshold 0.5: TP 3, FN 1, TN 3, FP 1
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1]
    rows = [
        {
            "case_id": f"c{i}",
            "split": "test",
            "label": y[i],
            "family": "radiomics",
            "model": "Radiomics-LR",
            "classifier": "LR",
            "probability": p[i],
            "selected": True,
        }
        for i in range(8)
    ]
    cfg = load_preset("demo").evaluation
    m = metrics_table(validate_predictions(pd.DataFrame(rows)), {"Radiomics-LR": 0.5}, cfg)
    r = m.iloc[0]
    assert (r["tp"], r["fn"], r["tn"], r["fp"]) == (3, 1, 3, 1)
    assert r["acc"] == pytest.approx(6 / 8)
    assert r["sen"] == pytest.approx(3 / 4) and r["spe"] == pytest.approx(3 / 4)
    assert r["ppv"] == pytest.approx(3 / 4) and r["npv"] == pytest.approx(3 / 4)
    assert r["f1"] == pytest.approx(0.75)
    # 16 positive-negative pairs; misordered: (0.6, 0.7), (0.3, 0.7), (0.3, 0.4)
    assert r["auc"] == pytest.approx(13 / 16)
    assert r["auc_low"] < r["auc"] < r["auc_high"]
    assert r["brier"] == pytest.approx(np.mean((np.array(p) - np.array(y)) ** 2))
    assert (r["n"], r["n_pos"], r["threshold"]) == (8, 4, 0.5)


def test_metrics_table_covers_every_model_and_split(preds):
    cfg = load_preset("demo").evaluation
    thr = choose_thresholds(preds, cfg)
    m = metrics_table(preds, thr, cfg)
    assert len(m) == preds["model"].nunique() * 3
    one = m[(m["model"] == "Radiomics-SVM") & (m["split"] == "test")].iloc[0]
    sub = preds[(preds["model"] == "Radiomics-SVM") & (preds["split"] == "test")]
    assert one["auc"] == pytest.approx(roc_auc_score(sub["label"], sub["probability"]))
    assert one["n"] == len(sub)


def test_delong_matrix_symmetric_with_unit_diagonal(preds):
    mains = main_models(preds)
    assert mains == [
        "Radiomics-LR",
        "1ch_ResNet18",
        "2ch_ResNet18",
        "Merged1-XGBoost",
        "Merged2-LightGBM",
        "Clinical+imaging",
    ]
    mats = delong_matrices(preds, mains)
    assert set(mats) == {"train", "val", "test"}
    mat = mats["test"].to_numpy()
    assert np.allclose(mat, mat.T) and np.allclose(np.diag(mat), 1.0)
    assert ((mat >= 0) & (mat <= 1)).all()
    t = preds[preds["split"] == "test"]
    a = t[t["model"] == mains[0]].set_index("case_id")
    b = t[t["model"] == mains[3]].set_index("case_id").reindex(a.index)
    p = delong_test(a["label"], a["probability"], b["probability"]).p_value
    assert mats["test"].loc[mains[0], mains[3]] == pytest.approx(p)


def test_validation_refuses_two_selected_models(preds):
    bad = preds.copy()
    bad.loc[bad["model"] == "Radiomics-SVM", "selected"] = True
    with pytest.raises(RadfusionError, match="exactly one selected"):
        validate_predictions(bad)
    bad = preds.copy()
    bad.loc[0, "probability"] = 1.5
    with pytest.raises(RadfusionError, match="probability"):
        validate_predictions(bad)


def test_same_model_same_colour_in_two_figures(preds):
    colors = model_colors(preds)
    test = preds[preds["split"] == "test"]
    mains = main_models(preds)
    radiomics = [m for m in colors if m.startswith("Radiomics-")]
    fig4 = plot_roc(test, mains, colors)
    fig3 = plot_roc(test, radiomics, colors, highlight="Radiomics-LR")

    def line_colors(fig):
        ax = fig.axes[0]
        return {ln.get_label().split(":")[0]: to_hex(ln.get_color()) for ln in ax.get_lines()}

    c4, c3 = line_colors(fig4), line_colors(fig3)
    assert c4["Radiomics-LR"] == c3["Radiomics-LR"] == FAMILY_COLORS["radiomics"]
    assert len(set(c3.values())) == len(c3)  # distinct within Figure 3 (incl. chance line)
    assert len(set(c4.values())) == len(c4)


def test_evaluate_run_writes_tables_and_figures(fake_run, tmp_path):
    res = evaluate_run(fake_run)
    out = fake_run / "evaluation"
    for name in (
        "metrics.csv",
        "thresholds.json",
        "table1.csv",
        "table2.csv",
        "calibration.csv",
        "decision_curve.csv",
        "evaluation.json",
    ):
        assert (out / name).is_file(), name
    for split in ("train", "val", "test"):
        assert (out / f"delong_{split}.csv").is_file()
        rad = pd.read_csv(out / f"delong_radiomics_{split}.csv", index_col=0)
        assert rad.shape == (7, 7)
        for key in ("roc", "radar", "delong", "roc_radiomics", "calibration", "decision_curve"):
            assert (out / "figures" / f"{key}_{split}.png").is_file(), key
    for key in ("lasso_radiomics", "lasso_merged2", "importance_radiomics", "training_history"):
        assert (out / "figures" / f"{key}.png").is_file(), key
    with Image.open(out / "figures" / "roc_test.png") as im:
        assert im.width > 500
    t2 = pd.read_csv(out / "table2.csv")
    assert len(t2) == 6 * 3 and t2["AUC (95% CI)"].str.contains("–").all()
    t1 = pd.read_csv(out / "table1.csv")
    assert "Pathological subtype" in set(t1["variable"]) and "age" in set(t1["variable"])
    assert {"PA", "APT/PC"} <= set(t1["level"].dropna())
    assert json.loads((out / "thresholds.json").read_text())["source_split"] == "val"
    # the stored evaluation reads back identically, and goes stale with new predictions
    back = load_evaluation(fake_run)
    assert back is not None and back.thresholds == res.thresholds
    assert back.main_models == res.main_models
    pd.testing.assert_frame_equal(
        back.delong["main"]["test"], res.delong["main"]["test"], check_names=False
    )
    copy = shutil.copytree(fake_run, tmp_path / "copy")
    assert load_evaluation(copy) is not None
    changed = pd.read_parquet(copy / "predictions.parquet")
    changed.loc[0, "probability"] = 0.5 * changed.loc[0, "probability"]
    changed.to_parquet(copy / "predictions.parquet", index=False)
    assert load_evaluation(copy) is None  # stale: the report will recompute it


def test_partial_run_without_deep_arms(tmp_path):
    run = make_fake_run(tmp_path, n=40, families=("radiomics", "clinical"))
    res = evaluate_run(run)
    assert res.main_models == ["Radiomics-LR", "Clinical+imaging"]
    assert "training_history" not in res.figures
    assert any("Figure S2 skipped" in n for n in res.notes)
