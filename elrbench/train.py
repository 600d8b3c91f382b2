"""The one training loop: one trial, single process or one DDP rank, top to bottom.

Determinism: the data order of epoch e comes from a generator seeded by (seed, e) and the
augmentation of step t from one seeded by (seed, t), so a restart from a checkpoint (model,
optimizer, warm-up state, accumulators, RNG state) replays the same steps bit for bit on CPU.
Host syncs happen only at the log and eval periods; divergence is tracked on the device meanwhile.

Under DDP (torch.distributed initialised by the caller, e.g. Ray Train) every rank draws the same
global batch, augments it identically and trains on its contiguous share; DDP averages the
gradients, so per-layer statistics and learning rates agree on every rank. Collectives happen only
at the log period (one all-reduce of the accumulators) and the eval period (rank 0 evaluates and
broadcasts). Rank 0 alone writes to the results store; every rank reads the same checkpoint.
"""
from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from elrbench.diagnostics import LayerDiagnostics, log_row, scalars, update_c_hat
from elrbench.errors import NoScaleInvariantTensors
from elrbench.results import StudyStore
from elrbench.spec import OptimizerSpec, TrialSpec
from elrbench.tracking import start_tracker
from elrbench.warmup import StepContext, create_warmup, scheduled_lr
from elrbench.workloads import DataError, Dataset, create_model, load_dataset, random_crop_flip

ProgressFn = Callable[[int, int, dict[str, Any]], None]


@dataclass(frozen=True)
class Plan:
    steps_per_epoch: int
    total_steps: int
    eval_every: int


def plan(trial: TrialSpec, n_train: int) -> Plan:
    b = trial.budget
    spe = n_train // b.batch_size  # drop_last: BatchNorm must never see a batch of one
    if spe < 1:
        raise DataError(f"batch_size {b.batch_size} exceeds the {n_train} training examples of "
                        f"{trial.workload.dataset}; lower budget.batch_size")
    total = b.steps if b.steps is not None else math.ceil(b.epochs * spe)
    return Plan(spe, total, b.eval_every or spe)


def make_optimizer(spec: OptimizerSpec, params, lr: float) -> torch.optim.Optimizer:
    if spec.name in ("sgd", "sgdm"):
        return torch.optim.SGD(params, lr=lr, momentum=spec.momentum or 0.0, nesterov=spec.nesterov,
                               weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)


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


def _checkpoints(ckpt_dir: Path) -> list[Path]:
    return sorted(ckpt_dir.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))


def _save_checkpoint(ckpt_dir: Path, keep: int, state: dict[str, Any]) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step_{state['step']:09d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in _checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)


