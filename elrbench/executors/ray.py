"""Run a study on Ray Tune: the only module that imports ray.

One-worker trials run in chunks: a Tune trial (a function trainable) runs a few grid points one
after another (one each for small studies; about 20 chunks per concurrent slot for large ones, so
Tune's own cost of about 25 ms a trial is paid per chunk). Tune's configs are small (the study folder
and the chunk's indices); the driver puts the validated spec in Ray's object store once
(tune.with_parameters), each chunk's process takes it from there and builds its trials alone. A
trial with several workers is a Tune trial of its own that builds a Ray Train TorchTrainer (DDP, gloo
on CPU, nccl on GPU) from inside its trainable, as Train V2 requires; its ranks read the spec from
the study folder, and rank 0's rows reach Tune through TuneReportCallback. The cluster is an
embedded one kept on 127.0.0.1, or an existing one by address.

Fault tolerance rests on the study folder, not on Tune's experiment state: each trial writes its own
rows and checkpoints there, so a retried trial (a lost worker or node) continues from its last
checkpoint, and a study whose driver died is finished by running it again (`elrbench resume`):
finished trials are skipped, so nothing runs or is written twice. Multi-node clusters therefore need
the output_dir on storage every node sees.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

from elrbench.errors import ElrbenchError, UsageError
from elrbench.executors import Events, Executor
from elrbench.result import TrialResult
from elrbench.spec import StudySpec, TrialSpec
from elrbench.store import StudyStore

# Ray reads these when it is imported and when it starts. Set (unless the user set them) by _ray()
# just before ray is first imported or started, never on import of this module; Ray's own
# processes inherit them. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps every process on 127.0.0.1:
# without it an embedded cluster advertises and listens on the machine's outward interface, and a
# driver joining 127.0.0.1:PORT looks for the cluster at the outward address and times out (both
# seen here). A user joining a real multi-node cluster sets it to 1 in the environment. No usage
# statistics; Tune prints nothing at verbose=0 (elrbench shows progress itself). Tune's own JSON, CSV
# and TensorBoard loggers are off: they wrote about 80 KB per trial (every reported row, again) that
# nothing reads, since each trial keeps its rows in the study folder; Tune still records what it needs
# to run and retry (its experiment state and each trial's error).
_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0",
            "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
# Ray Train V2's controller polls its workers every 2 s, and each ray.train.report waits for that
# poll: measured here 1.8 s per report (a 2-worker trial of 22 reports spent 39 s waiting), 0.1 s at
# a 0.1 s interval. Trials need the workers' processes to inherit it: set before the cluster starts,
# and sent in the job's runtime environment to an existing cluster.
_TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def _ray(embedded: bool = False):
    """The ray module (with ray.train and ray.tune), imported after the environment it reads is in
    place. embedded: this process is about to start an embedded cluster.

    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is first imported: a process that
    imported ray before elrbench could set it would advertise the machine's outward address, so an
    embedded cluster is refused there rather than started."""
    imported_before = "ray" in sys.modules
    for k, v in {**_RAY_ENV, **_TRAIN_ENV}.items():
        os.environ.setdefault(k, v)
    import ray
    import ray.train
    import ray.tune
    from ray._private import ray_constants  # the switch as Ray read it

    if embedded and imported_before and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and \
            ray_constants.ENABLE_RAY_CLUSTER:
        raise ElrbenchError("ray was imported before elrbench could keep it on 127.0.0.1: set "
                            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the environment before importing ray")
    return ray


# A Ray cluster's address (its GCS, host:port, or a Ray Client server, ray://host:port) speaks gRPC:
# HTTP/2 without TLS. Before ray.init, which retries a wrong address for ever and then ignores
# SIGTERM (seen with Ray 2.60), the address is checked: a valid port, something listening, and an
# HTTP/2 server there (RFC 9113, section 3.4: the client preface, then an empty SETTINGS frame; a
# server answers with a SETTINGS frame of its own, frame type 0x4).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
PROBE_S = 5.0


def check_address(address: str) -> None:
    """UsageError, within about 2 x PROBE_S, unless a gRPC server answers at a Ray address.
    'auto' (the cluster this machine's `ray start` recorded) is left to Ray."""
    if address == "auto":
        return
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port_text = rest.rpartition(":")
    hint = "give the head's address as `ray start --head` printed it, e.g. 127.0.0.1:6379 or ray://127.0.0.1:10001"
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"--address {address}: not host:port with a port from 1 to 65535; {hint}")
    host, port = host.strip("[]"), int(port_text)
    try:
        with socket.create_connection((host, port), timeout=PROBE_S) as sock:
            sock.settimeout(PROBE_S)
            sock.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except ConnectionRefusedError:
        raise UsageError(f"--address {address}: nothing listens there (is the Ray head running?); {hint}") from None
    except TimeoutError:
        raise UsageError(f"--address {address}: no answer within {PROBE_S:g} s; {hint}") from None
    except OSError as e:
        raise UsageError(f"--address {address}: cannot connect ({e.strerror or e}); {hint}") from None
    if len(head) < 9 or head[3] != 4:
        raise UsageError(f"--address {address}: something listens there, but not a Ray cluster (no gRPC "
                         f"server answered); {hint}")


