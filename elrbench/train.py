"""The one training loop: one trial, single process or one DDP rank, top to bottom.

Determinism: the data order of epoch e comes from a generator seeded by (seed, e) and the
augmentation of step t from one seeded by (seed, t), so a restart from a checkpoint (model,
optimizer, warm-up state, accumulators, RNG state) replays the same steps bit for bit on CPU.
Host syncs happen only at the log and eval periods; divergence is tracked on the device meanwhile.

Under DDP (torch.distributed initialised by the caller, e.g. Ray Train) every rank draws the same
global batch, augments it identically and trains on its contiguous share; DDP averages the
gradients, so per-layer statistics and learning rates agree on every rank. Collectives happen only
at the log period (one all-reduce of the accumulators) and the eval period (rank 0 evaluates and
broadcasts). Rank 0 (is_main) alone writes results, checkpoints and W&B; every rank reads the same
checkpoint.

Compiled steps (resources.compile): the training forward (and with it the backward) runs through
torch.compile, the network in channels-last when it convolves; the diagnostics, warm-ups and the
optimizer read the gradients after backward, outside the compiled code, and evaluation and
checkpoints use the plain module, which shares its parameters with the compiled one.
"""
from __future__ import annotations

import json
import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from elrbench import elr
from elrbench.compiling import compile_mode, compiled
from elrbench.diagnostics import LayerDiagnostics, discover, log_row
from elrbench.errors import NoScaleInvariantTensors
from elrbench.machine import machine
from elrbench.optimizers import create_optimizer
from elrbench.result import Outcome, TrialResult
from elrbench.schedules import scheduled_lr
from elrbench.spec import TrialSpec
from elrbench.specfile import limits
from elrbench.store import StudyStore, atomic_write, checkpoints
from elrbench.tracking import start_tracker
from elrbench.warmup import StepContext, Warmup, create_warmup
from elrbench.workloads import DataError, create_model, load_dataset, random_crop_flip

ProgressFn = Callable[[int, int, dict[str, Any]], None]  # (step, total steps, logged row)
log = logging.getLogger("elrbench")


# ---------------------------------------------------------------- the loop
def run_trial(trial: TrialSpec, store: StudyStore | None = None, *, resume: bool = True,
              progress: ProgressFn | None = None) -> TrialResult:
    """Train one trial to its budget and return its result (also written to the store by rank 0).

    An exception (from training or from `progress`, which is how tests stop a trial part-way, as if
    its process died) leaves the last checkpoint for the next try and marks the W&B run failed.
    """
    started = time.time()
    run = setup(trial)
    b, total = trial.budget, run.plan.total_steps
    state = TrainState(run)
    ckpts = Checkpoints(store.trial_dir(trial.trial_id) / "checkpoints", b.keep_checkpoints) if store else None
    if ckpts and resume:
        run, state = ckpts.resume(run, state, writer=run.is_main)
    writer = store if run.is_main else None
    tracker = start_tracker(trial, writer, run.layer_names) if writer else None
    try:
        while state.step < total:
            t0 = time.perf_counter()
            log_now = (state.step + 1) % b.log_every == 0 or state.step + 1 == total
            st = train_step(run, state, state.step, log_now)
            state.step += 1
            state.train_s += time.perf_counter() - t0

            row = state.log(st.lr, st.lrs, st.measure, st.elr, st.grad_norm) if log_now else {}
            if not state.diverged and (state.step % run.plan.eval_every == 0 or state.step == total):
                row |= state.evaluate()
            if row:
                state.history.append(row)
                if progress:
                    progress(state.step, total, row)
                if tracker:
                    tracker.log(row, state.layer_rows[-1] if run.diag and log_now else None)
            if state.diverged:
                break
            if writer and b.checkpoint_every and state.step % b.checkpoint_every == 0 and state.step < total:
                ckpts.save(state.step, state.state_dict())
                write_logs(writer, run, state)
    except BaseException:
        if tracker:
            tracker.abort()
        raise

    result = build_result(run, state, started)
    if tracker:
        tracker.finish(result)
        result = result.model_copy(update={"tracking_error": tracker.error})
    if run.world > 1:
        dist.barrier()  # rank 0 deletes the checkpoints below only once every rank is past them
    if writer:
        write_logs(writer, run, state)
        writer.write_result(result)
        ckpts.clear()
    return result


