"""The Ray executor against a real Ray cluster on 127.0.0.1 (started by elrbench itself).

One embedded cluster (2 CPUs) serves the tests of this module after the first, which checks the
start and shutdown of a cluster of its own."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from elrbench.errors import UsageError
from elrbench.executors.ray import plan_concurrency, ray_cluster, run_on_ray
from elrbench.spec import TrialSpec, validate_spec
from elrbench.store import StudyStore
from tests.conftest import Recorder, live, write_cifar


def test_plan_concurrency(base_spec):
    s = validate_spec(base_spec | {"resources": {"cpus_per_worker": 1}})
    assert plan_concurrency(s, {"CPU": 2.0}) == 2
    s = validate_spec(base_spec | {"resources": {"cpus_per_worker": 1, "max_concurrent_trials": 1}})
    assert plan_concurrency(s, {"CPU": 8.0}) == 1
    s = validate_spec(base_spec | {"resources": {"cpus_per_worker": 1, "gpus_per_worker": 0.25}})
    assert plan_concurrency(s, {"CPU": 16.0, "GPU": 1.0}) == 4  # fractional GPUs share one
    with pytest.raises(UsageError, match="wait forever"):
        plan_concurrency(s, {"CPU": 16.0})
    s = validate_spec(base_spec | {"resources": {"cpus_per_worker": 4}})
    with pytest.raises(UsageError, match="4 CPU"):
        plan_concurrency(s, {"CPU": 2.0})


def test_the_embedded_cluster_stays_on_loopback():
    with ray_cluster(num_cpus=1) as resources:
        import ray  # imported by elrbench first, with the environment that keeps it on loopback

        @ray.remote
        def where() -> str:
            return ray.util.get_node_ip_address()

        assert resources["CPU"] == 1.0
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())
        assert ray.get(where.remote()) == "127.0.0.1"
    assert not ray.is_initialized()


def test_a_process_that_imported_ray_first_is_refused():
    # Ray reads its loopback switch once, at import: elrbench cannot keep such a process on 127.0.0.1
    probe = ("import ray\nfrom elrbench.errors import ElrbenchError\nfrom elrbench.executors.ray import ray_cluster\n"
             "try:\n    ray_cluster().__enter__()\nexcept ElrbenchError as e:\n    print('refused:', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert "refused: ray was imported before elrbench" in r.stdout, r.stdout + r.stderr[-2000:]


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster(num_cpus=2) as resources:
        yield resources


def test_study_on_ray_completes_and_a_rerun_runs_nothing(base_spec, cluster):
    base_spec["grid"].update(depth=[2, 3], seed=[0, 1])
    base_spec["budget"].update(steps=8, log_every=4)
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    events = Recorder()
    rows = run_on_ray(s, store, events)
    ids = [t.trial_id for t in s.expand()]
    assert [r.trial_id for r in rows] == ids  # grid order, one row each
    assert all(r.outcome in ("trained", "untrained") for r in rows)
    assert sorted(events.started) == sorted(ids) and sorted(r.trial_id for r in events.finished) == sorted(ids)
    assert {tid for tid, step, total in events.steps if 1 <= step <= total == 8} == set(ids)  # progress reached it
    assert all(len(store.history(i)) >= 2 for i in ids)
    # the same trial run inline gives the same numbers (the executor does not change training)
    from elrbench.train import run_trial

    inline = run_trial(s.expand()[0])
    assert inline.final_test_acc == rows[0].final_test_acc
    again_events = Recorder()
    again = run_on_ray(s, StudyStore.create(s), again_events)
    assert again_events.started == [] and again == rows


def test_an_infrastructure_failure_is_retried_then_recorded(base_spec, tmp_path, cluster):
    sub = write_cifar(tmp_path / "c10")
    # a corrupt record: the file sizes pass the spec's check, loading fails inside the trial
    raw = bytearray((sub / "data_batch_2.bin").read_bytes())
    raw[0] = 200
    (sub / "data_batch_2.bin").write_bytes(bytes(raw))
    base_spec["workloads"] = [{"model": "plain_cnn", "dataset": "cifar10", "threshold": 0.5,
                               "data": {"dir": str(tmp_path / "c10")}}]
    base_spec["budget"].update(steps=4, batch_size=16)
    base_spec["resources"] = {"max_failures": 1}
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    (row,) = run_on_ray(s, store)
    assert row.outcome == "failed"
    assert "holds label 200" in row.error
    # Tune ran it twice (the first try and one retry) before giving up
    (err,) = (store.root / "tune").glob("*/error.txt")
    assert err.read_text().count("Failure #") == 2
    assert store.result(row.trial_id).outcome == "failed"


@pytest.mark.parametrize("compile", ["off", "on"])  # on: DDP through Ray Train with compiled steps
def test_a_ddp_trial_of_two_workers_averages_gradients(base_spec, cluster, compile):
    base_spec["resources"] = {"workers_per_trial": 2, "cpus_per_worker": 1, "compile": compile}
    base_spec["budget"].update(steps=10, log_every=5, checkpoint_every=4)  # rank 0 alone writes checkpoints
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    events = Recorder()
    (row,) = run_on_ray(s, store, events)
    assert row.outcome in ("trained", "untrained") and row.workers == 2
    assert row.compile == (None if compile == "off" else "on")
    assert {5, 10} <= {step for _, step, _ in events.steps}  # rank 0's rows reached Tune and the driver
    r0, r1 = row.ranks
    # same averaged gradients, hence the same weights, on both ranks; different data on each
    assert r0["grad_sum"] == r1["grad_sum"] and r0["param_sum"] == r1["param_sum"]
    assert r0["last_loss"] != r1["last_loss"]
    assert len(store.history(row.trial_id)) >= 2  # rank 0 wrote the history, once
    assert [w["pid"] for w in store.workers(row.trial_id)] and len(store.workers(row.trial_id)) == 2


def test_a_killed_worker_restarts_from_its_checkpoint_with_the_same_result(base_spec, cluster):
    base_spec["grid"].update(depth=[6])
    base_spec["budget"].update(steps=240, log_every=10, checkpoint_every=20, keep_checkpoints=2)
    base_spec["resources"] = {"cpus_per_worker": 1, "max_failures": 1}
    s = validate_spec(base_spec)
    (t,) = s.expand()
    store = StudyStore.create(s)
    tdir = store.trial_dir(t.trial_id)
    killed: list[int] = []

    def killer() -> None:  # kill the trial's process once it has checkpointed step 60
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if (tdir / "worker-0.json").exists() and any(
                    int(p.stem.split("_")[1]) >= 60 for p in (tdir / "checkpoints").glob("step_*.pt")):
                pid = store.workers(t.trial_id)[0]["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    th = threading.Thread(target=killer)
    th.start()
    (row,) = run_on_ray(s, store)
    th.join()
    assert killed, "the trial finished before it could be killed; make it longer"
    assert store.workers(t.trial_id)[0]["pid"] != killed[0]  # a new process finished it
    assert row.outcome in ("trained", "untrained") and row.steps_done == 240
    assert not list((tdir / "checkpoints").glob("*.pt"))  # removed once the trial finished
    from elrbench.train import run_trial

    clean = run_trial(t)  # the same trial, uninterrupted
    for k in ("final_test_acc", "final_test_loss", "final_train_loss", "spread_mean", "spread_max"):
        assert getattr(row, k) == getattr(clean, k), k
    steps = [h["step"] for h in store.history(t.trial_id)]
    assert steps == sorted(set(steps))  # no step recorded twice after the restart


def test_a_study_of_hundreds_of_trials_runs_to_the_end(base_spec, cluster):
    # correctness at scale (the speed is benchmarks/scale.py's): every trial's row lands in the store
    base_spec["workloads"] = [{"model": "bn_mlp", "dataset": "digits", "width": 8, "threshold": 0.5}]
    base_spec["grid"] = {"depth": [2], "lr": [0.1], "seed": list(range(300))}
    base_spec["budget"] = {"steps": 2, "batch_size": 64, "log_every": 2, "eval_every": 2}
    base_spec["resources"] = {"cpus_per_worker": 1}
    s = validate_spec(base_spec)
    store = StudyStore.create(s)

    class Counting(Recorder):  # the driver builds no trial per finished trial, and keeps none
        specs: list[int] = []

        def trial_finished(self, result) -> None:
            super().trial_finished(result)
            if len(self.finished) % 60 == 0:
                self.specs.append(live(TrialSpec))

    events = Counting()
    rows = run_on_ray(s, store, events)
    assert [r.trial_id for r in rows] == [t.trial_id for t in s.expand()]
    assert all(r.outcome in ("trained", "untrained") for r in rows) and len(events.finished) == 300
    assert len(events.specs) == 5 and max(events.specs) < 20, events.specs
    assert len((store.root / "trials.csv").read_text().splitlines()) == 1 + 300
    # Tune keeps what it needs to run and retry, not a second copy of every reported row
    tune = store.root / "tune"
    assert not list(tune.glob("*/progress.csv")) and not list(tune.glob("*/result.json"))


def test_a_failing_trial_in_a_chunk_fails_alone(base_spec, tmp_path, cluster):
    # 82 trials on 2 CPUs run as chunks of 3 (elrbench.executors.ray.chunked); workload B's data is corrupt,
    # so every B trial fails, and the chunk holding A's last trials and B's first runs A's and then
    # records B's failure
    sub = write_cifar(tmp_path / "c10")
    raw = bytearray((sub / "data_batch_2.bin").read_bytes())
    raw[0] = 200
    (sub / "data_batch_2.bin").write_bytes(bytes(raw))
    base_spec["workloads"] = [{"name": "a", "model": "bn_mlp", "dataset": "digits", "width": 8, "threshold": 0.5},
                              {"name": "b", "model": "bn_mlp", "dataset": "cifar10", "width": 8, "threshold": 0.5,
                               "data": {"dir": str(tmp_path / "c10")}}]
    base_spec["grid"] = {"depth": [2], "lr": [0.1], "seed": list(range(41))}
    base_spec["budget"] = {"steps": 2, "batch_size": 16, "log_every": 2, "eval_every": 2}
    base_spec["resources"] = {"cpus_per_worker": 1, "max_failures": 1}
    s = validate_spec(base_spec)
    from elrbench.executors.ray import chunked

    assert [len(c) for c in chunked(s.expand(), 2, 1)][:14] == [3] * 13 + [3]
    store = StudyStore.create(s)
    rows = run_on_ray(s, store, Recorder())
    by = {r.trial_id: r for r in rows}
    assert len(by) == 82
    assert all(by[t.trial_id].outcome in ("trained", "untrained") for t in s.expand() if t.workload.name == "a")
    failed = [by[t.trial_id] for t in s.expand() if t.workload.name == "b"]
    assert all(r.outcome == "failed" and "holds label 200" in r.error for r in failed), failed[0].error