CONNECT_S = 60.0  # the most ray.init may take to join an existing cluster


@contextlib.contextmanager
def _bounded(what: str, seconds: float) -> Iterator[None]:
    """Run a blocking call that may never return and may hold the main thread in C++ code, where no
    Python signal handler runs (ray.init on a wrong address): past `seconds`, or on SIGTERM / SIGINT,
    say so in one line and exit (2, or 128 + the signal). A thread waits on the signal wakeup fd,
    which CPython's C-level handler writes to from any thread, so Ctrl-C and SIGTERM always work."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    done = threading.Event()
    old = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def watch() -> None:
        import select

        ready, _, _ = select.select([r], [], [], seconds)
        if done.is_set():
            return
        if ready:
            sig = os.read(r, 1)[0]
            sys.stderr.write(f"stopped ({signal.Signals(sig).name}) while waiting for {what}\n")
            os._exit(128 + sig)
        sys.stderr.write(f"error: {what}: no connection within {seconds:g} s; is it a Ray cluster's address, "
                         "and does the cluster run the same Ray version?\n")
        os._exit(2)

    t = threading.Thread(target=watch, daemon=True, name="elrbench-connect-watch")
    t.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(old_fd)
        for sig, handler in old.items():
            signal.signal(sig, handler)
        os.write(w, b"\0")  # wake the watcher, which sees `done` and returns
        t.join()
        os.close(r)
        os.close(w)


@contextlib.contextmanager
def ray_cluster(address: str | None = None, num_cpus: int | None = None,
                temp_dir: str | None = None) -> Iterator[dict[str, float]]:
    """Start an embedded local Ray cluster on 127.0.0.1 (address None) or connect to one; yields
    the cluster's resources and shuts down what it started."""
    ray = _ray(embedded=address is None)
    if ray.is_initialized():  # already connected (a test session's cluster, or a caller's): use it as it is
        yield ray.cluster_resources()
        return
    made = None
    if address is None:
        # Unix socket paths under the temp dir must stay short (about 100 bytes), hence /tmp.
        made = None if temp_dir else tempfile.mkdtemp(prefix="elrbench-ray-")
        temp_dir = temp_dir or made
        # _node_ip_address: without it Ray advertises the machine's outward address (seen here).
        # Ray's token authentication stays on (its default); its notice saying so is not printed
        # into every study's output (README.md says it).
        notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level, notice.level = notice.level, logging.ERROR
        try:
            ray.init(address="local", include_dashboard=False, num_cpus=num_cpus, _temp_dir=temp_dir,
                     _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
        finally:
            notice.setLevel(level)
    else:
        with _bounded(f"--address {address}", CONNECT_S):
            ray.init(address=address, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": {k: os.environ[k] for k in _TRAIN_ENV}})
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
        if made:  # Ray's session logs; each trial's own error and results live in the study folder
            shutil.rmtree(made, ignore_errors=True)


class _Reports:
    """What a Tune trial's trials tell the driver: their progress and which finished. A report waits
    for the driver to take it (a few ms, as long as a tiny trial's training: it doubled the wall of
    3-step trials), so one-worker trials report at most twice a second in all, the trials that
    finished meanwhile as a list; the last ones go when the chunk ends. DDP ranks must report alike
    (Ray Train): each of their steps goes."""

    def __init__(self, report: Callable[[dict[str, Any]], None], every: float = 0.5) -> None:
        self.report, self.every, self.last, self.done = report, every, 0.0, []

    def _due(self) -> bool:
        return time.monotonic() - self.last > self.every

    def send(self, row: dict[str, Any]) -> None:
        self.report({**row, "finished": self.done})  # not "done": Tune stops a trial on it
        self.done, self.last = [], time.monotonic()

    def progress(self, index: int, step: int, total: int) -> None:
        if self.every == 0 or self._due():
            self.send({"index": index, "step": step, "total_steps": total})

    def finished(self, index: int, steps: Optional[int]) -> None:
        self.done.append(index)
        if self.every == 0 or self._due():
            self.send({"index": index, "step": steps})

    def flush(self) -> None:
        if self.done:
            self.send({})


def _run_one(trial: TrialSpec, store: StudyStore, reports: _Reports, ddp_rank: int | None = None) -> None:
    """The training loop of one trial (or one DDP rank); its progress and its end sent through
    `reports` (only progress: the rows themselves are in the study folder, and every key sent to
    Tune is kept in its experiment state for every trial, 21 KB a trial when whole rows were sent)."""
    from elrbench.train import run_trial

    ray = _ray()
    where: dict[str, Any] = {"node_id": ray.get_runtime_context().get_node_id()}
    if ddp_rank is not None:  # the worker group's placement group, removed by the driver at the end
        pg = ray.util.get_current_placement_group()
        where["placement_group"] = pg.id.hex() if pg else None
    store.write_worker(trial.trial_id, ddp_rank or 0, **where)
    result = run_trial(trial, store, progress=lambda step, total, row: reports.progress(trial.index, step, total))
    reports.finished(trial.index, result.steps_done)


def _run_chunk(config: dict[str, Any], report: Callable[[dict[str, Any]], None], spec: StudySpec) -> None:
    """One-worker trials, a chunk of them one after another in one Tune trial (Tune's own cost, about
    25 ms a trial here, is paid once per chunk). A retried chunk skips what it finished; a trial that
    fails lets the others run, then fails the chunk so that Tune retries it."""
    store = StudyStore(Path(config["study_dir"]))
    chunk = list(indices(config))
    errors = []
    reports = _Reports(report)
    try:
        for i in chunk:
            trial = spec.trial(i)
            if store.finished(trial.trial_id):
                continue
            try:
                _run_one(trial, store, reports)
            except Exception as e:  # noqa: BLE001 - recorded below; a lone trial's error goes to Tune as it is
                if len(chunk) == 1:
                    raise
                errors.append(f"{trial.trial_id}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        reports.flush()
    if errors:
        raise RuntimeError(f"{len(errors)} of the {len(chunk)} trials of this chunk failed; the first: {errors[0]}")


def _ddp_worker(config: dict[str, Any]) -> None:
    """One rank of a DDP trial, on a Ray Train worker (torch.distributed is set up by TorchTrainer).
    Every rank reports the same number of times, as Ray Train requires; Tune sees rank 0's rows."""
    train = _ray().train
    (index,) = indices(config)
    trial = _study_spec(config["study_dir"]).trial(index)
    _run_one(trial, StudyStore(Path(config["study_dir"])), _Reports(train.report, every=0),
             ddp_rank=train.get_context().get_world_rank())


@functools.lru_cache(maxsize=4)
def _study_spec(study_dir: str) -> StudySpec:
    """The study's spec, read from its folder once per process of a DDP rank (Tune's configs stay
    small: the folder and the trials' indices; each trial is built alone, StudySpec.trial)."""
    return StudyStore(Path(study_dir)).spec()


def _trainable(config: dict[str, Any], spec: StudySpec) -> None:
    """One Tune trial: a chunk of one-worker trials run here, or one DDP trial as a TorchTrainer that
    runs it on each rank. spec: the driver's, from Ray's object store (tune.with_parameters; 0.37 MB
    unpickled in about 3 ms at 100,000 seeds, where reading the folder's spec.yaml cost each chunk's process
    1-2.7 s before its first trial; docs/performance.md)."""
    r = spec.resources
    ray = _ray()
    train, tune = ray.train, ray.tune
    if r.workers_per_trial == 1:
        _run_chunk(config, tune.report, spec)
        return
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    (index,) = indices(config)
    trial = spec.trial(index)
    use_gpu = r.gpus_per_worker > 0
    trainer = TorchTrainer(
        _ddp_worker, train_loop_config=config,
        scaling_config=train.ScalingConfig(
            num_workers=r.workers_per_trial, use_gpu=use_gpu,
            resources_per_worker={"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if use_gpu else {})}),
        run_config=train.RunConfig(
            name=trial.trial_id, storage_path=str(Path(config["study_dir"]) / "train"),
            callbacks=[TuneReportCallback()],
            # a lost worker restarts the whole group, which continues from the trial's own checkpoint
            failure_config=train.FailureConfig(max_failures=r.max_failures)),
    )
    trainer.fit()


def _remove_worker_groups(store: StudyStore, trial_id: str) -> None:
    """Ray 2.60's TorchTrainer, run from a Tune trainable, often leaves its workers' placement group
    behind after fit (ray-project/ray#54305), holding their CPUs for the rest of the study. The
    driver removes it when the trial ends (from the trainable itself it raced and sometimes failed)."""
    ray = _ray()
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    for h in {w.get("placement_group") for w in store.workers(trial_id)} - {None}:
        with contextlib.suppress(Exception):  # already gone
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(h))))


def plan_concurrency(spec: StudySpec, cluster: dict[str, float]) -> int:
    """How many trials can run at once on this cluster; UsageError if a trial can never fit."""
    r = spec.resources
    n = r.workers_per_trial
    need_cpu, need_gpu = n * r.cpus_per_worker, n * r.gpus_per_worker
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    if need_cpu > cpus or need_gpu > gpus:
        raise UsageError(f"resources: a trial needs {need_cpu:g} CPU and {need_gpu:g} GPU ({n} worker(s)), the "
                         f"cluster has {cpus:g} CPU and {gpus:g} GPU in all; it would wait forever")
    fit = math.floor(cpus / need_cpu + 1e-9)
    if need_gpu > 0:
        fit = min(fit, math.floor(gpus / need_gpu + 1e-9))
    return min(fit, r.max_concurrent_trials or fit)


def run_on_ray(spec: StudySpec, store: StudyStore, events: Events | None = None, *, address: str | None = None,
               num_cpus: int | None = None, brief: bool = False) -> list[TrialResult]:
    """Run every unfinished trial of the study on Ray Tune; returns all results in grid order (brief:
    as TrialResult.brief(), Executor.run)."""
    tune = _ray(embedded=address is None).tune
    events = events or Events()
    if spec.adaptive:
        return _run_adaptive(spec, store, events, tune, address, num_cpus)
    # Which trials are left is worked out while Ray starts (seconds, mostly waiting on its
    # processes): their indices only, a range or 8 bytes a trial (StudyStore.pending). The driver
    # keeps nothing per trial while the study runs; the results are read back at the end.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        left = pool.submit(store.pending, spec)
        with ray_cluster(address, num_cpus) as cluster:
            pending = left.result()
            events.planned(spec.n_trials, spec.n_trials - len(pending))
            _tune(spec, store, events, tune, pending, plan_concurrency(spec, cluster))
    if brief:
        return store.write_table(briefs=True)
    results = store.results()
    store.write_table(results)
    return results


def _run_adaptive(spec: StudySpec, store: StudyStore, events: Events, tune: Any, address: Optional[str],
                  num_cpus: Optional[int]) -> list[TrialResult]:
    """An adaptive search on Ray Tune: its searcher hands out each round's trials as the outcomes of
    the round before arrive (elrbench/adaptive.py); returns the results of the trials it chose."""
    from elrbench.adaptive import Design, outcomes

    with ray_cluster(address, num_cpus) as cluster:
        design = Design(spec)
        known = outcomes(spec, store, set())  # failures of an earlier run are run again
        design.advance(known)  # replays the rounds that finished earlier
        done_before = len(design.trials()) - len(design.pending)
        events.planned(spec.max_trials, done_before)
        if design.pending:
            events.round_started(design.rounds, len(design.pending), design.status())
        concurrent = plan_concurrency(spec, cluster)
        searcher = _adaptive_searcher(spec, store, design, events, concurrent)
        _tune(spec, store, events, tune, None, concurrent, searcher)
        events.search_finished(design.finished or "", design.status())
    store.write_table()
    return design.results(store)


def _tune(spec: StudySpec, store: StudyStore, events: Events, tune: Any, pending: Optional[Sequence[int]],
          concurrent: int, searcher: Any = None) -> None:
    """The Tuner over the pending trials (or those an adaptive searcher hands out), run to the end.

    Tune sees small configs (the study folder and a chunk's indices), handed out one at a time by a
    searcher: a grid_search over every trial's spec made Tune copy the whole list once per trial
    (measured: 227 s before the first of 2,000 trials started). Nothing given to Tune per trial may
    hold the whole study (Tune keeps it in every trial's saved state)."""
    if searcher is None and not pending:
        return
    r = spec.resources
    if r.workers_per_trial == 1:
        resources, retries = {"cpu": r.cpus_per_worker, "gpu": r.gpus_per_worker}, r.max_failures
    else:  # the trial's driver only waits on its TorchTrainer, whose workers hold the resources
        resources, retries = {"cpu": 0, "memory": 1e6}, 0
    if searcher is None:
        chunks = [_chunk_config(spec, c) for c in chunked(pending, concurrent, r.workers_per_trial)]
        searcher, samples = _chunk_searcher(chunks), len(chunks)
    else:
        samples = -1  # until the searcher says FINISHED
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trainable, spec=spec), resources),
        param_space={"study_dir": str(store.root)},
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=samples,
                                    max_concurrent_trials=concurrent, reuse_actors=r.workers_per_trial == 1,
                                    trial_dirname_creator=_dirname),
        run_config=tune.RunConfig(name="tune", storage_path=str(store.root), verbose=0,
                                  callbacks=[_progress_callback(store, spec, events)],
                                  failure_config=tune.FailureConfig(max_failures=retries)),
    )
    # At the end Tune reads every trial's metrics back from its own logger files, which elrbench turns
    # off (each trial's rows are in the study folder), and warns per trial; quiet it.
    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level, quiet.level = quiet.level, logging.ERROR
    failures = logging.getLogger("ray.tune.execution.tune_controller")
    one_line = _OneLineTaskFailures(retries)
    failures.addFilter(one_line)
    try:
        tuner.fit()
    finally:
        quiet.setLevel(level)
        failures.removeFilter(one_line)


