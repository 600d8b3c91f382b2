"""The result of one trial: the benchmark's main product, as one typed record.

Every writer and reader uses it: the training loop builds it, the store writes it as result.json
and trials.csv, the W&B summary and the report's tables read its fields. A field that does not
apply to a trial (the final metrics of a failed one, the per-rank check of a one-worker one) is
left unset and is not written, so result.json holds exactly what the trial recorded; reading gives
None for it. Study folders written before this type existed read unchanged (the same keys).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import make_dataclass
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from elrbench.spec import TrialSpec

Outcome = Literal["trained", "untrained", "diverged", "failed"]
FINAL_OUTCOMES: tuple[Outcome, ...] = ("trained", "untrained", "diverged")  # never rerun; "failed" is retried


_FIELD_SETS: dict[frozenset[str], set[str]] = {}  # one fields-set per distinct set of fields (TrialResult._compact)
_REPEATED = ("workload", "optimizer", "warmup", "schedule", "outcome", "device", "host", "cpu", "cpu_capability",
             "torch_version", "cuda_version", "gpu", "compile")


class TrialResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # which trial: its id, its place in the grid and the grid point (labels as in tables)
    trial_id: str
    index: int = Field(ge=0)
    workload: str
    depth: int = Field(ge=1, le=10**6)  # a number of layers (a damaged file's 0 or 10^30 is refused on reading)
    lr: float
    optimizer: str
    warmup: str
    schedule: str
    seed: int
    # what came out (docs/definitions.md, section 9)
    outcome: Outcome
    threshold: Optional[float] = None  # the final test accuracy that counts as trained
    final_test_acc: Optional[float] = None  # None when diverged or failed
    final_test_loss: Optional[float] = None
    final_train_loss: Optional[float] = None  # of the last logged period
    final_train_acc: Optional[float] = None
    best_test_acc: Optional[float] = None
    diverged_step: Optional[int] = None  # the first step with a non-finite loss or weights
    steps_planned: Optional[int] = None
    steps_done: Optional[int] = None
    warmup_steps: Optional[int] = None  # steps in which the warm-up controlled the learning rate
    # run-level ELR summaries over the live layers (docs/definitions.md, section 2)
    spread_mean: Optional[float] = None  # log10 max/min ELR averaged over every step
    spread_early_mean: Optional[float] = None  # ... over the first diagnostics.early_steps
    spread_max: Optional[float] = None
    spread_update_mean: Optional[float] = None  # ... of the actual relative updates, over the log rows
    spread_smooth_mean: Optional[float] = None  # ... of c_hat smoothed over 5 log periods, over the log rows
    overshoot_steps: Optional[int] = None  # steps in which some layer had ELR > 1
    dead_layers_max: Optional[int] = None  # most layers with an exactly zero gradient in one step
    grad_explosion_slope: Optional[float] = None  # slope of log10 ||g_l|| over layer position at init
    # how it ran
    train_s: Optional[float] = None  # the training steps' time, compiling included
    wall_s: Optional[float] = None
    step_ms: Optional[float] = None  # per step, compiling left out
    device: Optional[str] = None
    host: Optional[str] = None
    cpu: Optional[str] = None  # the machine (elrbench/machine.py): CPU model and architecture
    cpu_capability: Optional[str] = None  # the CPU kernels torch used (AVX2, AVX512, ...)
    torch_version: Optional[str] = None
    cuda_version: Optional[str] = None
    gpu: Optional[str] = None
    params: Optional[int] = None
    workers: Optional[int] = None
    compile: Optional[str] = None  # the compiled step it ran (on, cudagraphs; resources.compile); unset: eager
    compile_s: Optional[float] = None  # its first step in the process that finished it: compiling, mostly
    error: Optional[str] = None  # a failed trial's error
    ranks: Optional[list[dict[str, float]]] = None  # DDP: per-rank sums that show the ranks agree
    tracking_error: Optional[str] = None  # a W&B failure (never fails the trial); set when tracked
    traceback: Optional[str] = None  # a failed trial's last frames

    @model_validator(mode="after")
    def _compact(self) -> TrialResult:
        """Held by the thousand at a study's end (its summary, the report): strings that repeat from
        trial to trial (labels, the machine) are interned, and results that set the same fields
        share one set of their names (pydantic's fields-set, never changed in place on a frozen model:
        model_copy copies it first). 4.3 KB a result in memory becomes 2.0."""
        shared = _FIELD_SETS.setdefault(frozenset(self.__pydantic_fields_set__), set(self.__pydantic_fields_set__))
        object.__setattr__(self, "__pydantic_fields_set__", shared)
        d = self.__dict__
        for k in _REPEATED:
            if type(v := d.get(k)) is str:
                d[k] = sys.intern(v)
        return self

    def brief(self) -> Brief:
        """What the trainability tables and the verdict read of this result, in a tenth of the memory."""
        return Brief(*(getattr(self, f) for f in BRIEF_FIELDS))

    @classmethod
    def failed(cls, trial: TrialSpec, error: str, **extra: Any) -> TrialResult:
        """The result of a trial that could not run: an infrastructure failure, not an outcome of training."""
        import socket

        return cls(trial_id=trial.trial_id, index=trial.index, **trial.point(), outcome="failed",
                   threshold=trial.workload.threshold, host=socket.gethostname(), error=error, **extra)

    @property
    def finished(self) -> bool:
        return self.outcome in FINAL_OUTCOMES

    def record(self) -> dict[str, Any]:
        """The fields the trial set, in field order: result.json's keys and trials.csv's row."""
        return self.model_dump(exclude_unset=True)

    def to_json(self) -> str:
        return json.dumps(self.record(), indent=2)

    @classmethod
    def columns(cls, results: Iterable[TrialResult] = (), used: Iterable[str] = ()) -> list[str]:
        """trials.csv's columns: every field that some trial set (or that `used` names), in field order."""
        used = set(used).union(*(r.model_fields_set for r in results))
        return [f for f in cls.model_fields if f in used]

    def row(self, columns: list[str]) -> list[Any]:
        """The values of record() in these columns, None where the trial set none: a row of trials.csv."""
        values, given = self.__dict__, self.model_fields_set
        return [values[c] if c in given else None for c in columns]

    @property
    def machine(self) -> dict[str, Optional[str]]:
        """Where it ran, as elrbench.machine.machine() names it (None fields: not recorded)."""
        return {"cpu": self.cpu, "cpu_capability": self.cpu_capability, "torch": self.torch_version,
                "cuda": self.cuda_version, "gpu": self.gpu}

    def summary(self) -> dict[str, Any]:
        """What W&B keeps as the run's summary: every recorded field but the trial's identity (which
        the run's id and config hold), the per-rank check and W&B's own error (known only after)."""
        skip = {*IDENTITY, "ranks", "tracking_error"}
        return {k: v for k, v in self.record().items() if k not in skip}


POINT = ("workload", "depth", "lr", "optimizer", "warmup", "schedule", "seed")  # = TrialSpec.point()'s keys
IDENTITY = ("trial_id", "index", *POINT)  # which trial; the rest is what it recorded


# A result as the end of a study's run reads it (trainability by depth, the verdict, the outcome
# counts): TrialResult's fields that those read, typed as there, in about 300 bytes where a
# TrialResult takes 2 KB, so that a 100,000-trial study's driver does not hold 200 MB to print them.
BRIEF_FIELDS = ("trial_id", "index", "workload", "depth", "lr", "optimizer", "warmup", "schedule", "seed", "outcome",
                "threshold", "final_test_acc", "spread_mean", "spread_early_mean", "compile_s", "error")
Brief = make_dataclass("Brief", [(f, TrialResult.model_fields[f].annotation) for f in BRIEF_FIELDS], frozen=True,
                       slots=True, namespace={"finished": property(lambda b: b.outcome in FINAL_OUTCOMES),
                                              "__module__": __name__})
