"""Benchmark: images per second the training input paths deliver (CPU, no GPU needed).

A synthetic cohort at the paper's geometry (500 x 500, 2 channels: image and ROI
mask), one third minority cases expanded tenfold with the planned flips and noise
(:func:`radfusion.preprocessing.plan_augmentation`, as on BUSI), is fed through the
real input paths of :func:`radfusion.deep.train.train_network`
(:mod:`radfusion.deep.batches`) and every batch is consumed as the training loop
consumes it (standardised ``float32`` tensors on the device, here the CPU):

* ``device`` path, planned copies only (the paper preset: ``random_transforms: false``);
  the headline figure ``loader_ips``;
* ``device`` path with the batched random transforms (``random_transforms: true``);
* the ``loader`` path (DataLoader, per-image NumPy / MONAI work) with
  ``--workers`` processes, for comparison.

The device path's one-off cost (materialising every sample, planned copies included)
is reported separately as ``build_s``. On a GPU the same path runs on the device;
this measures what the CPU alone sustains.

    python benchmarks/input_pipeline.py                      # 500 px, batch 32
    python benchmarks/input_pipeline.py --size 224 --cases 64

Last line: ``RESULT loader_ips=... device_rt_ips=... dataloader_ips=... build_s=...``.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from radfusion.config import AugmentConfig
from radfusion.deep.batches import DeviceInputs, LoaderInputs, usable_cores
from radfusion.deep.inputs import DeepDataset, InputRow, input_rows, random_transforms
from radfusion.deep.train import epoch_order
from radfusion.preprocessing import plan_augmentation

try:  # run as a script from the repository: benchmarks/ is on sys.path
    from _common import result_line
except ImportError:  # pragma: no cover - imported as benchmarks.input_pipeline
    from benchmarks._common import result_line


def synthetic_rows(
    cases: int, size: int, seed: int
) -> tuple[dict[str, np.ndarray], list[InputRow]]:
    """Cached-style inputs (``float16`` [0, 1]) and training rows with tenfold minority copies."""
    rng = np.random.default_rng(seed)
    arrays = {}
    labels = (np.arange(cases) % 3 == 0).astype(int)  # one third minority, as BUSI
    for i in range(cases):
        x = np.zeros((2, size, size), np.float32)
        x[0] = rng.random((size, size), dtype=np.float32)
        c, r = size // 2, size // 6
        x[1, c - r : c + r, c - r : c + r] = 1.0
        arrays[f"c{i}"] = x.astype(np.float16)
    table = pd.DataFrame({"case_id": list(arrays), "label": labels, "split": "train"})
    plan = plan_augmentation(table, AugmentConfig(factor=10), seed=seed)

    # input_rows reads case_id and label only.
    cases_ = [
        SimpleNamespace(case_id=c, label=int(lab)) for c, lab in zip(arrays, labels, strict=True)
    ]
    assignment = pd.Series("train", index=table["case_id"])
    return arrays, input_rows(cases_, assignment, plan)  # type: ignore[arg-type]


def consume(batches, n_epochs: int, order_of, batch_size: int) -> float:  # noqa: ANN001
    """Images/s over ``n_epochs`` epochs, every batch touched like the training loop does."""
    seen, t0 = 0, time.perf_counter()
    for epoch in range(n_epochs):
        for x, y in batches.epoch(order_of(epoch), epoch, batch_size):
            # The training loop's first use of the batch; forces lazy work to complete.
            float(x[:, 0, 0, 0].sum()) + float(y.sum())
            seen += len(y)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--cases", type=int, default=60, help="source cases (before copies)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per path")
    ap.add_argument("--workers", type=int, default=usable_cores(), help="DataLoader workers")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    arrays, rows = synthetic_rows(args.cases, args.size, args.seed)
    n_copies = sum(1 for r in rows if r.ops)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {usable_cores()} cores; "
        f"{len(rows)} samples ({args.cases} cases + {n_copies} planned copies) of 2 x "
        f"{args.size} x {args.size}, batch {args.batch_size}"
    )
    labels = np.array([r.label for r in rows])

    def order_of(epoch: int) -> list[int]:
        return epoch_order(labels, epoch, args.seed, False, args.batch_size)

    plain = DeepDataset(arrays, rows, 0.05, None, args.seed)
    augmented = DeepDataset(arrays, rows, 0.05, random_transforms(2, args.size), args.seed)

    t0 = time.perf_counter()
    dev_plain = DeviceInputs(plain, cpu)
    build_s = time.perf_counter() - t0
    print(f"device path: {len(dev_plain)} samples materialised in {build_s:.1f} s (once per run)")
    consume(dev_plain, 1, order_of, args.batch_size)  # warm-up
    ips = consume(dev_plain, args.epochs, order_of, args.batch_size)
    print(f"device path, planned copies (paper preset): {ips:.0f} img/s")

    dev_rt = DeviceInputs(augmented, cpu)
    rt_ips = consume(dev_rt, args.epochs, order_of, args.batch_size)
    print(f"device path, planned copies + random transforms: {rt_ips:.0f} img/s")

    loader = LoaderInputs(augmented, cpu, args.workers)
    consume(loader, 1, order_of, args.batch_size)  # starts the persistent workers
    dl_ips = consume(loader, 1, order_of, args.batch_size)
    print(
        f"loader path ({min(args.workers, usable_cores())} workers), planned copies + random "
        f"transforms: {dl_ips:.0f} img/s"
    )
    print(
        result_line(
            loader_ips=float(ips),
            device_rt_ips=float(rt_ips),
            dataloader_ips=float(dl_ips),
            build_s=float(build_s),
            size=args.size,
            batch=args.batch_size,
        )
    )


if __name__ == "__main__":
    main()
