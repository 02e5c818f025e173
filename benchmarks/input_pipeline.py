"""Benchmark: images per second the training input paths deliver (CPU, no GPU needed).

The training split of a synthetic cohort at the paper's geometry (500 x 500, 2
channels: image and ROI mask; one third minority cases expanded tenfold with the
planned flips and noise, as BUSI is), is fed through the
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

CPU time is reported beside wall time because the machine may be shared: images per
CPU second of this process times the usable cores bounds what an idle machine sustains.

Last line: ``RESULT loader_ips=... loader_ips_per_cpu_s=... device_rt_ips=...
dataloader_ips=... build_s=...``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from radfusion.deep.batches import DeviceInputs, LoaderInputs
from radfusion.deep.inputs import DeepDataset, random_transforms
from radfusion.deep.train import epoch_order
from radfusion.utils import usable_cores

try:  # run as a script from the repository: benchmarks/ is on sys.path
    from _common import result_line, synthetic_inputs
except ImportError:  # pragma: no cover - imported as benchmarks.input_pipeline
    from benchmarks._common import result_line, synthetic_inputs


def consume(batches, n_epochs: int, order_of, batch_size: int) -> tuple[float, float]:
    """Images per wall second and per CPU second of this process over ``n_epochs`` epochs,
    every batch consumed as the training loop consumes it (one at a time, buffer reused)."""
    seen, t0, c0 = 0, time.perf_counter(), time.process_time()
    for epoch in range(n_epochs):
        for x, y in batches.epoch(order_of(epoch), epoch, batch_size, reuse=True):
            # The loop's first read of the batch; forces any lazy work to complete.
            float(x[:, 0, 0, 0].sum()) + float(y.sum())
            seen += len(y)
    return seen / (time.perf_counter() - t0), seen / max(time.process_time() - c0, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--cases", type=int, default=90, help="cohort size (70%% train)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per path")
    ap.add_argument("--workers", type=int, default=usable_cores(), help="DataLoader workers")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    arrays, rows = synthetic_inputs(args.cases, args.size, args.seed)
    rows = [r for r in rows if r.split == "train"]
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
    ips, ips_cpu = consume(dev_plain, args.epochs, order_of, args.batch_size)
    print(
        f"device path, planned copies (paper preset): {ips:.0f} img/s "
        f"({ips_cpu:.0f} per CPU second of this process)"
    )

    dev_rt = DeviceInputs(augmented, cpu)
    rt_ips, rt_cpu = consume(dev_rt, args.epochs, order_of, args.batch_size)
    print(
        f"device path, planned copies + random transforms: {rt_ips:.0f} img/s "
        f"({rt_cpu:.0f} per CPU second)"
    )

    loader = LoaderInputs(augmented, cpu, args.workers)
    consume(loader, 1, order_of, args.batch_size)  # starts the persistent workers
    dl_ips, _ = consume(loader, 1, order_of, args.batch_size)
    print(
        f"loader path ({min(args.workers, usable_cores())} workers), planned copies + random "
        f"transforms: {dl_ips:.0f} img/s"
    )
    print(
        result_line(
            loader_ips=float(ips),
            loader_ips_per_cpu_s=float(ips_cpu),
            device_rt_ips=float(rt_ips),
            dataloader_ips=float(dl_ips),
            build_s=float(build_s),
            size=args.size,
            batch=args.batch_size,
        )
    )


if __name__ == "__main__":
    main()
