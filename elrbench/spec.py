"""The study spec: frozen pydantic models, loading (YAML/TOML/JSON), overrides, expand() into trials.

A StudySpec validated once at the CLI expands into TrialSpecs whose ids derive from the grid point
(and the study name, workload and budget), never from time, so they are the same on every machine.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from elrbench.defaults import CONSTANT, DEFAULT_OPTIMIZER, NO_WARMUP
from elrbench.errors import SpecError
from elrbench.optimizers import OPTIMIZERS
from elrbench.schedules import SCHEDULES
from elrbench.specfile import Dumper, apply_overrides, limits, read_spec_file  # noqa: F401 - re-exported
from elrbench.warmup import WARMUPS
from elrbench.workloads import DATASETS, MODELS, WorkloadError, check_data, check_depth, data_options
from elrbench.workloads.models import Init, Norm

SCHEMA_VERSION = 1


def registered(registry) -> Any:
    """A str type that must name an entry of the registry ("unknown model 'x' (known: ...)")."""

    def check(v: str) -> str:
        registry.get(v)  # raises UnknownNameError, a ValueError, naming the known entries
        return v

    return Annotated[str, AfterValidator(check)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _problems(problems: list[tuple[str, str]]) -> PydanticCustomError:
    """One validation error that carries several located problems (unpacked by _locate)."""
    return PydanticCustomError("problems", "{summary}", {"summary": "; ".join(m for _, m in problems),
                                                         "problems": problems})


def _validate_options(model_cls, options: dict, where: str) -> tuple[dict, list[tuple[str, str]]]:
    try:
        return model_cls.model_validate(options).model_dump(mode="json"), []
    except ValidationError as e:
        return options, [(_join(where, *err["loc"]), err["msg"]) for err in e.errors()]


def _join(*parts: Any) -> str:
    return ".".join(str(p) for p in parts if p != "")


SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # names that become parts of paths and ids: no '/', no '..'


class WorkloadSpec(Frozen):
    name: str = Field("", pattern=r"^$|" + SAFE_NAME,
                      description="label in tables and trial ids (letters, digits, '_', '.', '-'); "
                                  "default '<model>-<dataset>'")
    model: registered(MODELS)
    dataset: registered(DATASETS)
    data: dict[str, Any] = Field(default_factory=dict, description="options of the dataset")
    model_options: dict[str, Any] = Field(default_factory=dict, description="options of the model")
    width: int = Field(16, ge=1, le=4096)
    norm: Norm = "bn"
    init: Init = "kaiming_fan_out"
    threshold: float = Field(gt=0, le=1, description="final test accuracy that counts as trained")

    @model_validator(mode="after")
    def _resolve(self) -> WorkloadSpec:
        problems: list[tuple[str, str]] = []
        data, p = _validate_options(DATASETS.get(self.dataset).meta["options"], self.data, "data")
        problems += p
        mopts, p = _validate_options(MODELS.get(self.model).meta["options"], self.model_options, "model_options")
        problems += p
        if problems:
            raise _problems(problems)
        name = self.name or f"{self.model}-{self.dataset}"
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "model_options", mopts)
        object.__setattr__(self, "name", name)
        return self

    def machine_problems(self) -> list[tuple[str, str]]:
        """What this machine lacks for the workload (not part of the spec's validity, which is pure: a
        finished study is reported on a machine without its data): the data present, and within the
        memory limit."""
        opts = data_options(self.dataset, self.data)
        nbytes, cap = opts.nbytes(), limits().data_bytes
        if nbytes is not None and nbytes > cap:
            return [("data", f"{nbytes / 2**30:.1f} GiB of data in memory, more than the limit of "
                             f"{cap / 2**30:.1f} GiB; raise it with ELRBENCH_MAX_DATA_BYTES=N if you mean it")]
        try:
            problem = check_data(self.dataset, opts)
        except WorkloadError as e:
            problem = str(e)
        return [("data.dir" if "dir" in self.data else "data", problem)] if problem else []

    def identity(self) -> dict[str, Any]:
        """What defines results: everything but where the data happens to live."""
        d = self.model_dump(mode="json")
        d["data"] = {k: v for k, v in d["data"].items() if k != "dir"}
        return d


def _changed(model: BaseModel) -> set[str]:
    """The fields given a value other than their default, name aside. (A dumped spec writes every
    default, so "given" alone would refuse a study's own spec.yaml when it is read back.)"""
    return {f for f in model.model_fields_set - {"name"}
            if getattr(model, f) != type(model).model_fields[f].get_default(call_default_factory=True)}


def _name_shorthand(v: Any) -> Any:
    return {"name": v} if isinstance(v, str) else v


class OptimizerSpec(Frozen):
    """An optimizer by registered name (elrbench/optimizers.py); each takes the fields that apply to it."""

    name: registered(OPTIMIZERS)
    momentum: Optional[float] = Field(None, ge=0, lt=1, description="sgdm only (default 0.9)")
    nesterov: bool = False
    betas: tuple[float, float] = Field((0.9, 0.999), description="adam, adamw")
    eps: float = Field(1e-8, gt=0, description="adam, adamw")
    weight_decay: float = Field(0.0, ge=0)

    _shorthand = model_validator(mode="before")(_name_shorthand)

    @model_validator(mode="after")
    def _check(self) -> OptimizerSpec:
        kind = OPTIMIZERS.get(self.name).fn
        problems = kind.problems(self, _changed(self))
        if not all(0 <= b < 1 for b in self.betas):
            problems.append(("betas", f"each beta must lie in [0, 1), got {list(self.betas)}"))
        if problems:
            raise _problems(problems)
        if self.momentum is None and kind.default_momentum is not None:
            object.__setattr__(self, "momentum", kind.default_momentum)
        return self

    @property
    def label(self) -> str:
        return self.name


class WarmupSpec(Frozen):
    """A warm-up by registered name; options may be nested or written beside the name."""

    name: registered(WARMUPS)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, v: Any) -> Any:
        v = _name_shorthand(v)
        if isinstance(v, dict) and set(v) - {"name", "options"}:
            v = dict(v)
            flat = {k: v.pop(k) for k in list(v) if k not in ("name", "options")}
            v["options"] = {**v.get("options", {}), **flat}
        return v

    @model_validator(mode="after")
    def _resolve(self) -> WarmupSpec:
        opts, problems = _validate_options(WARMUPS.get(self.name).meta["options"], self.options, "options")
        if problems:
            raise _problems(problems)
        object.__setattr__(self, "options", opts)
        return self

    @property
    def label(self) -> str:
        """The name, plus the options that differ from the warm-up's defaults: 'critical(source=update)'."""
        defaults = WARMUPS.get(self.name).meta["options"]().model_dump(mode="json")
        changed = [f"{k}={v}" for k, v in self.options.items() if defaults.get(k) != v]
        return f"{self.name}({','.join(changed)})" if changed else self.name


