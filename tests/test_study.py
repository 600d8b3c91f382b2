"""The Ray executor against a real Ray cluster on 127.0.0.1 (started by elrbench itself).

One embedded cluster (2 CPUs) serves the tests of this module after the first, which checks the
start and shutdown of a cluster of its own."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from elrbench.errors import UsageError
from elrbench.results import StudyStore
from elrbench.spec import validate_spec
from elrbench.study import plan_concurrency, ray_cluster, run_on_ray
from tests.conftest import write_cifar


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
    import ray

    @ray.remote
    def where() -> str:
        return ray.util.get_node_ip_address()

    with ray_cluster(num_cpus=1) as resources:
        assert resources["CPU"] == 1.0
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())
        assert ray.get(where.remote()) == "127.0.0.1"
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster(num_cpus=2) as resources:
        yield resources


def test_study_on_ray_completes_and_a_rerun_runs_nothing(base_spec, cluster):
    base_spec["grid"].update(depth=[2, 3], seed=[0, 1])
    base_spec["budget"].update(steps=8, log_every=4)
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    started, steps, ended = [], [], []
    rows = run_on_ray(s, store, on_start=started.append,
                      on_step=lambda tid, step, total: steps.append((tid, step, total)), on_end=ended.append)
    ids = [t.trial_id for t in s.expand()]
    assert [r["trial_id"] for r in rows] == ids  # grid order, one row each
    assert all(r["outcome"] in ("trained", "untrained") for r in rows)
    assert sorted(started) == sorted(ids) and len(ended) == 4
    assert {(tid, 8, 8) for tid in ids} <= set(steps)  # progress reached the driver
    assert all(len(store.history(i)) >= 2 for i in ids)
    # the same trial run inline gives the same numbers (the executor does not change training)
    from elrbench.train import run_trial

    inline = run_trial(s.expand()[0])
    assert inline["final_test_acc"] == rows[0]["final_test_acc"]
    started.clear()
    again = run_on_ray(s, StudyStore.create(s), on_start=started.append)
    assert started == [] and again == rows


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
    assert row["outcome"] == "failed"
    assert "holds label 200" in row["error"]
    # Tune ran it twice (the first try and one retry) before giving up
    (err,) = (store.root / "tune").glob("*/error.txt")
    assert err.read_text().count("Failure #") == 2
    assert store.result(row["trial_id"])["outcome"] == "failed"


def test_a_ddp_trial_of_two_workers_averages_gradients(base_spec, cluster):
    base_spec["resources"] = {"workers_per_trial": 2, "cpus_per_worker": 1}
    base_spec["budget"].update(steps=10, log_every=5, checkpoint_every=4)  # rank 0 alone writes checkpoints
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    steps = []
    (row,) = run_on_ray(s, store, on_step=lambda tid, step, total: steps.append(step))
    assert row["outcome"] in ("trained", "untrained") and row["workers"] == 2
    assert {5, 10} <= set(steps)  # rank 0's rows reached Tune and the driver
    r0, r1 = row["ranks"]
    # same averaged gradients, hence the same weights, on both ranks; different data on each
    assert r0["grad_sum"] == r1["grad_sum"] and r0["param_sum"] == r1["param_sum"]
    assert r0["last_loss"] != r1["last_loss"]
    assert len(store.history(row["trial_id"])) >= 2  # rank 0 wrote the history, once
    assert [w["pid"] for w in store.workers(row["trial_id"])] and len(store.workers(row["trial_id"])) == 2


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
    assert row["outcome"] in ("trained", "untrained") and row["steps_done"] == 240
    assert not list((tdir / "checkpoints").glob("*.pt"))  # removed once the trial finished
    from elrbench.train import run_trial

    clean = run_trial(t)  # the same trial, uninterrupted
    for k in ("final_test_acc", "final_test_loss", "final_train_loss", "spread_mean", "spread_max"):
        assert row[k] == clean[k], k
    steps = [h["step"] for h in store.history(t.trial_id)]
    assert steps == sorted(set(steps))  # no step recorded twice after the restart