def run_trial(
    trial: TrialSpec,
    store: StudyStore | None = None,
    *,
    resume: bool = True,
    progress: ProgressFn | None = None,
    stop_at_step: int | None = None,
) -> dict[str, Any]:
    """Train one trial to its budget and return its result row (also written to the store).

    stop_at_step stops early without a result, as if the process died there (tests, debugging).
    """
    started = time.time()
    rank, world = _world()
    device = _device(trial)
    torch.set_num_threads(max(1, int(trial.resources.cpus_per_worker)))
    torch.manual_seed(trial.seed)
    w, b = trial.workload, trial.budget

    data: Dataset = load_dataset(w.dataset, w.data)
    p = plan(trial, len(data.x_train))
    xtr, ytr = data.x_train.to(device), data.y_train.to(device)
    xte, yte = data.x_test.to(device), data.y_test.to(device)
    model = create_model(w.model, trial.depth, in_shape=data.in_shape, num_classes=data.num_classes,
                         width=w.width, norm=w.norm, init=w.init, options=w.model_options).to(device)
    params = [q for q in model.parameters() if q.requires_grad]
    # The forward of training goes through DDP (which averages gradients); diagnostics, evaluation
    # and checkpoints use the plain module.
    fwd = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    local_b = b.batch_size // world
    opt = make_optimizer(trial.optimizer, params, trial.lr)
    warm = create_warmup(trial.warmup.name, trial.warmup.options, p.total_steps, trial.optimizer)
    sched = trial.schedule
    diag = None
    if trial.diagnostics.enabled:
        try:
            diag = LayerDiagnostics(model, trial.diagnostics.early_steps)
        except NoScaleInvariantTensors:  # e.g. norm: none: nothing to measure, training goes on
            pass
    layer_rows: list[dict[str, Any]] = []

    # Accumulated on the device between log rows; read on the host only at the log period.
    acc = {"loss": torch.zeros((), device=device), "correct": torch.zeros((), device=device, dtype=torch.long),
           "seen": 0, "first_bad": torch.full((), -1, device=device, dtype=torch.long)}
    history: list[dict[str, Any]] = []
    step, warm_steps, train_s, last_eval = 0, 0, 0.0, None

    ckpt_dir = store.trial_dir(trial.trial_id) / "checkpoints" if store else None
    reader, store = store, (store if rank == 0 else None)  # ranks > 0 read checkpoints, never write
    if reader and resume and (ckpts := _checkpoints(ckpt_dir)):
        state = torch.load(ckpts[-1], map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        warm.load_state_dict(state["warmup"])
        torch.set_rng_state(state["rng_cpu"])
        acc = state["acc"]
        step, warm_steps, train_s = state["step"], state["warm_steps"], state["train_s"]
        history, last_eval = state["history"], state["last_eval"]
        layer_rows = state["layer_rows"]
        if diag:
            diag.load_state_dict(state["diag"])

    tracker = start_tracker(trial, store.root, diag.names if diag else None) if store else None  # rank 0
    perm_epoch, perm = -1, None
    diverged = False
    while step < p.total_steps:
        t0 = time.perf_counter()
        epoch, i = divmod(step, p.steps_per_epoch)
        if epoch != perm_epoch:
            g = torch.Generator().manual_seed(_seed(trial.seed, epoch))
            perm, perm_epoch = torch.randperm(len(xtr), generator=g).to(device), epoch
        idx = perm[i * b.batch_size : (i + 1) * b.batch_size]
        x, y = xtr[idx], ytr[idx]
        if data.augment:
            x = random_crop_flip(x, torch.Generator(device).manual_seed(_seed(trial.seed, step, 1)))
        if world > 1:
            x, y = x[rank * local_b : (rank + 1) * local_b], y[rank * local_b : (rank + 1) * local_b]

        out = fwd(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()

        log_now = (step + 1) % b.log_every == 0 or step + 1 == p.total_steps
        # The per-step hook: per-layer statistics (device only), then learning-rate control.
        m = diag.measure() if diag else None
        ctx = StepContext(measure=m, batch_acc=lambda: _mean_over_ranks((out.argmax(1) == y).float().mean(), world),
                          update_c_hat=lambda: update_c_hat(opt, diag.params))
        lr = warm.lr(step, scheduled_lr(sched.name, trial.lr, step, p.total_steps, milestones=sched.milestones,
                                        gamma=sched.gamma, final_fraction=sched.final_fraction), ctx)
        scales = warm.layer_scales(ctx)
        if scales is not None:  # per-layer learning rates lr * scale_l on the scale-invariant tensors
            torch._foreach_mul_([q.grad for q in diag.params], list(scales.unbind()))
        lrs = lr if scales is None else lr * scales
        for group in opt.param_groups:
            group["lr"] = lr
        warm_steps += warm.in_warmup(step)
        if diag:
            elr = diag.record(m, lrs, step)
        if log_now:
            grad_norm = torch.nn.utils.get_total_norm([q.grad for q in params if q.grad is not None])
            if diag:
                diag.snapshot()
        opt.step()

        loss = loss.detach()
        acc["loss"] += loss
        acc["correct"] += (out.argmax(1) == y).sum()
        acc["seen"] += len(y)
        bad = ~torch.isfinite(loss)
        acc["first_bad"] = torch.where(bad & (acc["first_bad"] < 0), step, acc["first_bad"])
        step += 1
        train_s += time.perf_counter() - t0

        row: dict[str, Any] = {}
        if log_now:
            param_norm = torch.nn.utils.get_total_norm(params)
            n_rows = max(1, acc["seen"] // local_b)
            sums = torch.stack([acc["loss"] / n_rows, acc["correct"].float() / acc["seen"]])
            first_bad = acc["first_bad"].float()
            if world > 1:  # the mean over ranks of each rank's mean; a step bad anywhere is bad
                dist.all_reduce(sums)
                sums /= world
                first_bad = _first_bad_over_ranks(first_bad)
            vals = torch.cat([sums, torch.stack([grad_norm, param_norm, first_bad])]).tolist()  # the one host sync
            row = {"step": step, "epoch": step / p.steps_per_epoch, "lr": lr, "train_loss": vals[0],
                   "train_acc": vals[1], "grad_norm": vals[2], "param_norm": vals[3]}
            acc.update(loss=torch.zeros_like(acc["loss"]), correct=torch.zeros_like(acc["correct"]), seen=0)
            if diag:
                layer_rows.append(log_row(step, m, elr, lrs, diag.update_ratio()))
                row.update(scalars(layer_rows[-1]))
            if vals[4] >= 0 or not all(math.isfinite(v) for v in vals[:4]):
                diverged = True
                row["diverged_step"] = int(vals[4]) if vals[4] >= 0 else step - 1
        if not diverged and (step % p.eval_every == 0 or step == p.total_steps):
            test_acc, test_loss = _evaluate_rank0(model, xte, yte, b.eval_batch_size, rank, world)
            row.update(step=step, epoch=step / p.steps_per_epoch, test_acc=test_acc, test_loss=test_loss)
            last_eval = {"test_acc": test_acc, "test_loss": test_loss, "step": step}
            if not math.isfinite(test_loss):
                diverged = True
                row["diverged_step"] = step - 1
        if row:
            history.append(row)
            if progress:
                progress(step, p.total_steps, row)
            if tracker:
                tracker.log(row, layer_rows[-1] if diag and log_now else None)
        if diverged:
            break
        if store and b.checkpoint_every and step % b.checkpoint_every == 0 and step < p.total_steps:
            _save_checkpoint(ckpt_dir, b.keep_checkpoints, {
                "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "warmup": warm.state_dict(), "rng_cpu": torch.get_rng_state(), "acc": acc,
                "warm_steps": warm_steps, "train_s": train_s, "history": history, "last_eval": last_eval,
                "layer_rows": layer_rows, "diag": diag.state_dict() if diag else None,
            })
            store.write_history(trial.trial_id, history)
            store.write_layers(trial.trial_id, diag.names if diag else [], layer_rows)
        if stop_at_step is not None and step >= stop_at_step and step < p.total_steps:
            if tracker:
                tracker.run.finish(exit_code=1)
            return {"trial_id": trial.trial_id, "outcome": "interrupted", "steps_done": step}

    if diverged:
        outcome = "diverged"
    elif last_eval is not None and last_eval["test_acc"] >= w.threshold:
        outcome = "trained"
    else:
        outcome = "untrained"
    last_log = next((r for r in reversed(history) if "train_loss" in r), {})
    ranks = _rank_fingerprints(params, loss, world) if world > 1 else None
    result = {
        "trial_id": trial.trial_id, "index": trial.index, **trial.point(),
        "outcome": outcome, "threshold": w.threshold,
        "final_test_acc": last_eval["test_acc"] if last_eval and not diverged else None,
        "final_test_loss": last_eval["test_loss"] if last_eval and not diverged else None,
        "final_train_loss": last_log.get("train_loss"), "final_train_acc": last_log.get("train_acc"),
        "best_test_acc": max((r["test_acc"] for r in history if "test_acc" in r), default=None),
        "diverged_step": next((r["diverged_step"] for r in history if "diverged_step" in r), None),
        "steps_planned": p.total_steps, "steps_done": step, "warmup_steps": warm_steps,
        **(diag.summary() if diag else dict.fromkeys(("spread_mean", "spread_early_mean", "spread_max",
                                                     "overshoot_steps", "dead_layers_max", "grad_explosion_slope"))),
        "train_s": round(train_s, 3), "wall_s": round(time.time() - started, 3),
        "step_ms": round(1000 * train_s / max(step, 1), 3),
        "device": str(device), "host": socket.gethostname(),
        "params": sum(q.numel() for q in params), "workers": world, "error": None,
    }
    if ranks:
        result["ranks"] = ranks
    if tracker:
        tracker.finish(result)
        result["tracking_error"] = tracker.error
    if world > 1:
        dist.barrier()  # rank 0 deletes the checkpoints below only once every rank is past them
    if store:
        store.write_history(trial.trial_id, history)
        store.write_layers(trial.trial_id, diag.names if diag else [], layer_rows)
        store.write_result(result)
        for c in _checkpoints(ckpt_dir):
            c.unlink(missing_ok=True)
    return result


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
                        last_loss.detach().double()])
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    return [{"param_sum": float(v[0]), "grad_sum": float(v[1]), "last_loss": float(v[2])} for v in every]