class ScheduleSpec(Frozen):
    """A base schedule by registered name (elrbench/schedules.py)."""

    name: registered(SCHEDULES) = CONSTANT
    milestones: tuple[float, ...] = Field((0.5, 0.75), description="step: decay points as fractions of the budget")
    gamma: float = Field(0.1, gt=0, le=1, description="step: factor at each milestone")
    final_fraction: float = Field(0.0, ge=0, le=1, description="cosine: final rate as a fraction of the peak")

    _shorthand = model_validator(mode="before")(_name_shorthand)

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not all(0 < m < 1 for m in v) or list(v) != sorted(v):
            raise ValueError(f"milestones must be increasing fractions in (0, 1), got {list(v)}")
        return v

    @model_validator(mode="after")
    def _own_options(self) -> ScheduleSpec:
        """A field the schedule does not read is refused, not ignored (milestones on cosine)."""
        takes = SCHEDULES.get(self.name).meta.get("options", ())
        foreign = sorted(f for f in _changed(self) if f not in takes)
        if foreign:
            raise _problems([(f, f"the {self.name} schedule has no {f} (it takes: {', '.join(takes) or 'nothing'})")
                             for f in foreign])
        return self

    @property
    def label(self) -> str:
        return self.name


FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max


def _nonempty_unique(v: list) -> list:
    if not v:
        raise ValueError("must list at least one value")
    if all(type(x) is int or type(x) is str for x in v):  # seeds, names: no JSON text needed (0.4 s at 10^5)
        seen = v
    else:  # (True and 1 are one key of a set, not one JSON value)
        seen = [json.dumps(x.model_dump(mode="json") if isinstance(x, BaseModel) else x, sort_keys=True) for x in v]
    if len(set(seen)) != len(seen):
        raise ValueError(f"holds a value twice: {v}")
    return v


