"""Cost of the per-layer ELR diagnostics and of the critical warm-up, in the same training loop.

    .venv/bin/python benchmarks/diagnostics_overhead.py [--depths 56 110] [--steps 20] [--repeats 3]
        [--data synthetic|digits] [--device cpu|cuda]

For each depth of resnet_v1 without skips (synthetic CIFAR-shaped data, batch 128, by default) it
times three variants of one trial, interleaved over repeats: diagnostics off with no warm-up (the
plain step), diagnostics every step with no warm-up, and the critical warm-up (diagnostics on, the
warm-up active: the target lr is set 100x above eta_crit at init so it is still warming up). It
prints the median ms/step of each and the ratios to the plain step (goals: diagnostics <= 1.03,
critical <= 1.05).
"""
from __future__ import annotations

import argparse
import statistics

import torch

from elrbench import elr
from elrbench.experiments import init_snapshot
from elrbench.spec import validate_spec
from elrbench.train import run_trial


def trial(depth: int, steps: int, data: str, device: str, diag: bool, warmup: str, lr: float):
    ds = ({"dataset": "synthetic", "data": {"shape": [3, 32, 32], "n_train": 2048, "n_test": 256}}
          if data == "synthetic" else {"dataset": "digits"})
    spec = validate_spec({
        "name": "bench-diag", "output_dir": "/tmp/elrbench-bench",
        "workloads": [{"model": "resnet_v1", "model_options": {"skip": "no_short"}, "threshold": 0.5, **ds}],
        "grid": {"depth": [depth], "lr": [lr], "warmup": [warmup]},
        "budget": {"steps": steps, "batch_size": 128, "log_every": 10, "eval_every": 10**9, "eval_batch_size": 256},
        "diagnostics": {"enabled": diag},
        "resources": {"cpus_per_worker": torch.get_num_threads(), "gpus_per_worker": 1 if device == "cuda" else 0},
    })
    return spec.expand()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", type=int, nargs="+", default=[56, 110])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default="synthetic", choices=["synthetic", "digits"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    print(f"device {a.device}, data {a.data}, batch 128, {a.steps} steps per run, median of {a.repeats}")
    for depth in a.depths:
        eta = float(elr.critical_lr(init_snapshot(trial(depth, a.steps, a.data, "cpu", True, "none", 0.1)).c_hat))
        variants = {
            "plain": trial(depth, a.steps, a.data, a.device, False, "none", 0.1),
            "diagnostics": trial(depth, a.steps, a.data, a.device, True, "none", 0.1),
            "critical": trial(depth, a.steps, a.data, a.device, True, "critical", 100 * eta),
        }
        run_trial(variants["plain"])  # warm-up: data cache, allocator, kernels
        times: dict[str, list[float]] = {k: [] for k in variants}
        warm_steps = 0
        for _ in range(a.repeats):
            for name, t in variants.items():
                r = run_trial(t)
                times[name].append(r.step_ms)
                if name == "critical":
                    warm_steps = r.warmup_steps
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"resnet_v1 no_short depth {depth}: plain {med['plain']:.2f} ms/step, "
              f"diagnostics {med['diagnostics']:.2f} ms/step (ratio {med['diagnostics'] / med['plain']:.3f}), "
              f"critical warm-up {med['critical']:.2f} ms/step (ratio {med['critical'] / med['plain']:.3f}, "
              f"{warm_steps}/{a.steps} steps in warm-up)")


if __name__ == "__main__":
    main()
