"""Benchmark: the network's own throughput (ceiling) and the real training loop's.

Ceiling. For each configuration (depth, input size, batch) it builds the network with
:func:`radfusion.deep.build_resnet` and times, on random 2-channel inputs already on
the device (the 2ch arm; 1ch differs only in the first convolution):

* training: forward + BCE-with-logits + backward + AdamW step, images/s;
* inference: evaluation-mode forward with the pooled-feature hook, images/s;
* peak memory: resident memory of the process (CPU; each configuration runs in its
  own subprocess so peaks do not mix) or ``torch.cuda.max_memory_allocated`` (GPU).

One warm-up batch is excluded from the timings.

Real loop. :func:`radfusion.deep.train.train_network` over a synthetic cohort
(``--cases``; 2 x ``--size`` px inputs as the cache holds them, 70/15/15 split, minority
expanded tenfold with the planned flips and noise, as BUSI) through the real input path
(``deep.input_path``, ``auto`` by default: device-resident on a GPU), with per-epoch
validation and checkpoints, at the paper preset's settings (batch, AMP, optimiser) unless
overridden. The first epoch (allocator, cuDNN autotuning, compilation) is excluded.
Reported: training images/s as the trainer measures them (``real_ips``),
``product_ratio = real_ips / ceiling`` (the ceiling measured at the same depth, size,
batch and precision), the epoch's wall time with validation and checkpoint, and the
share of the epoch spent in validation (``eval_frac``). On CUDA the loop runs with
``deterministic: true`` and ``false`` (``--deterministic both``, the default there).

    python benchmarks/deep_throughput.py                 # CPU: ceilings + a tiny real loop
    python benchmarks/deep_throughput.py --device cuda   # GPU: ResNet101@500, paper preset
    python benchmarks/deep_throughput.py --device cuda --compile

On CUDA the AMP run uses the training code's own choices (bfloat16 where supported,
else float16 with a gradient scaler; channels-last). Last line:
``RESULT key=value ...`` (``train_ips`` / ``infer_ips`` images per second, ``peak_mb``;
on CUDA ``amp_speedup``, AMP over FP32 training throughput; the real loop's
``real_ips``, ``product_ratio``, ``epoch_s``, ``eval_frac``, per determinism setting on
CUDA with a ``det_`` / ``nondet_`` prefix).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from radfusion.config import load_preset
from radfusion.deep.features import amp_dtype, autocast, to_device
from radfusion.deep.inputs import DeepDataset, random_transforms
from radfusion.deep.networks import build_resnet, forward_with_features
from radfusion.deep.train import EpochRecord, train_network

try:  # run as a script from the repository: benchmarks/ is on sys.path
    from _common import peak_rss_mb, result_line, synthetic_inputs
except ImportError:  # pragma: no cover - imported as benchmarks.deep_throughput
    from benchmarks._common import peak_rss_mb, result_line, synthetic_inputs

CPU_CONFIGS = [(18, 128, 16), (101, 224, 8)]
GPU_CONFIG = (101, 500, 32)
#: Real loop on the CPU: small enough for a shared 2-core machine.
CPU_LOOP = {"depth": 18, "size": 64, "batch": 16, "cases": 60, "epochs": 3}
#: Real loop on CUDA: the paper preset on a BUSI-sized cohort (647 cases).
GPU_LOOP = {"depth": 101, "size": 500, "batch": 16, "cases": 647, "epochs": 3}


def measure(
    depth: int, size: int, batch: int, n_batches: int, device: str, amp: bool
) -> dict[str, float]:
    """Training and inference images/s and peak memory of one configuration."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_resnet(depth, 2, 1).to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats()
    use_amp = amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype(dev) == torch.float16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x = to_device(torch.randn(batch, 2, size, size), dev)
    y = (torch.rand(batch) > 0.5).float().to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def train_step() -> None:
        with autocast(dev, use_amp):
            logits = model(x)
        loss = loss_fn(logits.float()[:, 0], y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    model.train()
    train_step()  # warm-up: kernel selection, allocator
    sync()
    t0 = time.perf_counter()
    for _ in range(n_batches):
        train_step()
    sync()
    train_ips = n_batches * batch / (time.perf_counter() - t0)

    model.eval()
    with torch.no_grad():
        with autocast(dev, use_amp):
            forward_with_features(model, x)
        sync()
        t0 = time.perf_counter()
        for _ in range(n_batches):
            with autocast(dev, use_amp):
                forward_with_features(model, x)
        sync()
    infer_ips = n_batches * batch / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else peak_rss_mb()
    return {"train_ips": train_ips, "infer_ips": infer_ips, "peak_mb": peak}


def real_loop(
    *,
    depth: int,
    size: int,
    batch: int,
    cases: int,
    epochs: int,
    device: str,
    deterministic: bool,
    input_path: str,
    compile_: bool,
    random: bool,
) -> dict[str, float]:
    """train_network over a synthetic cohort through the real input path (paper settings)."""
    arrays, rows = synthetic_inputs(cases, size, seed=0)
    train_rows = [r for r in rows if r.split == "train"]
    val_rows = [r for r in rows if r.split == "val"]
    cfg = load_preset("paper").deep.model_copy(
        update={
            "depth": depth,
            "image_size": size,
            "batch_size": batch,
            "epochs": epochs,
            "patience": epochs + 1,
            "device": device,
            "deterministic": deterministic,
            "input_path": input_path,
            "compile": compile_,
            "random_transforms": random,
            "num_workers": 0 if device == "cpu" else 4,
        }
    )
    transform = random_transforms(2, size) if random else None
    train_set = DeepDataset(arrays, train_rows, 0.05, transform, 0)
    val_set = DeepDataset(arrays, val_rows, 0.05)
    torch.manual_seed(0)
    model = build_resnet(depth, 2, num_classes=1)
    ends: list[float] = []
    t0 = time.perf_counter()

    def mark(_record: EpochRecord) -> None:
        ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        res = train_network(
            model,
            train_set,
            val_set,
            cfg,
            seed=0,
            device=torch.device(device),
            checkpoint_path=Path(tmp) / "checkpoint.pt",
            progress=False,
            on_epoch_end=mark,
        )
    wall = np.diff([t0, *ends])  # per epoch: training, validation, checkpoint
    h = res.history.iloc[1:] if len(res.history) > 1 else res.history  # first epoch warms up
    train_s = len(train_rows) / h["images_per_s"]
    return {
        "real_ips": float(h["images_per_s"].median()),
        "epoch_s": float(np.median(wall[1:] if len(wall) > 1 else wall)),
        "eval_frac": float(np.median((h["seconds"] - train_s) / h["seconds"])),
        "checkpoint_s": float(np.median(wall[len(wall) - len(h) :] - h["seconds"].to_numpy())),
        "first_epoch_s": float(wall[0]),
        "n_train": float(len(train_rows)),
        "n_val": float(len(val_rows)),
        "input_path_device": float(res.input_path == "device"),
    }


def run_child(args: argparse.Namespace, depth: int, size: int, batch: int, amp: bool) -> dict:
    """One configuration in a fresh process (its own peak memory)."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        f"{depth},{size},{batch},{int(amp)}",
        "--device",
        args.device,
        "--batches",
        str(args.batches),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--batches", type=int, help="timed batches per measurement (default: 3 CPU, 20 CUDA)"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--loop-depth", type=int, help="real loop: ResNet depth")
    ap.add_argument("--loop-size", type=int, help="real loop: input side (px)")
    ap.add_argument("--loop-batch", type=int, help="real loop: batch size")
    ap.add_argument("--cases", type=int, help="real loop: synthetic cohort size")
    ap.add_argument("--epochs", type=int, help="real loop: epochs (the first is warm-up)")
    ap.add_argument("--input-path", default="auto", choices=["auto", "device", "loader"])
    ap.add_argument(
        "--deterministic",
        choices=["true", "false", "both"],
        help="real loop determinism (default: both on CUDA, true on the CPU)",
    )
    ap.add_argument("--compile", action="store_true", help="real loop with deep.compile")
    ap.add_argument("--random-transforms", action="store_true", help="real loop with them")
    ap.add_argument("--skip-ceilings", action="store_true", help="CPU: only the loop's ceiling")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batches is None:
        args.batches = 20 if args.device == "cuda" else 3
    if args.child:
        depth, size, batch, amp = (int(v) for v in args.child.split(","))
        print(json.dumps(measure(depth, size, batch, args.batches, args.device, bool(amp))))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA GPU is available to torch")

    print(
        f"torch {torch.__version__}, device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")
        + f", CPU threads {torch.get_num_threads()}, timed batches {args.batches}"
    )
    loop = dict(CPU_LOOP if args.device == "cpu" else GPU_LOOP)
    for key, value in (
        ("depth", args.loop_depth),
        ("size", args.loop_size),
        ("batch", args.loop_batch),
        ("cases", args.cases),
        ("epochs", args.epochs),
    ):
        if value is not None:
            loop[key] = value
    figures: dict[str, object] = {"device": args.device}
    if args.device == "cpu":
        runs = [] if args.skip_ceilings else [(d, s, b, False) for d, s, b in CPU_CONFIGS]
    else:
        d, s, b = GPU_CONFIG
        runs = [(d, s, b, False), (d, s, b, True)]
    # The ceiling at the real loop's own configuration (AMP on CUDA, as the paper preset).
    loop_ceiling = (loop["depth"], loop["size"], loop["batch"], args.device == "cuda")
    if loop_ceiling not in runs:
        runs.append(loop_ceiling)
    ceiling = float("nan")
    for depth, size, batch, amp in runs:
        r = run_child(args, depth, size, batch, amp)
        tag = f"r{depth}_{size}_b{batch}" + (
            "_amp" if amp else "_fp32" if args.device == "cuda" else ""
        )
        print(
            f"ResNet{depth} @ {size}px, batch {batch}{' AMP' if amp else ''}: "
            f"train {r['train_ips']:.1f} img/s, inference {r['infer_ips']:.1f} img/s, "
            f"peak {r['peak_mb']:.0f} MiB"
        )
        for key, value in r.items():
            figures[f"{tag}_{key}"] = float(value)
        if (depth, size, batch, amp) == loop_ceiling:
            ceiling = r["train_ips"]
    if args.device == "cuda":
        d, s, b = GPU_CONFIG
        speedup = figures[f"r{d}_{s}_b{b}_amp_train_ips"] / figures[f"r{d}_{s}_b{b}_fp32_train_ips"]
        figures["amp_speedup"] = float(speedup)  # type: ignore[arg-type]
        print(f"AMP / FP32 training throughput: {speedup:.2f}x")

    det = args.deterministic or ("both" if args.device == "cuda" else "true")
    settings = {"true": [True], "false": [False], "both": [True, False]}[det]
    figures["ceiling_ips"] = float(ceiling)
    print(
        f"real loop: train_network, ResNet{loop['depth']} @ {loop['size']}px, batch "
        f"{loop['batch']}, {loop['cases']} synthetic cases, {loop['epochs']} epochs "
        f"(first excluded), input_path {args.input_path}"
        + (", compiled" if args.compile else "")
        + (", random transforms" if args.random_transforms else "")
    )
    for deterministic in settings:
        r = real_loop(
            depth=loop["depth"],
            size=loop["size"],
            batch=loop["batch"],
            cases=loop["cases"],
            epochs=loop["epochs"],
            device=args.device,
            deterministic=deterministic,
            input_path=args.input_path,
            compile_=args.compile,
            random=args.random_transforms,
        )
        ratio = r["real_ips"] / ceiling
        tag = ("det_" if deterministic else "nondet_") if len(settings) > 1 else ""
        print(
            f"  deterministic {str(deterministic).lower()}: "
            f"{'device' if r['input_path_device'] else 'loader'} input path, "
            f"{r['real_ips']:.1f} img/s training ({ratio:.2f} of the ceiling "
            f"{ceiling:.1f}); epoch {r['epoch_s']:.2f} s wall for {r['n_train']:.0f} training + "
            f"{r['n_val']:.0f} validation images (validation {100 * r['eval_frac']:.1f}% of the "
            f"epoch, checkpoint {r['checkpoint_s']:.2f} s); first epoch {r['first_epoch_s']:.1f} s"
        )
        figures[f"{tag}real_ips"] = r["real_ips"]
        figures[f"{tag}product_ratio"] = float(ratio)
        figures[f"{tag}epoch_s"] = r["epoch_s"]
        figures[f"{tag}eval_frac"] = r["eval_frac"]
        figures[f"{tag}checkpoint_s"] = r["checkpoint_s"]
    print(result_line(**figures))


if __name__ == "__main__":
    main()