@dataclass(frozen=True)
class Step:
    """What one training step leaves for the loop's log: its learning rate, per-layer rates, the
    per-layer statistics and ELRs it read, and (at a log step) the global gradient norm."""

    lr: float
    lrs: torch.Tensor | float
    measure: Any
    elr: Optional[torch.Tensor]
    grad_norm: Optional[torch.Tensor] = None


def train_step(run: Setup, state: TrainState, step: int, log_now: bool = False) -> Step:
    """One optimizer step of a trial, the same for the training loop and the benchmarks: the batch,
    forward, backward, the warm-up (reading this step's per-layer statistics, on the device), the
    optimizer's hook and step, and the on-device accumulators. log_now: also the norms before the
    update and a copy of W (for the actual update ratio). The first step of a compiled trial is
    timed into run.compile_s (it compiles)."""
    t0 = time.perf_counter()
    x, y = run.batch(step)
    out = run.forward(x)
    loss = F.cross_entropy(out, y)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if run.plan.compile != "off" and run.compile_s is None:  # this process's first step compiles
        run.compile_s = time.perf_counter() - t0
        log.info("%s: compiled (%s) in %.1f s", run.trial.trial_id, run.plan.compile, run.compile_s)
    lr, lrs, m = set_learning_rates(run, state, step, out, y)
    e = run.diag.record(m, lrs, step) if run.diag else None
    grad_norm = None
    if log_now:  # the norms before this step's update, and a copy of W for the actual update
        grad_norm = torch.nn.utils.get_total_norm([q.grad for q in run.params if q.grad is not None])
        if run.diag:
            run.diag.snapshot()
    run.optimizer.before_step(run.opt, run.scale_invariant)
    run.opt.step()
    state.accumulate(loss.detach(), out, y, step)
    return Step(lr, lrs, m, e, grad_norm)


def set_learning_rates(run: Setup, state: TrainState, step: int, out: torch.Tensor,
                       y: torch.Tensor) -> tuple[float, torch.Tensor | float, Any]:
    """This step's learning rate: the warm-up on top of the schedule, reading this step's per-layer
    statistics (device only). Per-layer factors from the warm-up go onto the scale-invariant
    tensors' gradients. Returns the rate, the per-layer rates and the statistics."""
    diag, world = run.diag, run.world
    m = diag.measure() if diag else None
    ctx = StepContext(measure=m, batch_acc=lambda: _mean_over_ranks((out.argmax(1) == y).float().mean(), world),
                      update_c_hat=lambda: elr.relative_norms(run.optimizer.direction(run.opt, diag.params),
                                                              diag.params))
    lr = run.warmup.lr(step, scheduled_lr(run.trial.schedule, run.trial.lr, step, run.plan.total_steps), ctx)
    scales = run.warmup.layer_scales(ctx)
    if scales is not None:  # per-layer learning rates lr * scale_l on the scale-invariant tensors
        torch._foreach_mul_([q.grad for q in diag.params], list(scales.unbind()))
    for group in run.opt.param_groups:
        group["lr"] = lr
    state.warm_steps += run.warmup.in_warmup(step)
    return lr, (lr if scales is None else lr * scales), m


# ---------------------------------------------------------------- set-up
@dataclass(frozen=True)
class Plan:
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    compile: str = "off"  # the step this trial runs: off (eager), on or cudagraphs


def plan(trial: TrialSpec, n_train: int) -> Plan:
    b = trial.budget
    spe = n_train // b.batch_size  # drop_last: BatchNorm must never see a batch of one
    if spe < 1:
        raise DataError(f"batch_size {b.batch_size} exceeds the {n_train} training examples of "
                        f"{trial.workload.dataset}; lower budget.batch_size")
    total = b.steps if b.steps is not None else math.ceil(b.epochs * spe)
    if total > limits().steps:
        raise DataError(f"budget.epochs {b.epochs:g} is {total} steps of batch {b.batch_size} on {n_train} examples, "
                        f"more than the limit of {limits().steps}; raise it with ELRBENCH_MAX_STEPS=N if you mean it")
    return Plan(spe, total, b.eval_every or spe, compile_mode(trial.resources.compile, total))