def _check_depths(v: list[int]) -> list[int]:
    if any(d < 1 for d in v):
        raise ValueError(f"depths must be positive, got {v}")
    cap = limits().depth
    if any(d > cap for d in v):
        raise ValueError(f"a depth of {max(v)} is more than the limit of {cap} layers; raise it with "
                         "ELRBENCH_MAX_DEPTH=N if you mean it")
    return v


class GridSpec(Frozen):
    depth: list[int] = Field(default_factory=list, description="the depths of a grid search (an adaptive search "
                                                             "takes search.depth instead)")
    lr: list[float]
    optimizer: list[OptimizerSpec] = Field(default_factory=lambda: [OptimizerSpec(name=DEFAULT_OPTIMIZER)])
    warmup: list[WarmupSpec] = Field(default_factory=lambda: [WarmupSpec(name=NO_WARMUP)])
    schedule: list[ScheduleSpec] = Field(default_factory=lambda: [ScheduleSpec()])
    seed: list[int] = Field(default_factory=lambda: [0])

    @field_validator("depth", "lr", "optimizer", "warmup", "schedule", "seed", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return v if isinstance(v, list) else [v]

    @field_validator("lr", "optimizer", "warmup", "schedule", "seed")
    @classmethod
    def _axis(cls, v: list) -> list:
        return _nonempty_unique(v)

    @field_validator("depth")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        if v:  # empty only for an adaptive search (StudySpec checks)
            _nonempty_unique(v)
        return _check_depths(v)

    @field_validator("lr")
    @classmethod
    def _lrs(cls, v: list[float]) -> list[float]:
        if any(not (x > 0 and x < float("inf")) for x in v):
            raise ValueError(f"learning rates must be positive and finite, got {v}")
        if max(v) > FLOAT32_MAX:  # the optimizers' arithmetic is in the parameters' float32
            raise ValueError(f"a learning rate of {max(v):g} overflows float32 (the parameters' type; at most "
                             f"{FLOAT32_MAX:g})")
        return v

    @field_validator("seed")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if any(s < 0 for s in v):
            raise ValueError(f"seeds must be >= 0, got {v}")
        if any(s >= 2**64 for s in v):  # torch.manual_seed takes an unsigned 64-bit number
            raise ValueError(f"seeds must be below 2^64 (torch's seeds are 64-bit), got {max(v)}")
        return v


class BudgetSpec(Frozen):
    epochs: Optional[float] = Field(None, gt=0)
    steps: Optional[int] = Field(None, gt=0)
    batch_size: int = Field(128, gt=1, description="> 1 so that BatchNorm sees a batch")
    eval_batch_size: int = Field(1000, gt=0)
    eval_every: Optional[int] = Field(None, gt=0, description="steps between test evaluations (default: each epoch)")
    log_every: int = Field(10, gt=0, description="steps between logged rows")
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints (0: none)")
    keep_checkpoints: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _one(self) -> BudgetSpec:
        if (self.epochs is None) == (self.steps is None):
            raise PydanticCustomError("budget", "give exactly one of epochs and steps")
        cap = limits().steps  # an epoch is at least one step, so epochs are held to the same number
        for name, value in (("steps", self.steps), ("epochs", self.epochs)):
            if value is not None and value > cap:
                raise PydanticCustomError("budget", f"{name}: {value:g} is more than the limit of {cap} steps "
                                          "for one trial; raise it with ELRBENCH_MAX_STEPS=N if you mean it")
        return self


class ResourcesSpec(Frozen):
    workers_per_trial: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0, description="fractions below 1 let small trials share a GPU")
    max_concurrent_trials: Optional[int] = Field(None, ge=1)
    max_failures: int = Field(1, ge=0, description="retries of a trial after an infrastructure failure "
                                                   "(a lost worker or node); a diverged trial is never retried")
    compile: Literal["off", "on", "cudagraphs", "auto"] = Field(
        "off", description="the training step: off (eager PyTorch, the reference), on (torch.compile, channels-last "
                           "for convolutional networks), cudagraphs (torch.compile with CUDA graphs; needs a GPU), "
                           "auto (on for trials of at least 2000 steps, where compiling repays itself; "
                           "docs/performance.md). Compiled steps change the numbers in the last bits, so the "
                           "setting is part of a trial's identity")

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_bool(cls, v: Any) -> Any:  # YAML 1.1 reads unquoted on/off as booleans
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("gpus_per_worker")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"above 1, GPUs per worker must be whole, got {v}")
        return v