class _OneLineTaskFailures(logging.Filter):
    """Tune logs a failed trial task with Ray's whole traceback (23 lines for a killed worker), though
    the task is retried and a trial's own error is recorded in its result: one line says what
    happened and what comes next."""

    def __init__(self, retries: int) -> None:
        super().__init__()
        self.retries = retries

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith("Trial task failed"):
            e = record.exc_info[1]
            first = str(e).splitlines()[0] if str(e) else ""
            record.msg = (f"a worker running trials stopped ({type(e).__name__}: {first}); Ray Tune runs its "
                          f"trials again from their last checkpoints (resources.max_failures: {self.retries}), and "
                          "a trial left without retries is recorded as failed")
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def chunked(pending: Sequence[int], concurrent: int, workers_per_trial: int) -> list[Sequence[int]]:
    """The pending trials' indices in grid order, cut into chunks that one Tune trial runs one after
    another: about 20 chunks per trial that runs at once (enough to balance the load; a chunk is
    retried whole, skipping what it finished), one trial a chunk for small studies and for DDP trials."""
    size = 1 if workers_per_trial > 1 else max(1, math.ceil(len(pending) / (20 * concurrent)))
    return [pending[i : i + size] for i in range(0, len(pending), size)]


def _dirname(trial: Any) -> str:
    """Tune's folder of a chunk: its trial's id, or its first trial's id and how many follow."""
    return trial.config["name"]