@dataclass
class Setup:
    """What a trial builds before its first step: data on the device, the network, the optimizer,
    the warm-up and the diagnostics of its scale-invariant tensors."""

    trial: TrialSpec
    rank: int
    world: int
    device: torch.device
    plan: Plan
    augment: bool
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    model: torch.nn.Module  # diagnostics, evaluation and checkpoints use the plain module
    forward: torch.nn.Module  # the training forward: through DDP (which averages gradients) when world > 1,
    # compiled when plan.compile is not off
    params: list[torch.nn.Parameter]
    optimizer: Any  # the registry entry (elrbench.optimizers.Optimizer)
    opt: torch.optim.Optimizer
    warmup: Warmup
    diag: Optional[LayerDiagnostics]
    scale_invariant: list[torch.nn.Parameter] = field(default_factory=list)  # for optimizers that ask (sgdp)
    channels_last: bool = False  # batches go to the network in channels-last memory format
    compile_s: Optional[float] = None  # the first step's time in this process, when compiled (else unset)
    _perm: tuple[int, Optional[torch.Tensor]] = (-1, None)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def layer_names(self) -> Optional[list[str]]:
        return self.diag.names if self.diag else None

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of the global batch of a step (the same global batch on every rank)."""
        bs, seed = self.trial.budget.batch_size, self.trial.seed
        epoch, i = divmod(step, self.plan.steps_per_epoch)
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed(_seed(seed, epoch))
            self._perm = (epoch, torch.randperm(len(self.x_train), generator=g).to(self.device))
        idx = self._perm[1][i * bs : (i + 1) * bs]
        x, y = self.x_train[idx], self.y_train[idx]
        if self.augment:
            x = random_crop_flip(x, torch.Generator(self.device).manual_seed(_seed(seed, step, 1)))
        if self.world > 1:
            share = bs // self.world
            x, y = x[self.rank * share : (self.rank + 1) * share], y[self.rank * share : (self.rank + 1) * share]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def setup(trial: TrialSpec) -> Setup:
    rank, world = _world()
    device = _device(trial)
    torch.set_num_threads(max(1, int(trial.resources.cpus_per_worker)))
    # the network's initialization (built on the CPU, then moved). torch.manual_seed would also queue
    # a seeding of every accelerator kind torch knows, formatting a stack trace for each: 0.2 ms a
    # trial here, as long as one of a tiny trial's steps
    torch.random.default_generator.manual_seed(trial.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(trial.seed)
    w = trial.workload
    data = load_dataset(w.dataset, w.data)
    p = plan(trial, len(data.x_train))
    xtr, ytr = data.x_train.to(device), data.y_train.to(device)
    xte, yte = data.x_test.to(device), data.y_test.to(device)
    built = dict(in_shape=data.in_shape, num_classes=data.num_classes, width=w.width, norm=w.norm, init=w.init,
                 options=w.model_options)
    model = create_model(w.model, trial.depth, **built).to(device)
    arch = (w.model, trial.depth, json.dumps(built, sort_keys=True, default=str))  # discovery's key
    channels_last = p.compile != "off" and xtr.dim() == 4
    if channels_last:  # faster convolutions under inductor (docs/performance.md); the values are the same
        model = model.to(memory_format=torch.channels_last)
    params = [q for q in model.parameters() if q.requires_grad]
    forward = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if p.compile != "off":
        forward = compiled(forward, p.compile)
    optimizer = create_optimizer(trial.optimizer)
    opt = optimizer.build(params, trial.lr)
    warm = create_warmup(trial.warmup.name, trial.warmup.options, p.total_steps, trial.optimizer)
    diag = None
    if trial.diagnostics.enabled:
        try:
            diag = LayerDiagnostics(model, trial.diagnostics.early_steps, key=arch)
        except NoScaleInvariantTensors:  # e.g. norm: none: nothing to measure, training goes on
            pass
    scale_invariant = (diag.params if diag else [q for _, q in discover(model, arch)]) if optimizer.tangent else []
    return Setup(trial, rank, world, device, p, data.augment, xtr, ytr, xte, yte, model, forward, params,
                 optimizer, opt, warm, diag, scale_invariant, channels_last)


# ---------------------------------------------------------------- state, logging, checkpoints
@dataclass
class TrainState:
    """The loop's mutable state: with the model, optimizer, warm-up and diagnostics of its Setup,
    everything a checkpoint holds."""

    run: Setup
    step: int = 0
    warm_steps: int = 0
    train_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    layer_rows: list[dict[str, Any]] = field(default_factory=list)
    last_eval: Optional[dict[str, Any]] = None
    diverged: bool = False
    acc: dict[str, Any] = field(default_factory=dict)  # accumulated on the device between log rows
    last_loss: Optional[torch.Tensor] = None  # this rank's loss of the last step

    def __post_init__(self) -> None:
        self._reset_acc(first_bad=torch.full((), -1, device=self.run.device, dtype=torch.long))

    def _reset_acc(self, **keep: Any) -> None:
        dev = self.run.device
        self.acc = {"loss": torch.zeros((), device=dev), "correct": torch.zeros((), device=dev, dtype=torch.long),
                    "seen": 0, "first_bad": self.acc.get("first_bad")} | keep

    def accumulate(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor, step: int) -> None:
        a, self.last_loss = self.acc, loss
        a["loss"] += loss
        a["correct"] += (out.argmax(1) == y).sum()
        a["seen"] += len(y)
        bad = ~torch.isfinite(loss)
        a["first_bad"] = torch.where(bad & (a["first_bad"] < 0), step, a["first_bad"])

    def log(self, lr: float, lrs: torch.Tensor | float, m: Any, e: Optional[torch.Tensor],
            grad_norm: torch.Tensor) -> dict[str, Any]:
        """The row of a log period: train loss and accuracy since the last one (mean over ranks),
        global norms, per-layer ELR summaries; one host sync. Flags divergence."""
        run, a = self.run, self.acc
        param_norm = torch.nn.utils.get_total_norm(run.params)
        n_rows = max(1, a["seen"] // (run.trial.budget.batch_size // run.world))
        sums = torch.stack([a["loss"] / n_rows, a["correct"].float() / a["seen"]])
        first_bad = a["first_bad"].float()
        if run.world > 1:  # the mean over ranks of each rank's mean; a step bad anywhere is bad
            dist.all_reduce(sums)
            sums /= run.world
            first_bad = _first_bad_over_ranks(first_bad)
        vals = torch.cat([sums, torch.stack([grad_norm, param_norm, first_bad])]).tolist()  # the one host sync
        row = {"step": self.step, "epoch": self.step / run.plan.steps_per_epoch, "lr": lr, "train_loss": vals[0],
               "train_acc": vals[1], "grad_norm": vals[2], "param_norm": vals[3]}
        self._reset_acc()
        if run.diag:
            layers, summary = log_row(self.step, m, e, lrs, run.diag.update_ratio(), run.diag.smoothed_c_hat(m))
            self.layer_rows.append(layers)
            row |= summary
        if vals[4] >= 0 or not all(math.isfinite(v) for v in vals[:4]):
            self.diverged = True
            row["diverged_step"] = int(vals[4]) if vals[4] >= 0 else self.step - 1
        return row

    def evaluate(self) -> dict[str, Any]:
        """Test accuracy and loss now (rank 0 evaluates, the others receive it). Flags divergence."""
        run = self.run
        test_acc, test_loss = _evaluate_rank0(run.model, run.x_test, run.y_test, run.trial.budget.eval_batch_size,
                                              run.rank, run.world)
        self.last_eval = {"test_acc": test_acc, "test_loss": test_loss, "step": self.step}
        row = {"step": self.step, "epoch": self.step / run.plan.steps_per_epoch, "test_acc": test_acc,
               "test_loss": test_loss}
        if not math.isfinite(test_loss):
            self.diverged = True
            row["diverged_step"] = self.step - 1
        return row

    def state_dict(self) -> dict[str, Any]:
        run = self.run
        return {"step": self.step, "model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
                "warmup": run.warmup.state_dict(), "rng_cpu": torch.get_rng_state(), "acc": self.acc,
                "warm_steps": self.warm_steps, "train_s": self.train_s, "history": self.history,
                "last_eval": self.last_eval, "layer_rows": self.layer_rows,
                "diag": run.diag.state_dict() if run.diag else None}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        _check_checkpoint(s)  # before anything is loaded: a checkpoint of wrong types is damaged, set aside
        run = self.run
        run.model.load_state_dict(s["model"])
        run.opt.load_state_dict(s["optimizer"])
        run.warmup.load_state_dict(s["warmup"])
        torch.set_rng_state(s["rng_cpu"])
        if run.diag:
            run.diag.load_state_dict(s["diag"])
        self.acc, self.step, self.warm_steps, self.train_s = s["acc"], s["step"], s["warm_steps"], s["train_s"]
        self.history, self.last_eval, self.layer_rows = s["history"], s["last_eval"], s["layer_rows"]


# What a checkpoint's own fields must be (TrainState.state_dict); model, optimizer, warm-up and
# diagnostics states are checked by their own load_state_dict.
_CHECKPOINT_TYPES: dict[str, tuple[type, ...]] = {
    "step": (int,), "warm_steps": (int,), "train_s": (int, float), "acc": (dict,), "history": (list,),
    "layer_rows": (list,), "last_eval": (dict, type(None)), "model": (dict,), "optimizer": (dict,),
    "rng_cpu": (torch.Tensor,)}


def _check_checkpoint(s: Any) -> None:
    """ValueError naming the first field of a loaded checkpoint that is missing or of the wrong type
    (a checkpoint that unpickles but is not one this code wrote would otherwise fail every resume)."""
    if not isinstance(s, dict):
        raise ValueError(f"a {type(s).__name__}, not a checkpoint's dict")
    for key, kinds in _CHECKPOINT_TYPES.items():
        if key not in s or not isinstance(s[key], kinds) or isinstance(s[key], bool):
            raise ValueError(f"its '{key}' is {'missing' if key not in s else type(s[key]).__name__}, not "
                             + " or ".join(k.__name__ for k in kinds))
    if s["step"] < 0 or any(not isinstance(r, dict) for r in (*s["history"], *s["layer_rows"])):
        raise ValueError("a negative step, or history rows that are not dicts")


class Checkpoints:
    """A trial's last few checkpoints, step_<n>.pt. Each is written to a temporary file of its own,
    synced to disk, renamed into place and the folder synced, so a crash leaves the old one whole; a
    damaged one (a torn copy, a full disk) is set aside and the one before it used."""

    def __init__(self, folder: Path, keep: int) -> None:
        self.folder, self.keep = folder, keep

    def all(self) -> list[Path]:
        return [path for _, path in checkpoints(self.folder)]

    def save(self, step: int, state: dict[str, Any]) -> None:
        atomic_write(self.folder / f"step_{step:09d}.pt", lambda f: torch.save(state, f))
        for old in self.all()[: -self.keep]:
            old.unlink(missing_ok=True)

    def resume(self, run: Setup, state: TrainState, writer: bool) -> tuple[Setup, TrainState]:
        """The newest checkpoint that loads; a damaged one is renamed to *.damaged (by rank 0) and
        reported, and the one before it tried. None loads: a fresh start (said so too)."""
        tried = False
        for path in reversed(self.all()):
            tried = True
            try:
                state.load_state_dict(torch.load(path, map_location=run.device, weights_only=True))
                return run, state
            except Exception as e:  # noqa: BLE001 - any failure to load means: damaged
                log.warning("%s: damaged checkpoint (%s: %s); trying the one before", path, type(e).__name__,
                            str(e).splitlines()[0] if str(e) else "")
                if writer:
                    path.rename(path.with_name(path.name + ".damaged"))
        if tried:  # a failed load may have changed the model or optimizer part-way: start from scratch
            log.warning("%s: no checkpoint could be loaded; the trial starts again from step 0", self.folder)
            run = setup(run.trial)
            state = TrainState(run)
        return run, state

    def clear(self) -> None:
        for c in [*self.all(), *self.folder.glob("step_*.pt.damaged")]:
            c.unlink(missing_ok=True)


def write_logs(store: StudyStore, run: Setup, state: TrainState) -> None:
    store.write_history(run.trial.trial_id, state.history)
    store.write_layers(run.trial.trial_id, run.layer_names or [], state.layer_rows)


# ---------------------------------------------------------------- the result
def classify(diverged: bool, last_eval: Optional[dict[str, Any]], threshold: float) -> Outcome:
    """docs/definitions.md, section 9: diverged, else trained when the last test accuracy reaches the
    workload's threshold, else untrained."""
    if diverged:
        return "diverged"
    if last_eval is not None and last_eval["test_acc"] >= threshold:
        return "trained"
    return "untrained"