class DiagnosticsSpec(Frozen):
    enabled: bool = Field(True, description="per-layer ELR statistics every step (needs a normalized model)")
    early_steps: int = Field(50, ge=1, description="K of the run-level 'spread over the first K steps'")


# tracking.runs: auto keeps a W&B run per trial up to this many trials: beyond, offline runs alone would
# take more than about 1 GB and 12 minutes of a core (94 KB and 0.07 s a run, docs/performance.md)
TRIAL_RUNS_MAX = 10_000


class TrackingSpec(Frozen):
    wandb: Literal["offline", "online", "disabled"] = "offline"
    project: str = "elrbench"
    entity: Optional[str] = None
    runs: Literal["auto", "trial", "study"] = Field(
        "auto", description="trial: a W&B run per trial (its history, per-layer histograms, summary); study: no "
                            "per-trial runs, only the study's summary run with a table of every trial's result "
                            "(a run costs about 60-100 KB on disk and 0.07 s); auto: trial for studies of at most "
                            f"{TRIAL_RUNS_MAX} trials, study above")


class ReportSpec(Frozen):
    baseline: str = Field(NO_WARMUP, description="the warm-up (as labelled in tables) every other warm-up is "
                                              "compared against, paired by seed")


class SearchSpec(Frozen):
    """Which trials run. grid: every point of the grid. adaptive: per arm (every grid combination but
    depth and seed), rounds of depths chosen from the outcomes so far where they tell most about D50
    (elrbench/adaptive.py, docs/statistics.md), until the stopping rule holds."""

    kind: Literal["grid", "adaptive"] = "grid"
    depth: Optional[tuple[int, int]] = Field(None, description="adaptive: [min, max], the depth range searched "
                                                               "(every depth in it the models allow)")
    round_size: int = Field(5, ge=2, le=100, description="adaptive: depths chosen per arm in each round (each run "
                                                         "by every warm-up of the arm's group, on the same seed)")
    target_width: Optional[float] = Field(None, gt=0, description="adaptive: an arm is done when its D50 interval "
                                                                  "is at most this wide (layers)")
    target_difference: Optional[float] = Field(None, gt=0, description="adaptive: ... and its D50 difference to "
                                                                       "the baseline's is at most this wide (layers)")
    max_trials: Optional[int] = Field(None, ge=1, description="adaptive: the trial budget of the whole study")

    @field_validator("depth")
    @classmethod
    def _range(cls, v: Optional[tuple[int, int]]) -> Optional[tuple[int, int]]:
        if v is not None:
            if not v[0] < v[1]:
                raise ValueError(f"give [min, max] with min < max, got {list(v)}")
            _check_depths(list(v))
        return v

    @model_validator(mode="after")
    def _fields(self) -> SearchSpec:
        if self.kind == "grid":
            extra = sorted(f for f in self.model_fields_set - {"kind"}  # a dumped spec holds every default
                           if getattr(self, f) != type(self).model_fields[f].default)
            if extra:
                raise _problems([(f, "only for kind: adaptive (a grid search runs every point of grid)")
                                 for f in extra])
            return self
        problems = []
        if self.depth is None:
            problems.append(("depth", "an adaptive search needs the depth range: depth: [min, max]"))
        if self.max_trials is None:
            problems.append(("max_trials", "an adaptive search needs a trial budget: max_trials: N"))
        if problems:
            raise _problems(problems)
        return self


ADAPTIVE_MIN_DEPTHS = 3  # candidate depths an adaptive search needs (two ends and one between)


