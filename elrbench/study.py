"""Run a study on Ray Tune: the only module that imports ray.

This is the first step of the Ray executor: one-worker trials run the training loop directly inside
a Tune function trainable, on an embedded local Ray cluster kept on 127.0.0.1 (or an existing
cluster by address). Each trial writes its own rows to the study folder, exactly as the inline
executor does, so finished trials are skipped on a rerun and nothing is written twice. Not yet
here: multi-worker DDP trials through Ray Train, detached jobs, resume of a dead driver through
Tune's own state, and the cluster recipes.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from elrbench.errors import UsageError
from elrbench.executor import failed_row
from elrbench.results import StudyStore
from elrbench.spec import StudySpec, TrialSpec

# Ray reads these when it is imported and when it starts: keep every process on loopback and send
# no usage statistics. Set on import of this module, before anything imports ray.
_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
for _k, _v in _RAY_ENV.items():
    os.environ.setdefault(_k, _v)

import ray  # noqa: E402 - after the environment above
from ray import tune  # noqa: E402


@contextlib.contextmanager
def ray_cluster(address: str | None = None, num_cpus: int | None = None,
                temp_dir: str | None = None) -> Iterator[dict[str, float]]:
    """Start an embedded local Ray cluster on 127.0.0.1 (address None) or connect to one; yields
    the cluster's resources and shuts down what it started."""

    made = None
    if address is None:
        # Unix socket paths under the temp dir must stay short (about 100 bytes), hence /tmp.
        made = None if temp_dir else tempfile.mkdtemp(prefix="elrbench-ray-")
        temp_dir = temp_dir or made
        # _node_ip_address: without it Ray advertises the machine's outward address (seen here).
        ray.init(address="local", include_dashboard=False, num_cpus=num_cpus, _temp_dir=temp_dir,
                 _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
        if made:  # Ray's session logs; each trial's own error and results live in the study folder
            shutil.rmtree(made, ignore_errors=True)


def _trainable(config: dict[str, Any]) -> None:
    """One trial inside Tune: the training loop itself, reporting each logged row to Tune."""
    from elrbench.train import run_trial

    trial = TrialSpec.model_validate(config["trial"])
    store = StudyStore(Path(config["study_dir"]))

    def report(step: int, total: int, row: dict[str, Any]) -> None:
        tune.report({"step": step, "total_steps": total,
                     **{k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}})

    row = run_trial(trial, store, progress=report)
    tune.report({"done": 1, "outcome": row["outcome"], "step": row["steps_done"],
                 "final_test_acc": row["final_test_acc"] if row["final_test_acc"] is not None else float("nan")})


def plan_concurrency(spec: StudySpec, cluster: dict[str, float]) -> int:
    """How many trials can run at once on this cluster; UsageError if a trial can never fit."""
    r = spec.resources
    if r.workers_per_trial > 1:
        raise UsageError("resources.workers_per_trial: the Ray executor runs one worker per trial for now; set it to 1")
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    if r.cpus_per_worker > cpus or r.gpus_per_worker > gpus:
        raise UsageError(f"resources: a trial needs {r.cpus_per_worker:g} CPU and {r.gpus_per_worker:g} GPU, the "
                         f"cluster has {cpus:g} CPU and {gpus:g} GPU in all; it would wait forever")
    fit = math.floor(cpus / r.cpus_per_worker)
    if r.gpus_per_worker > 0:
        fit = min(fit, math.floor(gpus / r.gpus_per_worker))
    return min(fit, r.max_concurrent_trials or fit)


def run_on_ray(spec: StudySpec, store: StudyStore, *, address: str | None = None, num_cpus: int | None = None,
               max_failures: int = 1, on_start: Callable[[str], None] | None = None,
               on_step: Callable[[str, int, int], None] | None = None,
               on_end: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run every unfinished trial of the study on Ray Tune; returns all rows in grid order."""

    trials = spec.expand()
    pending = [t for t in trials if not store.finished(t.trial_id)]
    by_config: dict[str, TrialSpec] = {t.trial_id: t for t in pending}

    progress = _Progress(store, by_config, on_start, on_step, on_end)

    with ray_cluster(address, num_cpus) as cluster:
        concurrent = plan_concurrency(spec, cluster)
        if pending:
            r = spec.resources
            resources = {"cpu": r.cpus_per_worker, "gpu": r.gpus_per_worker}
            tuner = tune.Tuner(
                tune.with_resources(_trainable, resources),
                param_space={"trial": tune.grid_search([t.model_dump(mode="json") for t in pending]),
                             "study_dir": str(store.root)},
                tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True,
                                            trial_dirname_creator=lambda tr: tr.config["trial"]["trial_id"]),
                run_config=tune.RunConfig(name="tune", storage_path=str(store.root), verbose=0,
                                          callbacks=[progress],
                                          failure_config=tune.FailureConfig(max_failures=max_failures)),
            )
            tuner.fit()
    return [store.result(t.trial_id) for t in trials if store.result(t.trial_id) is not None]


class _Progress(tune.Callback):
    """Forwards trial events to the driver's hooks and records failed trials in the store. Tune
    pickles its run config (for restore): the driver-side hooks stay out of the pickle."""

    def __init__(self, store: StudyStore, by_id: dict[str, TrialSpec], on_start, on_step, on_end) -> None:
        self.store, self.by_id = store, by_id
        self.on_start, self.on_step, self.on_end = on_start, on_step, on_end

    def __getstate__(self) -> dict:
        return {}

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.on_start:
            self.on_start(trial.config["trial"]["trial_id"])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.on_step and "total_steps" in result:
            self.on_step(trial.config["trial"]["trial_id"], int(result["step"]), int(result["total_steps"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self.store.result(trial.config["trial"]["trial_id"])
        if self.on_end and row:
            self.on_end(row)

    def on_trial_error(self, iteration, trials, trial, **info):
        t = self.by_id[trial.config["trial"]["trial_id"]]
        row = failed_row(t, _error_text(trial))
        self.store.write_result(row)
        if self.on_end:
            self.on_end(row)


def _error_text(trial: Any) -> str:
    err = getattr(trial, "error_file", None)
    try:
        text = Path(err).read_text() if err else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "the trial's process failed (see the Tune folder under the study)"