def build_result(run: Setup, state: TrainState, started: float) -> TrialResult:
    t, h, ev = run.trial, state.history, state.last_eval
    final = ev if ev and not state.diverged else {}
    last_log = next((r for r in reversed(h) if "train_loss" in r), {})
    diag = run.diag.summary() if run.diag else dict.fromkeys(LayerDiagnostics.SUMMARY)
    if run.diag:  # the log rows' spreads of the actual updates and of the smoothed c_hat, averaged
        for key, col in (("spread_update_mean", "elr_spread_update"), ("spread_smooth_mean", "elr_spread_smooth")):
            vals = [r[col] for r in h if col in r]
            diag[key] = sum(vals) / len(vals) if vals else None
    ranks = {"ranks": _rank_fingerprints(run.params, state.last_loss, run.world)} if run.world > 1 else {}
    compile_s = run.compile_s or 0.0  # the compiling step is left out of step_ms
    how = {"compile": run.plan.compile, "compile_s": round(compile_s, 3)} if run.plan.compile != "off" else {}
    m = machine()
    return TrialResult(
        trial_id=t.trial_id, index=t.index, **t.point(),
        outcome=classify(state.diverged, ev, t.workload.threshold), threshold=t.workload.threshold,
        final_test_acc=final.get("test_acc"), final_test_loss=final.get("test_loss"),
        final_train_loss=last_log.get("train_loss"), final_train_acc=last_log.get("train_acc"),
        best_test_acc=max((r["test_acc"] for r in h if "test_acc" in r), default=None),
        diverged_step=next((r["diverged_step"] for r in h if "diverged_step" in r), None),
        steps_planned=run.plan.total_steps, steps_done=state.step, warmup_steps=state.warm_steps, **diag,
        train_s=round(state.train_s, 3), wall_s=round(time.time() - started, 3),
        step_ms=round(1000 * (state.train_s - compile_s) / max(state.step - (compile_s > 0), 1), 3),
        device=str(run.device), host=socket.gethostname(), cpu=m["cpu"], cpu_capability=m["cpu_capability"],
        torch_version=m["torch"], cuda_version=m["cuda"], gpu=m["gpu"], params=sum(q.numel() for q in run.params),
        workers=run.world, error=None, **ranks, **how,
    )