class StudySpec(Frozen):
    schema_version: int = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    workloads: list[WorkloadSpec] = Field(min_length=1)
    grid: GridSpec
    budget: BudgetSpec
    diagnostics: DiagnosticsSpec = Field(default_factory=DiagnosticsSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    output_dir: Path = Field(Path("runs"), validate_default=True, description="study folders go here")

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"this elrbench reads schema_version {SCHEMA_VERSION}, the spec says {v}")
        return v

    @field_validator("output_dir")
    @classmethod
    def _abs(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    _depths: list[int] = PrivateAttr(default_factory=list)
    _hash: Optional[str] = PrivateAttr(None)  # spec_hash, worked out once: it dumps the whole grid
    _idents: Optional[dict[str, Any]] = PrivateAttr(None)  # what trial ids hash (_identities)

    @model_validator(mode="after")
    def _cross(self) -> StudySpec:
        problems = []
        names = [w.name for w in self.workloads]
        for i, w in enumerate(self.workloads):
            if names.count(w.name) > 1:
                problems.append((f"workloads.{i}.name", f"workload name '{w.name}' is used twice; set name:"))
            bad = sorted({p for d in self.grid.depth if (p := check_depth(w.model, d, w.model_options))})
            problems += [("grid.depth", f"workload '{w.name}': {p}") for p in bad]
        problems += self._search_problems()
        labels = [w.label for w in self.grid.warmup]
        if "baseline" in self.report.model_fields_set and self.report.baseline not in labels:
            problems.append(("report.baseline", f"'{self.report.baseline}' is not a warm-up of the grid "
                             f"(its labels: {', '.join(labels)})"))
        for i, warm in enumerate(self.grid.warmup):  # each warm-up knows where it cannot run
            warmup = WARMUPS.get(warm.name).fn
            problems += [(f"grid.warmup.{i}", p) for p in warmup.problems(warm.name, warm.options, self)]
        cap = limits().trials
        if self.search.kind == "grid" and self.n_trials > cap:
            problems.append(("grid", f"{self.n_trials} trials (workloads x every list of the grid) are more than the "
                             f"limit of {cap}; raise it with ELRBENCH_MAX_TRIALS=N if you mean it"))
        n = self.resources.workers_per_trial
        if self.budget.batch_size % n:
            problems.append(("budget.batch_size", f"{self.budget.batch_size} does not split evenly over "
                             f"resources.workers_per_trial = {n}"))
        if self.resources.compile == "cudagraphs" and self.resources.gpus_per_worker == 0:
            problems.append(("resources.compile", "cudagraphs needs a GPU: set resources.gpus_per_worker, or "
                             "use compile: on"))
        if problems:
            raise _problems(problems)
        if self.tracking.runs == "auto":  # resolved here, so the stored spec says what was done
            runs = "trial" if self.max_trials <= TRIAL_RUNS_MAX else "study"
            object.__setattr__(self, "tracking", self.tracking.model_copy(update={"runs": runs}))
        return self

    def _search_problems(self) -> list[tuple[str, str]]:
        """The depths trials may take (grid.depth, or every depth of search.depth that each workload
        allows), set here; and what is wrong with them."""
        s = self.search
        if s.kind == "grid":
            self._depths = list(self.grid.depth)
            return [] if self.grid.depth else [("grid.depth", "required field is missing (or set search.kind: "
                                                               "adaptive with search.depth: [min, max])")]
        if self.grid.depth:
            return [("grid.depth", "an adaptive search chooses the depths itself from search.depth; remove grid.depth")]
        lo, hi = s.depth
        problems = []
        for w in self.workloads:
            problems += [("search.depth", f"workload '{w.name}': {p}")
                         for d in (lo, hi) if (p := check_depth(w.model, d, w.model_options))]
        if problems:
            return problems
        depths = [d for d in range(lo, hi + 1) if all(check_depth(w.model, d, w.model_options) is None
                                                      for w in self.workloads)]
        self._depths = depths
        if len(depths) < ADAPTIVE_MIN_DEPTHS:
            problems.append(("search.depth", f"[{lo}, {hi}] holds {len(depths)} depths the models allow; an adaptive "
                             f"search needs {ADAPTIVE_MIN_DEPTHS} or more"))
        first = self.first_round_trials
        if s.max_trials < first:
            problems.append(("search.max_trials", f"{s.max_trials} is less than the first round ({first} trials: "
                             "round_size x warm-ups x the other grid lists but seed); raise it or lower round_size"))
        cap = limits().trials
        if s.max_trials > cap:
            problems.append(("search.max_trials", f"{s.max_trials} trials are more than the limit of {cap}; raise it "
                             "with ELRBENCH_MAX_TRIALS=N if you mean it"))
        if s.target_difference is not None and len(self.grid.warmup) < 2:
            problems.append(("search.target_difference", "needs two warm-ups or more (a difference to the baseline)"))
        return problems

    @property
    def depths(self) -> list[int]:
        """The depths a trial may have: grid.depth, or every depth an adaptive search may choose."""
        return self._depths

    @property
    def adaptive(self) -> bool:
        return self.search.kind == "adaptive"

    def axes(self) -> dict[str, list]:
        """The grid's axes in grid order (the last varies fastest), named as TrialSpec's fields and
        result.POINT: the one place that lists them."""
        g = self.grid
        return {"workload": self.workloads, "depth": self.depths, "lr": g.lr, "optimizer": g.optimizer,
                "warmup": g.warmup, "schedule": g.schedule, "seed": g.seed}

    @property
    def first_round_trials(self) -> int:
        """Trials of an adaptive search's first round: round_size depths for every arm."""
        return self.search.round_size * math.prod(len(v) for k, v in self.axes().items() if k not in ("depth", "seed"))

    @property
    def max_trials(self) -> int:
        """The most trials the study runs: every grid point, or an adaptive search's budget."""
        return min(self.search.max_trials, self.n_trials) if self.adaptive else self.n_trials

    # ------------------------------------------------------------ identity and expansion
    def _run_identity(self) -> dict[str, Any]:
        # DDP changes the numbers (BatchNorm sees each worker's share of the batch), and so does a
        # compiled step (other kernels, other rounding): both are part of the identity. Their
        # defaults are left out, so ids of studies written before these settings existed still hold.
        n, c = self.resources.workers_per_trial, self.resources.compile
        return {**({"workers_per_trial": n} if n > 1 else {}), **({"compile": c} if c != "off" else {})}

    def model_copy(self, *, update: Optional[dict[str, Any]] = None, deep: bool = False) -> StudySpec:
        copy = super().model_copy(update=update, deep=deep)
        copy._hash = copy._idents = None  # an updated copy is another spec
        return copy

    def spec_hash(self) -> str:
        """Hash of what defines the results (not where they go, how they are tracked or scheduled);
        worked out once per spec (the spec is frozen), since every trial's study_id needs it."""
        if self._hash is not None:
            return self._hash
        ident = {"schema_version": self.schema_version, "name": self.name,
                 "workloads": [w.identity() for w in self.workloads],
                 "grid": self.grid.model_dump(mode="json"), "budget": self.budget.model_dump(mode="json"),
                 "diagnostics": self.diagnostics.model_dump(mode="json"), **self._run_identity()}
        if self.adaptive:  # grid studies keep the ids they had before searches existed
            ident["search"] = self.search.model_dump(mode="json")
        self._hash = _digest(ident)[:12]
        return self._hash

    @property
    def n_trials(self) -> int:
        """The number of grid points (trial indices), counted without expanding the grid; an adaptive
        search runs some of them (max_trials at most)."""
        return math.prod(len(v) for v in self.axes().values())

    @property
    def study_id(self) -> str:
        return f"{self.name}-{self.spec_hash()[:8]}"

    @property
    def study_dir(self) -> Path:
        return self.output_dir / self.study_id

    def expand(self) -> list[TrialSpec]:
        """Every trial of the grid, in grid order (the last list varies fastest); of an adaptive search,
        every trial it could choose."""
        study_id = self.study_id
        return [self.trial(i, study_id) for i in range(self.n_trials)]

    def _picks(self, index: int) -> tuple[dict[str, int], dict[str, Any]]:
        """The grid point at a trial index: each axis's position and value."""
        axes = self.axes()
        if not 0 <= index < self.n_trials:
            raise IndexError(f"trial index {index} outside the grid of {self.n_trials}")
        pos, rest = {}, index
        for name, axis in reversed(axes.items()):
            rest, pos[name] = divmod(rest, len(axis))
        return pos, {name: axis[pos[name]] for name, axis in axes.items()}

    def _identities(self) -> dict[str, Any]:
        """What trial ids hash, dumped once per spec: each axis's values, and what every trial shares."""
        if self._idents is None:
            axes = self.axes()
            dump = {"workload": lambda w: w.identity(), "optimizer": lambda o: o.model_dump(mode="json"),
                    "warmup": lambda w: w.model_dump(mode="json"), "schedule": lambda c: c.model_dump(mode="json")}
            self._idents = {"axes": {k: [f(v) for v in axes[k]] for k, f in dump.items()},
                            "shared": {"budget": self.budget.model_dump(mode="json"),
                                       "diagnostics": self.diagnostics.model_dump(mode="json"), **self._run_identity()}}
        return self._idents

    def trial_id(self, index: int) -> str:
        """The id of the trial at a grid index, without building the trial (a driver that checks which
        of 100,000 trials finished builds none)."""
        return self._trial_id(*self._picks(index))

    def _trial_id(self, pos: dict[str, int], picks: dict[str, Any]) -> str:
        ids = self._identities()
        ident = {"study": self.name, **{k: ids["axes"][k][pos[k]] for k in ids["axes"]},
                 "depth": picks["depth"], "lr": picks["lr"], "seed": picks["seed"], **ids["shared"]}
        # lr as %g without the exponent's '+' (1e+308 -> 1e308): an id is letters, digits, '_', '.', '-'
        lr = format(picks["lr"], "g").replace("+", "")
        return (f"{picks['workload'].name}-d{picks['depth']}-{picks['warmup'].name}-lr{lr}-s{picks['seed']}-"
                f"{_digest(ident)[:6]}")

    def trial(self, index: int, study_id: Optional[str] = None) -> TrialSpec:
        """The trial at one place of the grid, built without expanding the rest (a worker of a
        10,000-trial study builds only its own)."""
        pos, picks = self._picks(index)
        return TrialSpec(
            study_id=study_id or self.study_id, trial_id=self._trial_id(pos, picks), index=index, **picks,
            budget=self.budget, diagnostics=self.diagnostics, resources=self.resources, tracking=self.tracking,
        )

    def index(self, workload: int, depth: int, lr: int, optimizer: int, warmup: int, schedule: int, seed: int) -> int:
        """The trial index of a grid point given by the position on each list (depth: in self.depths)."""
        i = 0
        for pos, axis in zip((workload, depth, lr, optimizer, warmup, schedule, seed), self.axes().values()):
            i = i * len(axis) + pos
        return i


class TrialSpec(Frozen):
    study_id: str
    trial_id: str
    index: int
    workload: WorkloadSpec
    depth: int
    lr: float
    optimizer: OptimizerSpec
    warmup: WarmupSpec
    schedule: ScheduleSpec
    seed: int
    budget: BudgetSpec
    diagnostics: DiagnosticsSpec
    resources: ResourcesSpec
    tracking: TrackingSpec

    def point(self) -> dict[str, Any]:
        """The grid point as flat columns for tables."""
        return {"workload": self.workload.name, "depth": self.depth, "lr": self.lr,
                "optimizer": self.optimizer.label, "warmup": self.warmup.label,
                "schedule": self.schedule.label, "seed": self.seed}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------- loading (elrbench/specfile.py)
def _locate(err: dict[str, Any]) -> list[tuple[str, str]]:
    base = _join(*err["loc"])
    if err["type"] == "problems":
        return [(_join(base, loc), msg) for loc, msg in err["ctx"]["problems"]]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check its spelling and its place in the spec)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return [(base, msg)]


