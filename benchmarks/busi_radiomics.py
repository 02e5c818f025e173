"""The radiomics arm on real data: BUSI, grouped stratified 5-fold cross-validation.

For each fold (groups = BUSI's ``group_id`` near-duplicate clusters, so no cluster
straddles train and test): PyRadiomics features of the paper preset (500x500 crop,
567 features), selection (Spearman 0.9, LASSO; no ICC: BUSI has one delineation)
and the seven classifiers, all fitted on the training folds only; test-fold
probabilities are pooled across folds.

Prints fold AUCs, the pooled AUC and the number of features kept per fold for each
classifier. Floor (issue 3): LR pooled AUC >= 0.95.

    python benchmarks/busi_radiomics.py [--n-iter 10] [--cv 3] [--classifiers LR,SVM,...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, busi_manifest, peak_rss_mb, result_line
from radfusion.config import SplitConfig, load_preset
from radfusion.data import load_cohort
from radfusion.data.splits import make_splits
from radfusion.models import fit_zoo
from radfusion.radiomics import extract_radiomics
from radfusion.selection import selection_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n-iter", type=int, default=10, help="search draws per classifier")
    ap.add_argument("--cv", type=int, default=3, help="inner CV folds for tuning")
    ap.add_argument("--size", type=int, default=500, help="crop size (paper: 500)")
    ap.add_argument("--classifiers", default="LR,SVM,KNN,RF,MLP,XGBoost,LightGBM")
    # shares the per-case cache of busi_study.py: identical crops are extracted once
    ap.add_argument("--cache", type=Path, default=REPO / "runs" / "busi" / "radiomics" / "cache")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--scaler",
        default="yeo-johnson",
        choices=["zscore", "yeo-johnson"],
        help="feature standardisation (paper: zscore)",
    )
    args = ap.parse_args()

    cfg = load_preset("paper")
    cfg.data.group_column = "group_id"
    cfg.data.clinical.numeric = []
    cfg.data.clinical.categorical = []
    cfg.preprocess.size = args.size
    # k-fold CV: each fold is the test set once; no validation set is needed here
    cfg.split = SplitConfig(method="kfold", n_splits=args.folds, train=0.85, val=0.0, test=0.15)
    cfg.models.n_iter = args.n_iter
    cfg.models.cv = args.cv
    cfg.models.n_jobs = 2
    cfg.selection.scaler = args.scaler
    names = args.classifiers.split(",")

    cohort = load_cohort(busi_manifest(), cfg.data)
    t0 = time.perf_counter()
    res = extract_radiomics(cohort.cases(), cfg, args.cache, progress=True)
    t_extract = time.perf_counter() - t0
    X = res.features
    labels = pd.Series(cohort.labels, index=cohort.case_ids)
    groups = pd.Series(cohort.groups, index=cohort.case_ids)
    print(
        f"extraction: {len(X)} cases x {X.shape[1]} features in {t_extract:.0f} s "
        f"({res.n_cached} cached)"
    )

    pooled: dict[str, list[pd.Series]] = {n: [] for n in names}
    fold_auc: dict[str, list[float]] = {n: [] for n in names}
    kept: list[int] = []
    t1 = time.perf_counter()
    for a in make_splits(cohort, cfg.split, seed=args.seed):
        tr, te = a.ids("train"), a.ids("test")
        zoo = fit_zoo(
            X.loc[tr],
            labels[tr].to_numpy(),
            groups[tr].to_numpy(),
            names=names,
            selection_cfg=cfg.selection,
            models_cfg=cfg.models,
            seed=args.seed,
        )
        rep = selection_report(next(iter(zoo.values())).pipeline)
        kept.append(int(rep["n_features"]["lasso"]))
        for n, fm in zoo.items():
            p = pd.Series(fm.positive_proba(X.loc[te]), index=te)
            pooled[n].append(p)
            fold_auc[n].append(roc_auc_score(labels[te], p))
        print(
            f"fold {a.name}: train {len(tr)} test {len(te)}, kept {kept[-1]} features; "
            + ", ".join(f"{n} {fold_auc[n][-1]:.3f}" for n in names),
            flush=True,
        )
    t_models = time.perf_counter() - t1

    print("\nclassifier  pooled AUC  fold AUCs")
    summary = {}
    for n in names:
        p = pd.concat(pooled[n])
        auc = roc_auc_score(labels[p.index], p)
        summary[n] = auc
        folds = " ".join(f"{v:.3f}" for v in fold_auc[n])
        print(f"{n:10s}  {auc:.3f}       {folds}")
    print(f"features kept per fold (567 -> LASSO): {kept}")
    print(
        f"extraction {t_extract:.0f} s, selection + zoo {t_models:.0f} s, "
        f"peak memory {peak_rss_mb():.0f} MiB (children {peak_rss_mb(True):.0f} MiB)"
    )
    lr = summary.get("LR", float("nan"))
    print("floor LR pooled AUC >= 0.95:", "met" if lr >= 0.95 else "NOT met")
    print(
        result_line(
            lr_pooled_auc=lr,
            **{f"{n.lower()}_pooled_auc": v for n, v in summary.items() if n != "LR"},
            kept_median=float(np.median(kept)),
            extract_s=t_extract,
            models_s=t_models,
        )
    )


if __name__ == "__main__":
    main()
