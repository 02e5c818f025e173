"""Benchmark: training and inference throughput of radfusion's ResNets.

For each configuration (depth, input size, batch) it builds the network with
:func:`radfusion.deep.build_resnet` and times, on random 2-channel inputs
(the 2ch arm; 1ch differs only in the first convolution):

* training: forward + BCE-with-logits + backward + AdamW step, images/s;
* inference: evaluation-mode forward with the pooled-feature hook, images/s;
* peak memory: resident memory of the process (CPU; each configuration runs in its
  own subprocess so peaks do not mix) or ``torch.cuda.max_memory_allocated`` (GPU).

One warm-up batch is excluded from the timings.

    python benchmarks/deep_throughput.py                 # CPU: ResNet18@128, ResNet101@224
    python benchmarks/deep_throughput.py --device cuda   # GPU: ResNet101@500, FP32 vs AMP

On CUDA the AMP run uses the training code's own choices (bfloat16 where supported,
else float16 with a gradient scaler; channels-last). Last line:
``RESULT key=value ...`` (``train_ips`` / ``infer_ips`` images per second,
``peak_mb``; on CUDA also ``amp_speedup``, AMP over FP32 training throughput).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from radfusion.deep.features import amp_dtype, autocast, to_device
from radfusion.deep.networks import build_resnet, forward_with_features

try:  # run as a script from the repository: benchmarks/ is on sys.path
    from _common import peak_rss_mb, result_line
except ImportError:  # pragma: no cover - imported as benchmarks.deep_throughput
    from benchmarks._common import peak_rss_mb, result_line

CPU_CONFIGS = [(18, 128, 16), (101, 224, 8)]
GPU_CONFIG = (101, 500, 32)


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
    ap.add_argument("--batches", type=int, default=3, help="timed batches per measurement")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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
    figures: dict[str, object] = {"device": args.device}
    if args.device == "cpu":
        runs = [(d, s, b, False) for d, s, b in CPU_CONFIGS]
    else:
        d, s, b = GPU_CONFIG
        runs = [(d, s, b, False), (d, s, b, True)]
    for depth, size, batch, amp in runs:
        r = run_child(args, depth, size, batch, amp)
        tag = f"r{depth}_{size}" + ("_amp" if amp else "_fp32" if args.device == "cuda" else "")
        print(
            f"ResNet{depth} @ {size}px, batch {batch}{' AMP' if amp else ''}: "
            f"train {r['train_ips']:.1f} img/s, inference {r['infer_ips']:.1f} img/s, "
            f"peak {r['peak_mb']:.0f} MiB"
        )
        for key, value in r.items():
            figures[f"{tag}_{key}"] = float(value)
    if args.device == "cuda":
        d, s, _ = GPU_CONFIG
        speedup = figures[f"r{d}_{s}_amp_train_ips"] / figures[f"r{d}_{s}_fp32_train_ips"]
        figures["amp_speedup"] = float(speedup)  # type: ignore[arg-type]
        print(f"AMP / FP32 training throughput: {speedup:.2f}x")
    print(result_line(**figures))


if __name__ == "__main__":
    main()