def problems_of(e: ValidationError) -> list[tuple[str, str]]:
    """Every problem of a validation error as (dotted.path, message)."""
    return [p for err in e.errors() for p in _locate(err)]


def validate_spec(data: dict[str, Any], source: str | None = None) -> StudySpec:
    try:
        return StudySpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(problems_of(e), source) from None


def check_machine(spec: StudySpec, source: str | None = None) -> None:
    """SpecError unless this machine can run the spec's trials: the checks against the machine, apart
    from the spec's own (pure) validation. Run where trials start (validate, submit, resume, train,
    theory), never where a finished study is only read (report, status, compare)."""
    problems = [(f"workloads.{i}.{loc}", msg)
                for i, w in enumerate(spec.workloads) for loc, msg in w.machine_problems()]
    if problems:
        raise SpecError(problems, source)


def load_spec(path: str | Path, overrides: list[str] | None = None, machine: bool = True) -> StudySpec:
    """A spec file, validated; machine: also checked against this machine (check_machine)."""
    path = Path(path)
    data = apply_overrides(read_spec_file(path), overrides or [])
    spec = validate_spec(data, str(path))
    if machine:
        check_machine(spec, str(path))
    return spec


def dump_spec(spec: StudySpec) -> str:
    return yaml.dump(spec.model_dump(mode="json"), sort_keys=False, Dumper=Dumper)