def _chunk_searcher(chunks: list[dict[str, Any]]):
    """A Tune searcher that hands out the chunks of pending trials, as their indices and a name, in
    grid order, then FINISHED. Its class is made here because its base comes from ray.tune
    (imported after _ray()); it holds no closure, so Tune can pickle it."""
    search = _ray().tune.search

    class Chunks(search.Searcher):
        def __init__(self, chunks: list[dict[str, Any]]) -> None:
            super().__init__()
            self.left = list(reversed(chunks))

        def suggest(self, trial_id: str):
            return self.left.pop() if self.left else search.Searcher.FINISHED

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
            pass

        def save(self, checkpoint_path: str) -> None:  # Tune's experiment state: the chunks still to hand out
            Path(checkpoint_path).write_text(json.dumps(self.left))

        def restore(self, checkpoint_path: str) -> None:
            self.left = json.loads(Path(checkpoint_path).read_text())

    return Chunks(chunks)


def _chunk_config(spec: StudySpec, chunk: Sequence[int]) -> dict[str, Any]:
    """What Tune is given for a chunk: its indices as runs of consecutive ones ([start, stop), a few
    numbers for a chunk of 2,500 trials: Tune copies and saves every config) and a name."""
    runs: list[list[int]] = []
    for i in chunk:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    first = spec.trial_id(chunk[0])
    return {"runs": runs, "name": first if len(chunk) == 1 else f"{first}+{len(chunk) - 1}"}


