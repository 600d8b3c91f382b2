"""What a tiny trial costs outside its own time, against what this disk charges for a new file.

    python benchmarks/trial_cost.py                      # 400 trials in a temporary folder, then on /dev/shm
    python benchmarks/trial_cost.py --dir /data --trials 1000

The loop is a chunk's (elrbench/executors/ray.py, _run_chunk and _run_one) without Ray: for each
trial its spec is built, its result looked for, its worker note written and the trial run with the
study folder as its store (history, layers and result written as in a study). Printed per folder:
a trial's own time (TrialResult.wall_s: set-up, training, evaluation), the time outside it (building
the trial, the files, the result), and, measured in the same run on the same file system, the cost
of creating a file (os.open with O_CREAT | O_EXCL, nothing written or synced) and of syncing a
small one. The file system on /dev/shm (tmpfs: memory) is the baseline that shows what the disk
adds. wall / ideal of a study on Ray (benchmarks/scale.py) is at least (own + outside) / own: Tune adds its own.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import spec as scale_spec  # noqa: E402 - the scale benchmark's tiniest trial

FILES_PER_TRIAL = 5  # its folder, worker-0.json, history.jsonl, layers.jsonl, result.json


def disk_costs(where: Path, n: int = 500) -> tuple[float, float]:
    """(ms to create an empty file, ms to write 2 KB and fsync it), means of n each (a trial pays the
    mean: on a journaling file system a few creates wait for a journal commit, which a median hides)."""
    d = Path(tempfile.mkdtemp(dir=where, prefix="disk-"))
    creates, syncs = [], []
    try:
        for i in range(n):
            t = time.perf_counter()
            fd = os.open(d / f"c{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            creates.append(time.perf_counter() - t)
            os.write(fd, b"x" * 2048)
            t = time.perf_counter()
            os.fsync(fd)
            syncs.append(time.perf_counter() - t)
            os.close(fd)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 1000 * sum(creates) / n, 1000 * sum(syncs) / n


def trial_loop(where: Path, n: int, steps: int) -> tuple[float, float]:
    """(ms a trial of its own, ms a trial outside it), over n trials after 20 to warm up."""
    from elrbench.spec import load_spec
    from elrbench.store import StudyStore
    from elrbench.train import run_trial

    out = Path(tempfile.mkdtemp(dir=where, prefix="trials-"))
    try:
        path = out / "s.yaml"
        path.write_text(yaml.safe_dump(scale_spec(out, n + 20, steps)))
        s = load_spec(path, [])
        store = StudyStore.create(s)

        def run(lo: int, hi: int) -> float:
            own = 0.0
            for i in range(lo, hi):
                trial = s.trial(i)
                if store.finished(trial.trial_id):
                    continue
                store.write_worker(trial.trial_id, 0, node_id="none")
                own += run_trial(trial, store).wall_s
            return own

        run(0, 20)  # imports, the first optimizer (torch._dynamo), layer discovery
        t = time.perf_counter()
        own = run(20, 20 + n)
        total = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return 1000 * own / n, 1000 * (total - own) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="the folder to measure")
    ap.add_argument("--baseline", type=Path, default=Path("/dev/shm"), help="a memory file system to compare with")
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    print(f"bn_mlp depth 2 on digits, {a.steps} steps a trial, {a.trials} trials after 20 to warm up; ms")
    print("| folder | own a trial | outside a trial | wall / ideal (own + outside) / own | file create "
          "| 2 KB fsync | outside in files created (x5 a trial) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = {}
    for where in (a.dir, a.baseline):
        if not where.is_dir():
            print(f"| {where} | (not a folder: left out) | | | | | |")
            continue
        create, sync = disk_costs(where)
        own, outside = trial_loop(where, a.trials, a.steps)
        rows[where] = outside
        print(f"| {where} | {own:.2f} | {outside:.2f} | {(own + outside) / own:.2f} | {create:.3f} | {sync:.3f} "
              f"| {FILES_PER_TRIAL * create:.2f} |", flush=True)
    if len(rows) == 2:
        print(f"outside a trial: {rows[a.dir]:.2f} ms on {a.dir} against {rows[a.baseline]:.2f} ms on "
              f"{a.baseline} (ratio {rows[a.dir] / rows[a.baseline]:.2f}), in the same run")


if __name__ == "__main__":
    main()
