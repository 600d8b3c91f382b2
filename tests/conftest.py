from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elrbench.executors import Events

ROOT = Path(__file__).resolve().parents[1]
EXE = shutil.which("elrbench", path=str(Path(sys.executable).parent)) or "elrbench"  # the installed command


def cli(*args: str, cwd: Path | None = None, columns: int = 200, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """The CLI as a user meets it: the installed `elrbench` command in a subprocess, plain output."""
    e = dict(os.environ, COLUMNS=str(columns), NO_COLOR="1", **(env or {}))
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout)

# Modules whose tests start real components (a Ray cluster, the CLI in a subprocess, a W&B server, a
# browser, a wheel build) or run studies: marked slow, so that `pytest -m "not slow"` is a developer's
# quick loop. CI and the README's test command run everything.
SLOW_MODULES = {"test_study", "test_cluster", "test_jobs", "test_cli", "test_hardening", "test_damaged",
                "test_wandb_server", "test_packaging", "test_claims", "test_fuzz", "test_report", "test_compile"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


BASE = {
    "name": "t",
    "workloads": [{"model": "plain_cnn", "dataset": "digits", "threshold": 0.9}],
    "grid": {"depth": [3], "lr": [0.1]},
    "budget": {"steps": 20, "batch_size": 64, "log_every": 5},
    "tracking": {"wandb": "disabled"},  # tests of W&B turn it on (tests/test_tracking.py)
}


@pytest.fixture
def base_spec(tmp_path) -> dict:
    d = copy.deepcopy(BASE)
    d["output_dir"] = str(tmp_path / "runs")
    return d


def deep_noskip(spec: dict, steps: int = 10, **grid):
    """A small deep no-skip ResNet (resnet_v1 20, no_short, width 8) on digits, every step logged."""
    from elrbench.spec import validate_spec

    d = copy.deepcopy(spec)
    d["workloads"][0].update(model="resnet_v1", model_options={"skip": "no_short"}, width=8)
    d["grid"].update(depth=[20], **grid)
    d["budget"].update(steps=steps, log_every=1, batch_size=64)
    return validate_spec(d)


def write_cifar(folder: Path, name: str = "cifar10", n_train_per_file: int = 20, n_test: int = 20,
                seed: int = 0) -> Path:
    """Write a small CIFAR folder in the official binary layout (records of label byte(s) + 3072 pixels)."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        sub, files, lb, classes = folder / "cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], 1, 10
        test = "test_batch.bin"
    else:
        sub, files, lb, classes = folder / "cifar-100-binary", ["train.bin"], 2, 100
        test = "test.bin"
    sub.mkdir(parents=True, exist_ok=True)
    for fname, n in [(f, n_train_per_file) for f in files] + [(test, n_test)]:
        rec = np.zeros((n, lb + 3072), dtype=np.uint8)
        rec[:, lb - 1] = rng.integers(0, classes, n)
        if lb == 2:
            rec[:, 0] = rng.integers(0, 20, n)
        rec[:, lb:] = rng.integers(0, 256, (n, 3072))
        rec.tofile(sub / fname)
    return sub


class Recorder(Events):
    """Executor events, recorded."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.steps: list[tuple[str, int, int]] = []
        self.finished: list = []
        self.rounds: list[tuple[int, int]] = []  # an adaptive search's rounds: (number, trials)
        self.over: list[str] = []

    def trial_started(self, trial_id: str) -> None:
        self.started.append(trial_id)

    def progress(self, trial_id: str, step: int, total: int) -> None:
        self.steps.append((trial_id, step, total))

    def trial_finished(self, result) -> None:
        self.finished.append(result)

    def round_started(self, number: int, trials: int, arms: list[str]) -> None:
        self.rounds.append((number, trials))

    def search_finished(self, why: str, arms: list[str]) -> None:
        self.over.append(why)


class Died(Exception):
    """Raised from a progress callback: the trial stops there, as if its process had died."""


def stop_at(step: int):
    """A progress callback that stops the trial at the first row logged at or after `step`."""
    def progress(s: int, total: int, row: dict) -> None:
        if s >= step:
            raise Died(s)

    return progress


def live(kind: type) -> int:
    """How many objects of exactly this type are alive (a test that a process keeps nothing per trial)."""
    import gc

    gc.collect()
    return sum(type(o) is kind for o in gc.get_objects())


def result_row(depth, warmup, seed, outcome, acc, lr=0.1):
    """A TrialResult of one grid point, for tests of tables and reports built from rows."""
    from elrbench.result import TrialResult

    return TrialResult(trial_id=f"t{depth}{warmup}{seed}{lr}", index=0, workload="w", lr=lr, optimizer="sgd",
                       schedule="constant", depth=depth, warmup=warmup, seed=seed, outcome=outcome, final_test_acc=acc)