def indices(config: dict[str, Any]) -> Iterator[int]:
    """The trial indices of a chunk's config (_chunk_config)."""
    for start, stop in config["runs"]:
        yield from range(start, stop)


def _adaptive_searcher(spec: StudySpec, store: StudyStore, design: Any, events: Events, concurrent: int):
    """A Tune searcher that runs an adaptive search round by round: it hands out the chunks of the
    current round's trials, waits (None) while any is in flight, then asks the design for the next
    round from the outcomes in the study folder, until it is over (FINISHED). What it hands out
    depends on the outcomes only, never on which trial finished first."""
    from elrbench.adaptive import outcomes

    search = _ray().tune.search

    class Rounds(search.Searcher):
        def __init__(self, spec: StudySpec, store: StudyStore, design: Any, events: Events, concurrent: int) -> None:
            super().__init__()
            self.spec, self.store, self.design, self.events, self.concurrent = spec, store, design, events, concurrent
            self.queue: list[dict[str, Any]] = []
            self.in_flight: set[str] = set()
            self.ran: set[int] = set()  # trials handed out in this run (a failure among them stops the search)

        def __getstate__(self) -> dict:  # Tune may pickle it: nothing of the driver's goes along
            return {}

        def suggest(self, trial_id: str):
            design = self.design
            if not self.queue:
                if self.in_flight:
                    return None
                rounds = design.rounds
                pending = design.advance(outcomes(self.spec, self.store, self.ran))
                if not pending:
                    return search.Searcher.FINISHED
                if design.rounds != rounds:
                    self.events.round_started(design.rounds, len(pending), design.status())
                self.ran |= set(pending)
                chunks = chunked(pending, self.concurrent, self.spec.resources.workers_per_trial)
                self.queue = [_chunk_config(self.spec, c) for c in reversed(chunks)]
            self.in_flight.add(trial_id)
            return self.queue.pop()

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
            self.in_flight.discard(trial_id)

        def save(self, checkpoint_path: str) -> None:  # the design is replayed from the study folder
            Path(checkpoint_path).write_text(json.dumps({"rounds": self.design.rounds}))

        def restore(self, checkpoint_path: str) -> None:
            pass

    return Rounds(spec, store, design, events, concurrent)