# ---------------------------------------------------------------- helpers
def _seed(*parts: int) -> int:
    # a fixed mixing of integers (Python's hash() of tuples is not stable across versions)
    s = 0x9E3779B97F4A7C15
    for p in parts:
        s = (s ^ (p + 0x9E3779B97F4A7C15 + (s << 6) + (s >> 2))) & 0xFFFFFFFFFFFFFFFF
    return s & 0x7FFFFFFFFFFFFFFF


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Test accuracy and mean loss, in batches, with the normalization layers in eval mode."""
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size])
        loss += F.cross_entropy(out, y[i : i + batch_size], reduction="sum")
        correct += (out.argmax(1) == y[i : i + batch_size]).sum()
    model.train()
    return correct.item() / len(x), loss.item() / len(x)


def _device(trial: TrialSpec) -> torch.device:
    if trial.resources.gpus_per_worker > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---------------------------------------------------------------- DDP helpers (collectives)
def _mean_over_ranks(x: torch.Tensor, world: int) -> float:
    if world > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= world
    return x.item()


def _first_bad_over_ranks(first_bad: torch.Tensor) -> torch.Tensor:
    """The earliest non-finite step over all ranks (-1: none)."""
    v = torch.where(first_bad < 0, torch.full_like(first_bad, float("inf")), first_bad)
    dist.all_reduce(v, op=dist.ReduceOp.MIN)
    return torch.where(torch.isinf(v), torch.full_like(v, -1.0), v)


def _evaluate_rank0(model, x, y, batch_size: int, rank: int, world: int) -> tuple[float, float]:
    """Rank 0 evaluates (its BatchNorm statistics are the ones DDP broadcasts); the others receive it."""
    if world == 1:
        return evaluate(model, x, y, batch_size)
    out = torch.tensor(evaluate(model, x, y, batch_size) if rank == 0 else (0.0, 0.0), dtype=torch.float64,
                       device=x.device)
    dist.broadcast(out, 0)
    return float(out[0]), float(out[1])


def _rank_fingerprints(params, last_loss: torch.Tensor, world: int) -> list[dict[str, float]]:
    """Per rank: sums of the final weights and of the last averaged gradients, and the last local
    loss. Equal weights and gradients on every rank, with different losses, show that the ranks
    trained on different data with the same averaged gradients."""
    mine = torch.stack([sum(q.detach().double().sum() for q in params),
                        sum(q.grad.double().sum() for q in params if q.grad is not None),
                        last_loss.double()])
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    return [{"param_sum": float(v[0]), "grad_sum": float(v[1]), "last_loss": float(v[2])} for v in every]
