"""Scale: studies of 1,000 to 100,000 tiny trials on Ray, start to end.

    python benchmarks/scale.py                                   # 1000 5000 10000, 200 steps a trial
    python benchmarks/scale.py --trials 10000 20000 50000 100000 --steps 3   # the tiniest trial
    python benchmarks/scale.py --trials 1000 --nodes 2           # a 2-node loopback cluster (cluster/local_cluster.py)

Each study: bn_mlp of depth 2 on digits, one trial per seed, W&B off (its cost is measured apart,
--wandb-trials), run by `elrbench submit --no-report` in a process of its own. Printed per size:
seconds from the submit's start to the first finished trial; the study's wall time against the ideal
(the trials' own wall times summed over the CPUs: what a scheduler with no overhead would take),
the driver's peak memory (the submit process alone, not Ray's workers) and its slope per 1,000
trials against the size before, the time of `elrbench status` and `elrbench report`, and the study
folder's size. Goals (issue 25, on the 2-core machine): first trial within 10 s at every size, wall
within 1.15x ideal, driver slope under 2 KB per trial beyond the first 10,000 and peak under 1 GB at
100,000, status and report within 15 s at 100,000.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).parent / "elrbench")

DRIVER = """
import resource, sys
from elrbench.cli.app import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print("peak_rss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr, flush=True)
"""


def spec(out: Path, n: int, steps: int, tracking: str = "disabled") -> dict:
    return {"name": f"scale{n}", "output_dir": str(out),
            "workloads": [{"model": "bn_mlp", "dataset": "digits", "width": 8, "threshold": 0.5}],
            "grid": {"depth": [2], "lr": [0.1], "seed": list(range(n))},
            "budget": {"steps": steps, "batch_size": 64, "log_every": steps, "eval_every": steps},
            "resources": {"cpus_per_worker": 1}, "tracking": {"wandb": tracking}}


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_size(n: int, steps: int, out: Path, address: str | None, cpus: int) -> dict:
    path = out / f"scale{n}.yaml"
    path.write_text(yaml.safe_dump(spec(out, n, steps)))
    args = [sys.executable, "-c", DRIVER, "submit", str(path), "--no-report"]
    args += ["--address", address] if address else []
    # one seed per trial: a 100,000-trial spec holds more values than ELRBENCH_MAX_SPEC_NODES allows
    env = dict(os.environ, COLUMNS="120", ELRBENCH_MAX_SPEC_NODES=str(max(100_000, 2 * n)),
               ELRBENCH_MAX_TRIALS=str(max(100_000, n)))
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    first = None
    trials = None
    while proc.poll() is None:
        if first is None:
            folders = list(out.glob(f"scale{n}-*/trials/*/result.json"))
            if folders:
                first = time.monotonic() - t0
        time.sleep(0.05)
    wall = time.monotonic() - t0
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"submit failed ({proc.returncode}): {err[-2000:]}")
    peak_kb = int(next(line.split()[1] for line in err.splitlines() if line.startswith("peak_rss_kb")))
    (folder,) = out.glob(f"scale{n}-*")
    rows = [json.loads(p.read_text()) for p in folder.glob("trials/*/result.json")]
    trials = len(rows)
    own = sum(r["wall_s"] for r in rows)
    t = time.monotonic()
    subprocess.run([EXE, "status", str(folder)], capture_output=True, check=True, env=env)
    status_s = time.monotonic() - t
    t = time.monotonic()
    subprocess.run([EXE, "report", str(folder), "--no-wandb"], capture_output=True, check=True, env=env)
    report_s = time.monotonic() - t
    return {"trials": n, "finished": trials, "first_s": first, "wall_s": wall, "ideal_s": own / cpus,
            "ratio": wall / (own / cpus), "overhead_ms": 1000 * (wall - first - own / cpus) * cpus / n,
            "peak_mb": peak_kb / 1024, "status_s": status_s, "report_s": report_s,
            "folder_mb": du(folder) / 2**20, "tune_kb_per_trial": du(folder / "tune") / 1024 / n}


def wandb_cost(n: int, steps: int, out: Path) -> dict:
    """n trials inline without W&B, with an offline run per trial (tracking.runs: trial) and with the
    study's summary run only (runs: study): time and disk per trial."""
    res, disk = {}, {}
    for mode, runs in (("disabled", "trial"), ("offline", "trial"), ("offline", "study")):
        key = f"{mode}-{runs}"
        path = out / f"wb-{key}.yaml"
        s = spec(out / key, n, steps, tracking=mode)
        s["name"], s["tracking"]["runs"] = f"wb{mode}{runs}", runs
        path.write_text(yaml.safe_dump(s))
        t = time.monotonic()
        subprocess.run([EXE, "submit", str(path), "--executor", "inline"], capture_output=True, check=True)
        res[key] = time.monotonic() - t
        disk[key] = sum(du(p) for p in (out / key).glob("wb*/wandb"))
    return {"trials": n, **{f"{k}_s": (res[k] - res["disabled-trial"]) / n for k in ("offline-trial", "offline-study")},
            **{f"{k}_kb": disk[k] / 1024 / n for k in ("offline-trial", "offline-study")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, nargs="+", default=[1000, 5000, 10000])
    ap.add_argument("--steps", type=int, default=200, help="steps a trial (200: about 0.15 s of training)")
    ap.add_argument("--nodes", type=int, default=1, help="1: the embedded cluster; 2 or more: a loopback "
                                                         "cluster of that many 1-CPU nodes (cluster/local_cluster.py)")
    ap.add_argument("--wandb-trials", type=int, default=100, help="trials for the W&B cost (0: skip)")
    a = ap.parse_args()
    cpus = os.cpu_count() or 1
    out = Path(tempfile.mkdtemp(prefix="elrbench-scale-"))
    cluster, address = None, None
    try:
        if a.nodes > 1:
            addr_file = out / "address"
            cluster = subprocess.Popen([sys.executable, str(ROOT / "cluster" / "local_cluster.py"), "--workers",
                                        str(a.nodes - 1), "--cpus", "1", "--address-file", str(addr_file)],
                                       stdout=subprocess.DEVNULL, start_new_session=True)
            while not addr_file.exists():
                time.sleep(0.2)
            address, cpus = addr_file.read_text().strip(), a.nodes
        where = f"{a.nodes}-node loopback cluster at {address}" if address else "the embedded cluster"
        print(f"{where}, {cpus} CPUs; bn_mlp depth 2 on digits, {a.steps} steps a trial, W&B off", flush=True)
        print("| trials | first trial (s) | wall (s) | ideal (s) | wall / ideal | overhead per trial (ms) "
              "| driver peak (MB) | slope (KB/trial) | status (s) | report (s) | study folder (MB) | Tune KB/trial |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
        before = None
        for n in a.trials:
            r = run_size(n, a.steps, out, address, cpus)
            slope = (f"{(r['peak_mb'] - before['peak_mb']) * 1024 / (n - before['trials']):.2f}"
                     if before and n > before["trials"] else "")
            print(f"| {n} | {r['first_s']:.1f} | {r['wall_s']:.0f} | {r['ideal_s']:.0f} | {r['ratio']:.2f} | "
                  f"{r['overhead_ms']:.0f} | "
                  f"{r['peak_mb']:.0f} | {slope} | {r['status_s']:.1f} | {r['report_s']:.1f} | {r['folder_mb']:.0f} | "
                  f"{r['tune_kb_per_trial']:.1f} |", flush=True)
            before = r
            shutil.rmtree(next(out.glob(f"scale{n}-*")), ignore_errors=True)  # 100,000 trials fill a disk
        if a.wandb_trials:
            w = wandb_cost(a.wandb_trials, a.steps, out)
            sec, kb = w["offline-trial_s"], w["offline-trial_kb"]
            print(f"W&B offline, tracking.runs: trial, {w['trials']} trials inline (the report included): "
                  f"{sec:.3f} s and {kb:.1f} KB per trial; at 100,000 trials about {sec * 1e5 / 60:.0f} "
                  f"core-minutes and {kb * 1e5 / 2**20:.2f} GB", flush=True)
            sec, kb = w["offline-study_s"] * w["trials"], w["offline-study_kb"] * w["trials"]
            print(f"W&B offline, tracking.runs: study, the same {w['trials']} trials: {sec:.1f} s and {kb:.0f} KB "
                  "for the study (its summary run; the trials are rows of its table)", flush=True)
    finally:
        if cluster is not None:
            os.killpg(cluster.pid, signal.SIGTERM)
            cluster.wait(60)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
