"""The GPU check of compiled steps, prepared for a machine with a CUDA GPU; never run in CI.

    .venv/bin/python benchmarks/compile_gpu.py [--steps 50] [--repeats 3] [--share-steps 300]

1. ms per step of resnet_v1 no_short, depth 56 and 110, on synthetic CIFAR-shaped data (3x32x32, 10
   classes), batch 128, per-layer diagnostics on: eager, compiled (resources.compile: on) and
   compiled with CUDA graphs (cudagraphs), interleaved, median of the repeats, ratio to eager; the
   first compiled step's time (compiling, mostly).
2. Trials sharing one GPU through fractional GPU resources: the same study of 8 short trials
   (depth 56, compile: on) submitted with gpus_per_worker 1, 0.5 (two at a time) and 0.125 (eight at
   a time) on the embedded Ray cluster; trials per hour of each and the ratio to one at a time.

What CUDA graphs need, and how elrbench meets it: static shapes (every training batch has the same
size: drop_last), no host sync inside the graph (the loop syncs only at log and eval periods, outside
the compiled forward and backward), and inputs whose addresses the graph may copy into (batches are
fresh tensors each step; parameters and BatchNorm buffers are static). The diagnostics and warm-ups
read the gradients after backward, outside the graph, before the next replay overwrites them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import compile as cpu_bench  # noqa: E402 - the CPU benchmark's step, reused

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = {"model": "resnet_v1", "dataset": "synthetic", "model_options": {"skip": "no_short"}, "width": 16,
            "data": {"shape": [3, 32, 32], "n_train": 4096, "n_test": 512, "num_classes": 10}, "threshold": 0.5}


def step_times(a) -> None:
    import torch

    print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; CUDA {torch.version.cuda}")
    for depth in (56, 110):
        cpu_bench.NETWORKS[f"resnet_v1-{depth}"] = (WORKLOAD, depth)
        runs = {v: cpu_bench.build(f"resnet_v1-{depth}", "compiled" if mode != "off" else "eager", 4,
                                   compile=mode, gpus=1)
                for v, mode in (("eager", "off"), ("compiled", "on"), ("cudagraphs", "cudagraphs"))}
        med, first = cpu_bench.interleaved(runs, a.steps, a.repeats)
        print(f"resnet_v1-{depth} no_short, 3x32x32, batch 128, diagnostics on")
        for v in runs:
            print(f"  {v:<11} {med[v]:8.2f} ms/step  {med['eager'] / med[v]:5.2f}x  (first 5 steps {first[v]:.1f} s)")


def sharing(a) -> None:
    spec = {"name": "gpu-share", "workloads": [WORKLOAD],
            "grid": {"depth": [56], "lr": [0.1], "warmup": ["none"], "seed": list(range(8))},
            "budget": {"steps": a.share_steps, "batch_size": 128, "log_every": 10},
            "tracking": {"wandb": "disabled"}}
    base = None
    for share in (1, 0.5, 0.125):
        with tempfile.TemporaryDirectory() as out:
            d = dict(spec, output_dir=out, resources={"cpus_per_worker": 1, "gpus_per_worker": share, "compile": "on"})
            f = Path(out) / "spec.json"
            f.write_text(json.dumps(d))
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "cli.app", "submit", str(f), "--no-report"], cwd=ROOT,
                               capture_output=True, text=True, env={**os.environ, "CUDA_MODULE_LOADING": "LAZY"})
            wall = time.perf_counter() - t0
            if p.returncode:
                print(p.stdout[-3000:], p.stderr[-3000:])
                raise SystemExit(f"the study with gpus_per_worker {share} failed")
            per_hour = 8 * 3600 / wall
            base = base or per_hour
            print(f"  gpus_per_worker {share:<5} ({int(1 / share)} at a time): 8 trials in {wall:6.1f} s, "
                  f"{per_hour:7.0f} trials/h, {per_hour / base:4.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--share-steps", type=int, default=300)
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this benchmark is for a GPU machine (benchmarks/compile.py is the CPU one)")
    step_times(a)
    print(f"\ntrials sharing one GPU (resnet_v1-56 no_short, {a.share_steps} steps each, compile: on)")
    sharing(a)


if __name__ == "__main__":
    main()