def _progress_callback(store: StudyStore, spec: StudySpec, events: Events):
    """A Tune callback that passes trial events on and records failed trials in the store. What it
    keeps per trial is a byte (finished or not); the running ones' indices; trials are built only to
    record a failure.

    Its class is made here because its base comes from ray.tune, which may only be imported after
    _ray() set the environment. Tune pickles its run config (for restore): the class holds no
    closure and its instances pickle empty, so the driver-side events stay out of the pickle."""

    class Progress(_ray().tune.Callback):
        def __init__(self, store: StudyStore, spec: StudySpec, events: Events) -> None:
            self.store, self.spec, self.events = store, spec, events
            self.running: set[int] = set()
            self.finished = bytearray(spec.n_trials)  # 1 once its trial_finished went out

        def __getstate__(self) -> dict:
            return {}

        def _start(self, index: int) -> None:
            if index not in self.running and not self.finished[index]:
                self.running.add(index)
                self.events.trial_started(self.spec.trial_id(index))

        def _finish(self, index: int, result: TrialResult | None = None) -> None:
            if self.finished[index]:
                return
            result = result or self.store.result(self.spec.trial_id(index))
            if result is not None:
                self.finished[index] = 1
                self.running.discard(index)
                self.events.trial_finished(result)

        def on_trial_start(self, iteration, trials, trial, **info):
            self._start(next(indices(trial.config)))

        def _known(self, index: Any) -> bool:
            return isinstance(index, int) and 0 <= index < self.spec.n_trials

        def on_trial_result(self, iteration, trials, trial, result, **info):
            index = result.get("index")
            if self._known(index) and "total_steps" in result:
                self._start(index)
                self.events.progress(self.spec.trial_id(index), int(result["step"]), int(result["total_steps"]))
            for i in result.get("finished") or ():  # (_Reports)
                if self._known(i):
                    self._start(i)
                    self._finish(i)

        def _cleanup(self, index: int) -> None:
            if self.spec.resources.workers_per_trial > 1:
                _remove_worker_groups(self.store, self.spec.trial_id(index))

        def on_trial_complete(self, iteration, trials, trial, **info):
            for index in indices(trial.config):
                self._cleanup(index)
                self._finish(index)
            self.store.refresh_table()

        def on_trial_error(self, iteration, trials, trial, **info):
            error = _error_text(trial)
            for index in indices(trial.config):
                self._cleanup(index)
                t = self.spec.trial(index)
                if not self.store.finished(t.trial_id):
                    result = TrialResult.failed(t, error)
                    self.store.write_result(result)
                    self._finish(index, result)
                else:
                    self._finish(index)
            self.store.refresh_table()

    return Progress(store, spec, events)


