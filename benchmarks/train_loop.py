"""Overhead of elrbench's training loop against a bare PyTorch loop on the same trial.

    .venv/bin/python benchmarks/train_loop.py [--depth 16] [--steps 120] [--repeats 3]

Both run the same model, data, batch order and optimizer in this process; elrbench adds the
warm-up/schedule hook, on-device accumulators, divergence tracking and the log/eval periods. Prints
the median seconds per step of each and their ratio (goal: at most 1.10).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from elrbench.optimizers import create_optimizer
from elrbench.spec import validate_spec
from elrbench.train import run_trial
from elrbench.workloads import create_model, load_dataset


def bare_loop(trial, steps: int) -> float:
    torch.manual_seed(trial.seed)
    w = trial.workload
    data = load_dataset(w.dataset, w.data)
    model = create_model(w.model, trial.depth, in_shape=data.in_shape, num_classes=data.num_classes,
                         width=w.width, norm=w.norm, init=w.init, options=w.model_options)
    opt = create_optimizer(trial.optimizer).build(list(model.parameters()), trial.lr)
    bs = trial.budget.batch_size
    perm = torch.randperm(len(data.x_train))
    spe = len(data.x_train) // bs
    t0 = time.perf_counter()
    for step in range(steps):
        i = step % spe
        idx = perm[i * bs : (i + 1) * bs]
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    loss.item()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    spec = validate_spec({
        "name": "bench", "output_dir": "/tmp/elrbench-bench",
        "workloads": [{"model": "plain_cnn", "dataset": "mnist5k", "model_options": {"downsample": 2},
                       "threshold": 0.9}],
        "grid": {"depth": [a.depth], "lr": [0.1], "warmup": [{"name": "linear", "steps": 50}]},
        "budget": {"steps": a.steps, "batch_size": 128, "log_every": 10, "eval_every": 10**9},
        "resources": {"cpus_per_worker": a.threads},
    })
    trial = spec.expand()[0]
    torch.set_num_threads(a.threads)
    bare_loop(trial, 5)  # warm caches and the allocator
    bare, ours = [], []
    for _ in range(a.repeats):  # interleaved, so drift on a noisy machine hits both alike
        bare.append(bare_loop(trial, a.steps))
        r = run_trial(trial)
        ours.append(r.train_s / r.steps_done)
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"plain_cnn depth {a.depth} on mnist5k (7x7 maps), batch 128, {a.steps} steps, {a.threads} threads")
    print(f"bare PyTorch loop : {1000 * b:8.2f} ms/step")
    print(f"elrbench run_trial: {1000 * o:8.2f} ms/step")
    print(f"ratio elrbench/bare: {o / b:.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
