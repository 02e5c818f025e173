"""Benchmark: the 1ch and 2ch deep arms trained end to end on real ultrasound (BUSI).

647 breast lesions (437 benign, 210 malignant; Al-Dhabyani et al., Data in Brief
2020). Split 70/15/15 stratified by label and grouped by ``group_id`` (near-duplicate
views of one lesion never straddle splits) with ``radfusion.data.splits.make_splits``.
Both arms run through :func:`radfusion.deep.run_deep_arm` exactly as the pipeline
calls it. Checkpoint selection on validation AUC; the test split is only scored.

Default: CPU-feasible settings (ResNet-18 at 128 px, 12 epochs, random initialisation:
no ImageNet weights are available offline), class-weighted loss and light random
transforms, no planned copies.

``--preset paper``: the paper preset's deep and augmentation settings (ResNet101 at 500
px, 50 epochs with early stopping after 10 without validation-AUC improvement, batch
16, AdamW 1e-4 + cosine, AMP, the training minority expanded tenfold with flips and
noise, ``input_path: auto``); options given explicitly override them.

    python benchmarks/busi_deep.py                       # about 10-25 min on 2 CPU cores
    python benchmarks/busi_deep.py --preset paper --device cuda
    python benchmarks/busi_deep.py --preset paper --device cuda --data ../shared/data/busi-jpeg90

The run folders (inputs cache, checkpoints, features, Grad-CAM) go to ``--out``
(default ``runs/bench/busi_deep``); an interrupted benchmark resumes there (``--fresh``
starts over, and then every arm's wall time includes decoding its inputs).
Last line: ``RESULT auc_val_1ch=... auc_test_1ch=... minutes_1ch=... auc_val_2ch=...
auc_test_2ch=... minutes_2ch=... minutes=...``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from radfusion.config import (
    AugmentConfig,
    DataConfig,
    DeepConfig,
    SplitConfig,
    StudyConfig,
    load_preset,
)
from radfusion.data import load_cohort
from radfusion.data.splits import make_splits
from radfusion.deep import run_deep_arm
from radfusion.preprocessing import plan_augmentation

try:  # run as a script from the repository: benchmarks/ is on sys.path
    from _common import REPO, busi_manifest, result_line
except ImportError:  # pragma: no cover
    from benchmarks._common import REPO, busi_manifest, result_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["none", "paper"], default="none")
    ap.add_argument("--depth", type=int, choices=[18, 34, 50, 101, 152])
    ap.add_argument("--size", type=int, help="network input side (px)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--patience", type=int)
    ap.add_argument("--input-path", choices=["auto", "device", "loader"])
    ap.add_argument("--deterministic", choices=["true", "false"])
    ap.add_argument("--compile", action="store_true", help="deep.compile: true")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--arms", default="1ch,2ch")
    ap.add_argument("--data", type=Path, help="BUSI folder with manifest.csv (default: shared)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "busi_deep")
    ap.add_argument("--fresh", action="store_true", help="delete --out first")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)

    manifest = args.data / "manifest.csv" if args.data else busi_manifest()
    if not manifest.is_file():
        sys.exit(f"no manifest.csv in {args.data}")
    data = DataConfig(group_column="group_id")
    cohort = load_cohort(manifest, data)
    if args.preset == "paper":
        base = load_preset("paper")
        deep = base.deep.model_dump()
        augment = base.augment
    else:
        deep = dict(
            depth=18,
            image_size=128,
            epochs=12,
            batch_size=32,
            lr=1e-3,
            patience=6,
            random_transforms=True,
            gradcam_cases=4,
        )
        augment = AugmentConfig(enabled=False)
    for key, value in (
        ("depth", args.depth),
        ("image_size", args.size),
        ("epochs", args.epochs),
        ("batch_size", args.batch_size),
        ("lr", args.lr),
        ("patience", args.patience),
        ("input_path", args.input_path),
        ("deterministic", None if args.deterministic is None else args.deterministic == "true"),
    ):
        if value is not None:
            deep[key] = value
    deep["device"] = args.device
    deep["compile"] = args.compile or bool(deep.get("compile"))
    cfg = StudyConfig(
        name="busi-deep-benchmark",
        seed=args.seed,
        data=data,
        split=SplitConfig(),
        augment=augment,
        deep=DeepConfig(**deep),
    )
    d = cfg.deep
    assignment = make_splits(cohort, cfg.split, cfg.seed)[0]
    split = assignment.split
    labels = pd.Series(cohort.labels, index=cohort.case_ids)
    counts = assignment.counts(labels)
    table = pd.DataFrame(
        {
            "case_id": cohort.case_ids,
            "label": cohort.labels,
            "split": split.reindex(cohort.case_ids).to_numpy(),
            "group": cohort.table["group_id"].astype(str).to_numpy(),
        }
    )
    plan = plan_augmentation(table, cfg.augment, cfg.seed)
    n_train = int((table["split"] == "train").sum()) + int((plan["split"] == "train").sum())
    print(
        f"BUSI ({manifest.parent.name}): {len(cohort)} images, "
        f"{cohort.table['group_id'].nunique()} lesion groups"
    )
    print("split (rows) x label (columns):\n" + counts.to_string())
    print(
        f"settings ({args.preset}): ResNet{d.depth} @ {d.image_size}px, {d.epochs} epochs "
        f"(patience {d.patience}), batch {d.batch_size}, {d.optimizer} lr {d.lr} + {d.scheduler}, "
        f"{d.imbalance}, {len(plan)} planned copies ({n_train} training images per epoch), "
        f"random transforms {d.random_transforms}, input_path {d.input_path}, deterministic "
        f"{d.deterministic}, amp {d.amp}, compile {d.compile}, device {d.device}"
        + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "")
        + f", torch {torch.__version__}, threads {torch.get_num_threads()}"
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
            plan if len(plan) else None,
            progress=False,
            cache_dir=cache,
            on_epoch_end=lambda r, arm=arm: print(
                f"  {arm} epoch {r.epoch}: loss {r.train_loss:.3f}, train AUC {r.train_auc:.3f}, "
                f"val AUC {r.val_auc:.3f}, {r.images_per_s:.1f} img/s, {r.seconds:.1f} s"
                f"{' *' if r.best else ''}",
                flush=True,
            ),
        )
        minutes = (time.perf_counter() - t0) / 60
        pred = res.predictions
        aucs = {s: roc_auc_score(g["label"], g["probability"]) for s, g in pred.groupby("split")}
        h = res.history
        print(
            f"{res.model_name}: best epoch {res.best_epoch}/{len(h)} ({res.selection}), AUC "
            f"train {aucs['train']:.3f}, val {aucs['val']:.3f}, test {aucs['test']:.3f}; "
            f"{minutes:.2f} min wall; median epoch {h['seconds'].median():.1f} s, "
            f"{h['images_per_s'].median():.1f} training img/s"
        )
        figures[f"auc_val_{arm}"] = float(aucs["val"])
        figures[f"auc_test_{arm}"] = float(aucs["test"])
        figures[f"minutes_{arm}"] = float(minutes)
        figures[f"epochs_{arm}"] = len(h)
        figures[f"train_ips_{arm}"] = float(h["images_per_s"].median())
    figures["minutes"] = (time.perf_counter() - t_all) / 60
    print(result_line(**figures))


if __name__ == "__main__":
    main()
