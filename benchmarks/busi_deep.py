"""Benchmark: the 1ch and 2ch deep arms trained end to end on real ultrasound (BUSI).

647 breast lesions (437 benign, 210 malignant; Al-Dhabyani et al., Data in Brief
2020). Split 70/15/15 stratified by label and grouped by ``group_id`` (near-duplicate
views of one lesion never straddle splits) with ``radfusion.data.splits.make_splits``.
Both arms run through :func:`radfusion.deep.run_deep_arm` exactly as the pipeline
calls it, with CPU-feasible settings (default ResNet-18 at 128 px, 12 epochs, random
initialisation: no ImageNet weights are available offline), class-weighted loss and
light random transforms. Checkpoint selection on validation AUC; the test split is
only scored.

    python benchmarks/busi_deep.py                       # about 10-25 min on 2 CPU cores
    python benchmarks/busi_deep.py --depth 101 --size 500 --epochs 50 --device cuda

The run folders (inputs cache, checkpoints, features, Grad-CAM) go to ``--out``
(default ``runs/bench/busi_deep``); an interrupted benchmark resumes there.
Last line: ``RESULT auc_val_1ch=... auc_test_1ch=... auc_val_2ch=... auc_test_2ch=...
minutes=...``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from radfusion.config import DataConfig, DeepConfig, SplitConfig, StudyConfig
from radfusion.data import load_cohort
from radfusion.data.splits import make_splits
from radfusion.deep import run_deep_arm

try:  # run as a script from the repository: benchmarks/ is on sys.path
    from _common import REPO, busi_manifest, result_line
except ImportError:  # pragma: no cover
    from benchmarks._common import REPO, busi_manifest, result_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=18, choices=[18, 34, 50, 101, 152])
    ap.add_argument("--size", type=int, default=128, help="network input side (px)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--arms", default="1ch,2ch")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "busi_deep")
    ap.add_argument("--fresh", action="store_true", help="delete --out first")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)

    cohort = load_cohort(busi_manifest(), DataConfig(group_column="group_id"))
    cfg = StudyConfig(
        name="busi-deep-benchmark",
        seed=args.seed,
        data=DataConfig(group_column="group_id"),
        split=SplitConfig(),
        deep=DeepConfig(
            depth=args.depth,
            image_size=args.size,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            patience=args.patience,
            device=args.device,
            random_transforms=True,
            gradcam_cases=4,
        ),
    )
    assignment = make_splits(cohort, cfg.split, cfg.seed)[0]
    split = assignment.split
    counts = assignment.counts(pd.Series(cohort.labels, index=cohort.case_ids))
    print(f"BUSI: {len(cohort)} images, {cohort.table['group_id'].nunique()} lesion groups")
    print("split (rows) x label (columns):\n" + counts.to_string())
    print(
        f"settings: ResNet{args.depth} @ {args.size}px, {args.epochs} epochs, batch "
        f"{args.batch_size}, lr {args.lr}, AdamW + cosine, weighted loss, random transforms, "
        f"torch threads {torch.get_num_threads()}"
    )

    figures: dict[str, object] = {}
    t_all = time.perf_counter()
    cache = args.out / "cache"
    for arm in args.arms.split(","):
        t0 = time.perf_counter()
        res = run_deep_arm(
            cohort,
            split,
            cfg,
            arm,
            args.out / arm,
            None,
            progress=False,
            cache_dir=cache,
            on_epoch_end=lambda r, arm=arm: print(
                f"  {arm} epoch {r.epoch}: loss {r.train_loss:.3f}, train AUC {r.train_auc:.3f}, "
                f"val AUC {r.val_auc:.3f}, {r.images_per_s:.1f} img/s{' *' if r.best else ''}",
                flush=True,
            ),
        )
        minutes = (time.perf_counter() - t0) / 60
        pred = res.predictions
        aucs = {s: roc_auc_score(g["label"], g["probability"]) for s, g in pred.groupby("split")}
        print(
            f"{res.model_name}: best epoch {res.best_epoch}/{len(res.history)} "
            f"({res.selection}), AUC train {aucs['train']:.3f}, val {aucs['val']:.3f}, "
            f"test {aucs['test']:.3f}; {minutes:.1f} min; "
            f"{res.history['images_per_s'].median():.1f} training img/s"
        )
        figures[f"auc_val_{arm}"] = float(aucs["val"])
        figures[f"auc_test_{arm}"] = float(aucs["test"])
    figures["minutes"] = (time.perf_counter() - t_all) / 60
    print(result_line(**figures))


if __name__ == "__main__":
    main()
