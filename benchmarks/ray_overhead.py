"""What Ray costs per trial: a study of small trials on the embedded Ray cluster against the inline
executor on the same trials, measured in one run.

    .venv/bin/python benchmarks/ray_overhead.py [--trials 16] [--steps 150] [--ddp-trials 2]

- inline: the trials one after another in this process (1 thread each, as on Ray).
- Ray, one worker per trial: as many at once as the cluster has CPUs. Per-trial overhead =
  (wall x concurrency - the trials' own wall time) / trials; goal under 1 s. Study wall against the
  ideal (the trials' own compute / CPUs); goal at most 1.25.
- Ray, 2-worker DDP trials (a TorchTrainer each, run one after another): per-trial overhead =
  (wall - the trials' own wall time) / trials.
The cluster start (ray.init) is timed apart and not charged to the trials.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from elrbench.executors import create_executor
from elrbench.executors.ray import ray_cluster, run_on_ray
from elrbench.spec import validate_spec
from elrbench.store import StudyStore


def spec(out: str, name: str, seeds: int, steps: int, workers: int = 1) -> dict:
    return {"name": name, "output_dir": out,
            "workloads": [{"model": "plain_cnn", "dataset": "digits", "threshold": 0.9}],
            "grid": {"depth": [8], "lr": [0.1], "seed": list(range(seeds))},
            "budget": {"steps": steps, "batch_size": 64, "log_every": 10},
            "resources": {"workers_per_trial": workers, "cpus_per_worker": 1}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--ddp-trials", type=int, default=2)
    a = ap.parse_args()
    cpus = os.cpu_count() or 1
    out = tempfile.mkdtemp(prefix="elrbench-bench-")

    s = validate_spec(spec(out, "inline", a.trials, a.steps))
    t0 = time.perf_counter()
    rows = create_executor("inline").run(s, StudyStore.create(s))
    inline_wall = time.perf_counter() - t0
    inline_own = sum(r.wall_s for r in rows)

    t0 = time.perf_counter()
    with ray_cluster(num_cpus=cpus):
        start_s = time.perf_counter() - t0
        s = validate_spec(spec(out, "ray", a.trials, a.steps))
        t0 = time.perf_counter()
        rows = run_on_ray(s, StudyStore.create(s))
        ray_wall = time.perf_counter() - t0
        ray_own = sum(r.wall_s for r in rows)
        d = validate_spec(spec(out, "ddp", a.ddp_trials, a.steps, workers=2))
        t0 = time.perf_counter()
        drows = run_on_ray(d, StudyStore.create(d))
        ddp_wall = time.perf_counter() - t0
        ddp_own = sum(r.wall_s for r in drows)

    conc = cpus  # one CPU per trial
    print(f"{a.trials} one-worker trials of {a.steps} steps (plain_cnn depth 8, digits), {cpus} CPUs")
    print(f"  inline:  {inline_wall:6.1f} s wall, trials' own {inline_own:6.1f} s")
    print(f"  Ray:     {ray_wall:6.1f} s wall, trials' own {ray_own:6.1f} s, {conc} at once "
          f"(cluster start {start_s:.1f} s, not counted)")
    print(f"  per-trial overhead on Ray: {(ray_wall * conc - ray_own) / a.trials:.2f} s (goal < 1 s)")
    print(f"  Ray wall / ideal (trials' own / CPUs): {ray_wall / (ray_own / conc):.2f} (goal <= 1.25)")
    print(f"  Ray wall / inline wall: {ray_wall / inline_wall:.2f}; trial compute on Ray / inline: "
          f"{ray_own / inline_own:.2f}")
    print(f"{a.ddp_trials} DDP trials of 2 workers, one after another")
    print(f"  Ray:     {ddp_wall:6.1f} s wall, trials' own {ddp_own:6.1f} s")
    print(f"  per-trial overhead of a DDP trial: {(ddp_wall - ddp_own) / a.ddp_trials:.1f} s")


if __name__ == "__main__":
    main()