def _error_text(trial: Any) -> str:
    err = getattr(trial, "error_file", None)
    try:
        text = Path(err).read_text() if err else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "the trial's process failed (see the Tune folder under the study)"




# ---------------------------------------------------------------- detached studies (Ray Jobs)
def _jobs(address: str):
    """A Ray Jobs client for the cluster's job server (its dashboard address, e.g. http://head:8265)."""
    _ray()
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as e:  # noqa: BLE001 - connection refused, not a Ray dashboard, ...
        if "authentication" in str(e).lower():
            raise UsageError(f"--address {address}: the cluster wants its token (Ray token authentication): set "
                             "RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN unless the token file that `ray start` "
                             "wrote (~/.ray/auth_token) is on this machine") from None
        raise UsageError(f"--address {address}: no Ray job server answers there ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); give the dashboard address, "
                         "e.g. http://127.0.0.1:8265, of a cluster started with its dashboard") from None


def submit_job(spec: StudySpec, address: str) -> str:
    """Submit the study as a Ray job that runs `elrbench submit` on the cluster and return the job id.
    The resolved spec travels in the job's working_dir; elrbench must be installed on the cluster,
    and the study folder (spec.output_dir) is written by the cluster, so it must be a path there."""

    from elrbench.spec import dump_spec

    client = _jobs(address)
    with tempfile.TemporaryDirectory(prefix="elrbench-job-") as d:
        (Path(d) / "spec.yaml").write_text(dump_spec(spec))
        return client.submit_job(
            entrypoint="elrbench submit spec.yaml --address auto",
            submission_id=f"elrbench-{spec.study_id}-{int(time.time())}",
            runtime_env={"working_dir": d},  # the job's own ray.init adds _TRAIN_ENV (both would conflict)
            metadata={"study_id": spec.study_id, "study_dir": str(spec.study_dir)},
        )


def job_info(address: str, job_id: str) -> dict[str, Any]:
    client = _jobs(address)
    try:
        info = client.get_job_info(job_id)
    except Exception as e:  # noqa: BLE001 - unknown id
        why = str(e).splitlines()[0] if str(e) else e
        raise UsageError(f"job {job_id!r}: not found at {address} ({why})") from None
    return {"job_id": job_id, "status": str(info.status.value if hasattr(info.status, "value") else info.status),
            "message": info.message, "start_time": info.start_time, "end_time": info.end_time,
            **(info.metadata or {})}


def job_logs(address: str, job_id: str) -> str:
    job_info(address, job_id)  # a clear error for an unknown id
    return _jobs(address).get_job_logs(job_id)


def stop_job(address: str, job_id: str) -> bool:
    job_info(address, job_id)
    return bool(_jobs(address).stop_job(job_id))


class RayExecutor(Executor):
    """Ray Tune: an embedded cluster on 127.0.0.1 (no address) or the cluster at the address."""

    def where(self) -> str:
        return f"Ray at {self.address}" if self.address else "an embedded Ray cluster on 127.0.0.1"

    def run(self, spec: StudySpec, store: StudyStore, events: Optional[Events] = None,
            brief: bool = False) -> list[TrialResult]:
        return run_on_ray(spec, store, events or Events(), address=self.address, brief=brief)
