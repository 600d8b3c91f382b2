"""Compiled training steps against eager ones, on the CPU: ms per step, trials per hour, compile time
and the break-even trial length.

    .venv/bin/python benchmarks/compile.py [--steps 60] [--repeats 3] [--threads 2] [--trial-steps 5000]

Networks: plain_cnn depth 16 on mnist5k (the demo's, 7x7 maps after two stride-2 convolutions) and
resnet_v1 no_short depth 56 on digits (8x8), width 16, batch 128, plain SGD. Each step is the
training loop's step (elrbench.train: batch, forward, backward, warm-up hook, per-layer diagnostics,
optimizer step, on-device accumulators), built with elrbench.train.setup; variants:

    eager          the reference (resources.compile: off)
    channels-last  eager, network and batches in channels-last memory format
    compiled, NCHW torch.compile of the forward, default memory format
    compiled       torch.compile of the forward, channels-last (resources.compile: on)
    compiled, no diagnostics   the same without per-layer statistics (diagnostics.enabled: false)

Variants are interleaved over the repeats (a noisy machine hits them alike) and the median is
printed, with the ratio to eager measured in the same run. Compile time: the first compiled step in
a fresh process with an empty inductor cache (cold) and with the cache this run filled (warm).
Goals (issue 14, 2 CPU cores): compiled >= 1.8x eager steps per second with diagnostics on; the
diagnostics cost <= 3% of a compiled step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

NETWORKS = {
    "plain_cnn-16 mnist5k": ({"model": "plain_cnn", "dataset": "mnist5k", "model_options": {"downsample": 2},
                              "width": 16, "threshold": 0.9}, 16),
    "resnet_v1-56 no_short digits": ({"model": "resnet_v1", "dataset": "digits", "model_options": {"skip": "no_short"},
                                      "width": 16, "threshold": 0.9}, 56),
}


def build(network: str, variant: str, threads: int, compile: str | None = None, gpus: float = 0):
    """One variant's step function (and a sync), on its own Setup and TrainState; compile: the
    resources.compile setting of a compiled variant (default on); gpus: gpus_per_worker."""
    import torch

    from elrbench import train
    from elrbench.spec import validate_spec

    workload, depth = NETWORKS[network]
    spec = validate_spec({
        "name": "bench-compile", "output_dir": tempfile.gettempdir(), "workloads": [workload],
        "grid": {"depth": [depth], "lr": [0.1], "warmup": ["none"]},
        "budget": {"steps": 10**6, "batch_size": 128},
        "diagnostics": {"enabled": variant != "compiled, no diagnostics"},
        "resources": {"cpus_per_worker": threads, "gpus_per_worker": gpus,
                      "compile": (compile or "on") if variant.startswith("compiled") else "off"},
    })
    run = train.setup(spec.expand()[0])
    if variant == "channels-last":
        run.model.to(memory_format=torch.channels_last)
        run.channels_last = True
    if variant == "compiled, NCHW":  # before the first call, which is when torch.compile compiles
        run.model.to(memory_format=torch.contiguous_format)
        run.channels_last = False
    state = train.TrainState(run)

    def step(s: int) -> None:  # the product's own step (run_trial's), without its log and eval periods
        train.train_step(run, state, s)

    def sync() -> None:
        float(state.acc["loss"])

    return step, sync


def interleaved(runs: dict, steps: int, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms per step of each (step, sync) variant, timed in turn over the repeats (drift on a
    noisy machine hits every variant alike), after 5 warm-up steps each; and each variant's warm-up
    seconds (compiling, for a compiled one)."""
    first = {}
    for v, (step, sync) in runs.items():
        t0 = time.perf_counter()
        for s in range(5):
            step(s)
        sync()
        first[v] = time.perf_counter() - t0
    ms: dict[str, list[float]] = {v: [] for v in runs}
    for r in range(repeats):
        for v, (step, sync) in runs.items():
            t0 = time.perf_counter()
            for s in range(steps):
                step(5 + r * steps + s)
            sync()
            ms[v].append(1000 * (time.perf_counter() - t0) / steps)
    return {v: statistics.median(x) for v, x in ms.items()}, first


def first_step_s(network: str, threads: int) -> float:
    """Seconds of the first compiled step (compiling, mostly) in this process."""
    step, sync = build(network, "compiled", threads)
    t0 = time.perf_counter()
    step(0)
    sync()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60, help="timed steps per variant and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trial-steps", type=int, default=5000, help="trial length for trials per hour")
    ap.add_argument("--network", choices=list(NETWORKS), action="append", help="only these (default: both)")
    ap.add_argument("--cold", help=argparse.SUPPRESS)  # child: time one cold compile of this network
    a = ap.parse_args()
    if a.cold:
        print(json.dumps({"first_step_s": first_step_s(a.cold, a.threads)}))
        return

    from elrbench.machine import describe, machine

    variants = ["eager", "channels-last", "compiled, NCHW", "compiled", "compiled, no diagnostics"]
    print(f"machine: {describe(machine())}; {a.threads} threads")
    print(f"{a.steps} timed steps per variant and repeat, median of {a.repeats} interleaved repeats, batch 128\n")
    for network in a.network or NETWORKS:
        with tempfile.TemporaryDirectory() as cache:  # cold: an empty inductor cache, a fresh process
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            out = subprocess.run([sys.executable, __file__, "--cold", network, "--threads", str(a.threads)],
                                 env=env, capture_output=True, text=True, check=True).stdout
            cold = json.loads(out.strip().splitlines()[-1])["first_step_s"]
        warm = first_step_s(network, a.threads)  # this process: the shared cache (compile_cache()) is warm
        runs = {v: build(network, v, a.threads) for v in variants}
        med, _ = interleaved(runs, a.steps, a.repeats)
        print(f"{network}")
        print(f"  {'variant':<26} {'ms/step':>8} {'speed-up':>9} {'trials/h':>9}  (trials of {a.trial_steps} steps)")
        for v in variants:
            overhead = warm if v.startswith("compiled") else 0.0
            per_hour = 3600 / (overhead + a.trial_steps * med[v] / 1000)
            print(f"  {v:<26} {med[v]:8.2f} {med['eager'] / med[v]:8.2f}x {per_hour:9.1f}")
        saved = med["eager"] - med["compiled"]
        diag_cost = med["compiled"] / med["compiled, no diagnostics"] - 1
        print(f"  compile time: {cold:.1f} s cold (empty cache), {warm:.1f} s warm")
        if saved > 0:
            print(f"  break-even trial length: {cold / saved * 1000:.0f} steps cold, {warm / saved * 1000:.0f} warm")
        else:
            print("  break-even: never (the compiled step is not faster here)")
        print(f"  diagnostics cost in a compiled step: {100 * diag_cost:+.1f}% (goal <= 3%)")
        print(f"  compiled / eager steps per second: {med['eager'] / med['compiled']:.2f}x (goal >= 1.8x)\n")


if __name__ == "__main__":
    main()
