"""Calibration before and after undoing the training prior (radfusion.evaluation.prior).

Reads a finished run folder's per-family predictions (the models' own, uncorrected
probabilities), applies the prior-shift correction the study applies, and compares the
mean probability with the observed rate, the Brier score, calibration-in-the-large (CITL,
ideal 0; a logistic fit with the slope held at 1, so it is dominated by extreme logits when
the slope is far from 1) and the calibration slope (ideal 1) on the validation and test
cases, model by model. AUC and every call are unchanged by design; the
script checks that too.

    python benchmarks/calibration_shift.py RUN_DIR [--out table.csv]

RUN_DIR: e.g. a ``radfusion demo --reproducibility fast`` output's ``run`` folder, or a
BUSI study run (``benchmarks/busi_study.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from _common import result_line
from radfusion.config import StudyConfig
from radfusion.evaluation.prior import run_prior_shifts, shift_predictions
from radfusion.layout import RunLayout
from radfusion.stats import auc_or_nan, youden_threshold
from radfusion.stats.calibration import calibration_fit


def _raw_predictions(layout: RunLayout) -> pd.DataFrame:
    parts = [pd.read_parquet(layout.family_predictions(f)) for f in layout.families()]
    parts = [p for p in parts if len(p)]
    cols = ["case_id", "split", "label", "family", "model", "classifier", "probability"]
    return pd.concat([p[cols] for p in parts], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, help="write the per-model table as CSV")
    ap.add_argument("--source", default=None, help="threshold split (default: the run's)")
    args = ap.parse_args()
    layout = RunLayout(args.run)
    cfg = StudyConfig.from_yaml(layout.config)
    raw = _raw_predictions(layout)
    shifts = run_prior_shifts(layout, cfg, raw)
    fixed = shift_predictions(raw, shifts)
    source = args.source or cfg.evaluation.threshold_source
    rows = []
    changed_calls = 0
    for model, r in raw.groupby("model", sort=False):
        c = fixed[fixed["model"] == model]
        src = r["split"] == source
        t_raw = youden_threshold(r.loc[src, "label"], r.loc[src, "probability"])
        t_new = youden_threshold(c.loc[src, "label"], c.loc[src, "probability"])
        changed_calls += int(
            ((r["probability"] >= t_raw).to_numpy() != (c["probability"] >= t_new).to_numpy()).sum()
        )
        for split in ("val", "test"):
            m = (r["split"] == split).to_numpy()
            y = r["label"].to_numpy()[m]
            if len(y) == 0:
                continue
            before = calibration_fit(y, r["probability"].to_numpy()[m])
            after = calibration_fit(y, c["probability"].to_numpy()[m])
            rows.append(
                {
                    "model": model,
                    "family": r["family"].iloc[0],
                    "split": split,
                    "n": before.n,
                    "events": before.events,
                    "trained_prior": shifts[model]["trained_prior"],
                    "true_prior": shifts[model]["true_prior"],
                    "log_odds_shift": shifts[model]["log_odds"],
                    "auc_before": auc_or_nan(y, r["probability"].to_numpy()[m]),
                    "auc_after": auc_or_nan(y, c["probability"].to_numpy()[m]),
                    "observed_rate": float(np.mean(y)),
                    "mean_p_before": float(np.mean(r["probability"].to_numpy()[m])),
                    "mean_p_after": float(np.mean(c["probability"].to_numpy()[m])),
                    "brier_before": before.brier,
                    "brier_after": after.brier,
                    "citl_before": before.intercept.value,
                    "citl_after": after.intercept.value,
                    "slope_before": before.slope.value,
                    "slope_after": after.slope.value,
                    "p98_before": int((r["probability"].to_numpy()[m] >= 0.98).sum()),
                    "p98_after": int((c["probability"].to_numpy()[m] >= 0.98).sum()),
                }
            )
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        show = table[
            [
                "model",
                "split",
                "log_odds_shift",
                "observed_rate",
                "mean_p_before",
                "mean_p_after",
                "brier_before",
                "brier_after",
                "citl_before",
                "citl_after",
                "slope_before",
                "slope_after",
            ]
        ]
        print(show.round(3).to_string(index=False))
    if args.out:
        table.to_csv(args.out, index=False)
    test = table[(table["split"] == "test") & (table["log_odds_shift"] != 0)]
    auc_moved = float(np.nanmax(np.abs(table["auc_after"] - table["auc_before"])))
    print(
        result_line(
            run=args.run.name if args.run.name != "run" else args.run.parent.name,
            pi_true=float(test["true_prior"].iloc[0]) if len(test) else float("nan"),
            shifted_models=len(test),
            test_brier_median_before=float(test["brier_before"].median()),
            test_brier_median_after=float(test["brier_after"].median()),
            test_brier_improved=int((test["brier_after"] < test["brier_before"]).sum()),
            test_mean_p_gap_median_before=float(
                (test["mean_p_before"] - test["observed_rate"]).abs().median()
            ),
            test_mean_p_gap_median_after=float(
                (test["mean_p_after"] - test["observed_rate"]).abs().median()
            ),
            test_abs_citl_median_before=float(test["citl_before"].abs().median()),
            test_abs_citl_median_after=float(test["citl_after"].abs().median()),
            test_slope_median=float(test["slope_after"].median()),
            test_p98_before=int(test["p98_before"].sum()),
            test_p98_after=int(test["p98_after"].sum()),
            calls_changed=changed_calls,
            max_auc_change=auc_moved,
        )
    )


if __name__ == "__main__":
    main()
