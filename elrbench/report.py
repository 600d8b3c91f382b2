"""`elrbench report`: the trainability report of a study (finished or still running) from its
results store, or from W&B offline run files alone. Writes into one folder:

    report.html         one self-contained page (styles inline, figures embedded; opens offline)
    tables/<key>.csv    each table, and the same as Markdown in tables/<key>.md
    figures/<key>.png   each figure

The tables come from elrbench/tables.py; the figures from the builders in FIGURES, each a function
of the report's context that returns its figures (and may add a note when it has nothing to draw).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from elrbench import plots
from elrbench.defaults import CONSTANT, DEFAULT_OPTIMIZER, NO_WARMUP
from elrbench.machine import describe
from elrbench.result import IDENTITY, TrialResult
from elrbench.store import StudyStore, atomic_write
from elrbench.tables import (
    Figure,
    Group,
    Table,
    TrainableDepths,
    best_lr,
    by_depth,
    failure_boundary,
    make_cell,
    paired,
    slug,
    spreads,
    trainable_depths,
)

History = Callable[[str], list[dict[str, Any]]]
Layers = Callable[[str], tuple[list[str], list[dict[str, Any]]]]


@dataclass
class Source:
    """What a report is built from: results and, per trial, its history and per-layer rows."""

    title: str
    rows: list[TrialResult]
    history: History
    layers: Optional[Layers]  # None: not available (W&B files hold per-layer tables only now and then)
    n_planned: Optional[int] = None
    origin: str = ""
    baseline: str = NO_WARMUP  # the warm-up every other is compared against (the spec's report.baseline)
    damaged: dict[str, str] = field(default_factory=dict)  # files that could not be read -> why (filled as read)
    search: Optional[str] = None  # an adaptive search's range and stopping rule (None: a grid)


@dataclass
class Report:
    out: Path
    headline: list[str] = field(default_factory=list)  # the verdict, one line per warm-up and group
    machines: list[str] = field(default_factory=list)  # where the trials ran, with how many each
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def from_store(store: StudyStore, results: Optional[list[TrialResult]] = None) -> Source:
    """A study folder's results (or those already read from it: store.results())."""
    meta = store.meta()
    return Source(meta.get("study_id", store.root.name), store.results() if results is None else results,
                  store.history, store.layers,
                  meta.get("n_trials"), f"results store {store.root}", store.baseline(), store.damaged,
                  meta.get("search_rule") if meta.get("search") == "adaptive" else None)


def from_wandb(folder: Path) -> Source:
    """Results and histories rebuilt from the trial runs' config (the trial) and summary (its result)."""
    from elrbench.spec import TrialSpec
    from elrbench.tracking import LABEL_KEY, read_offline_runs

    damaged: dict[str, str] = {}
    runs = [r for r in read_offline_runs(folder, damaged) if r.get("job_type") != "report"]
    rows, hist = [], {}
    for run in runs:
        try:
            config = {k: v for k, v in run["config"].items() if k != LABEL_KEY}  # derived, not part of the trial
            t = TrialSpec.model_validate({**config, "tracking": {}})  # tracking is not logged in config
            recorded = {k: v for k, v in run["summary"].items() if k in TrialResult.model_fields and k not in IDENTITY}
            rows.append(TrialResult(trial_id=t.trial_id, index=t.index, **t.point(), **recorded))
        except (ValueError, TypeError) as e:  # pydantic's ValidationError is a ValueError
            damaged[", ".join(run.get("files", []))] = f"not an elrbench trial run ({str(e).splitlines()[0]})"
            continue
        hist[t.trial_id] = [{"step": h["_step"], **h} for h in run["history"] if "_step" in h]
    rows.sort(key=lambda r: r.index)
    title = runs[0].get("group", Path(folder).name) if runs else Path(folder).name
    return Source(title, rows, lambda tid: hist.get(tid, []), None, None, f"W&B offline runs under {folder}",
                  damaged=damaged)


def choose_trials(rows: list[TrialResult], wanted: Optional[list[str]]) -> list[TrialResult]:
    """The trials shown in detail: those asked for (id or unique prefix), else the deepest depth's
    first seed at the first learning rate, one per warm-up (at most 4)."""
    if wanted:
        return [r for w in wanted for r in rows if r.trial_id == w or r.trial_id.startswith(w)]
    done = [r for r in rows if r.outcome != "failed"]
    if not done:
        return []
    deep, lr, seed = max(r.depth for r in done), done[0].lr, min(r.seed for r in done)
    return [r for r in done if r.depth == deep and r.lr == lr and r.seed == seed][:4]


# ---------------------------------------------------------------- tables
def headline(depths: list[TrainableDepths]) -> list[str]:
    """The verdict lines of every group (prefixed by the group when there are several)."""
    many = len(depths) > 1
    return [(f"{t.group.label}: " if many else "") + line for t in depths for line in t.headline()]


def tables_of(rows: list[TrialResult], baseline: str) -> tuple[list[Table], list[str]]:
    """Every table of the report, in order, and notes on the ones it cannot have."""
    notes = []
    tables = [Table.of("by_depth", g) for g in by_depth(rows)]
    tables += [Table.of_depths(t) for t in trainable_depths(rows, baseline)]
    comparisons = paired(rows, baseline)
    tables += [Table.of("paired", g) for g in comparisons]
    if not comparisons:
        notes.append(f"Paired comparisons need the baseline warm-up '{baseline}' (report.baseline in the spec) "
                     "and another warm-up in the same group of trials; this study has none.")
    tables += [Table.of("spread", g) for g in spreads(rows)]
    if len({r.lr for r in rows}) > 1:
        tables += [Table.of("best_lr", g) for g in best_lr(rows)]
        tables += [Table.of("boundary", g) for g in failure_boundary(rows)]
    else:
        notes.append("The failure boundary (largest learning rate that still trains) needs a grid of several "
                     "learning rates; this study has one.")
    return tables, notes


def machines(rows: list[TrialResult]) -> list[str]:
    """Each machine the trials ran on, and how (a compiled step), with its number of trials."""
    count: dict[str, int] = {}
    for r in rows:
        if r.cpu is not None:
            key = describe(r.machine) + (f"; compiled steps ({r.compile})" if r.compile else "")
            count[key] = count.get(key, 0) + 1
    return [f"{m} ({n} trial{'s' * (n != 1)})" for m, n in count.items()]


# ---------------------------------------------------------------- figures
@dataclass
class Context:
    """What a figure builder may read: the source, the by-depth tables, the trials chosen for detail."""

    src: Source
    depth_tables: list[Table]
    d50_tables: list[Table]
    chosen: list[TrialResult]
    notes: list[str]


Drawn = tuple[str, str, bytes]  # (name, caption, png)


def trained_figures(ctx: Context) -> list[Drawn]:
    out = []
    fits = {t.data.group: t.data for t in ctx.d50_tables}  # groups without lr
    for t in ctx.depth_tables:
        g = t.grid
        label = g.group.label
        d = fits.get(Group(g.group.workload, g.group.optimizer, g.group.schedule))
        at_lr = {r.warmup: r.by_lr[g.group.lr] for r in d.rows if g.group.lr in r.by_lr} if d else {}
        out.append((f"trained-{label}", "P(trained) against depth: fraction over seeds, 95% Wilson band and the "
                    "logistic fit whose 0.5 crossing is D50; the number of trials at each depth along the bottom: "
                    f"{label}",
                    plots.trained_by_depth(label, g.depths, g.warmups, g.cells, at_lr)))
    return out


def d50_figures(ctx: Context) -> list[Drawn]:
    """D50 against the learning rate per warm-up (groups with several learning rates)."""
    out = []
    for t in ctx.d50_tables:
        d = t.data
        if len(d.lrs) > 1:
            label = d.group.label
            out.append((f"d50-by-lr-{label}", "Trainable depth D50 against the learning rate, per warm-up, with "
                        "95% profile-likelihood intervals (an arrow: the interval is open beyond the grid's "
                        f"depths); the ring marks each warm-up's best learning rate: {label}",
                        plots.d50_by_lr(label, d.rows)))
    return out


def accuracy_figures(ctx: Context) -> list[Drawn]:
    out = []
    for t in ctx.depth_tables:
        g = t.grid
        thr = next((r.threshold for r in ctx.src.rows if g.group.holds(r)), None)
        label = g.group.label
        out.append((f"accuracy-{label}", f"Final test accuracy against depth, median over seeds with its 95% "
                    f"order-statistic interval: {label}",
                    plots.accuracy_by_depth(label, g.depths, g.warmups, g.cells, thr)))
    return out


# A figure reads each trial it draws: a 100,000-trial study's curves average the first seeds of each
# line, and its scatter shows an even sample of the trials (each figure's caption says so).
CURVE_SEEDS = 20  # trials (seeds) averaged per line of the spread curves
SCATTER_POINTS = 2000  # trials in the spread-against-accuracy scatter


def spread_figures(ctx: Context) -> list[Drawn]:
    out = []
    for t in ctx.depth_tables:
        label = t.grid.group.label
        per_line: dict[tuple[int, str], int] = defaultdict(int)
        drawn = []
        for r in ctx.src.rows:
            if t.grid.group.holds(r) and per_line[r.depth, r.warmup] < CURVE_SEEDS:
                per_line[r.depth, r.warmup] += 1
                drawn.append(r)
        with_hist = [(r, ctx.src.history(r.trial_id)) for r in drawn]
        if any(h for _, h in with_hist):
            most = max(per_line.values())
            over = f"mean over {most} seeds" if most < CURVE_SEEDS else f"mean over the first {CURVE_SEEDS} seeds"
            out.append((f"spread-{label}", f"ELR spread against step, {over} of each line: {label}",
                        plots.spread_curves(label, with_hist)))
    return out


def scatter_figure(ctx: Context) -> list[Drawn]:
    rows = [r for r in ctx.src.rows if r.spread_mean is not None]
    if not rows:
        return []
    every = math.ceil(len(rows) / SCATTER_POINTS)
    shown = ("one point per trial" if every == 1
             else f"every {every}th trial in grid order ({len(rows[::every])} of {len(rows)})")
    return [("spread-vs-accuracy", f"Run-averaged ELR spread against final test accuracy, {shown}",
             plots.spread_vs_accuracy(rows[::every]))]


def heatmap_figures(ctx: Context) -> list[Drawn]:
    if ctx.src.layers is None:
        ctx.notes.append("Per-layer heatmaps need the results store's layers.jsonl (not in W&B files).")
        return []
    out = []
    for r in ctx.chosen:
        names, layers = ctx.src.layers(r.trial_id)
        if layers:
            out.append((f"heatmap-{r.trial_id}", f"Per-layer ELR (log10) by step: {r.trial_id}",
                        plots.layer_heatmap(r, names, layers)))
    return out


def model_figures(ctx: Context) -> list[Drawn]:
    """Measured spread against the weight-dynamics model, for what the model describes: plain SGD at a
    constant learning rate without warm-up."""
    if ctx.src.layers is None:
        return []
    plain = [r for r in ctx.chosen
             if r.warmup == NO_WARMUP and r.schedule == CONSTANT and r.optimizer == DEFAULT_OPTIMIZER]
    out = []
    for r in plain[:2]:
        _, layers = ctx.src.layers(r.trial_id)
        if len(layers) > 1:
            out.append((f"predicted-{r.trial_id}", "Measured ELR spread against the weight-dynamics model "
                        f"(constant lr, constant base gradients), from the first logged ELRs: {r.trial_id}",
                        plots.predicted_vs_measured(r, layers)))
    if not plain:
        ctx.notes.append("Predicted against measured ELR curves are drawn for plain SGD at a constant "
                         "learning rate without warm-up (what the model describes); no chosen trial is one.")
    return out


FIGURES: list[Callable[[Context], list[Drawn]]] = [
    trained_figures, d50_figures, accuracy_figures, spread_figures, scatter_figure, heatmap_figures, model_figures]


# ---------------------------------------------------------------- the report
def build(src: Source, out: Path, trials: Optional[list[str]] = None) -> Report:
    rep = Report(Path(out))
    (rep.out / "tables").mkdir(parents=True, exist_ok=True)
    (rep.out / "figures").mkdir(parents=True, exist_ok=True)
    rep.tables, rep.notes = tables_of(src.rows, src.baseline)
    rep.headline = headline([t.data for t in rep.tables if t.kind == "d50"])
    rep.machines = machines(src.rows)
    for t in rep.tables:
        _write_table(rep.out / "tables", t)
    ctx = Context(src, [t for t in rep.tables if t.kind == "by_depth"], [t for t in rep.tables if t.kind == "d50"],
                  choose_trials(src.rows, trials), rep.notes)
    for builder in FIGURES:
        try:
            drawn = builder(ctx)
        except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn must not cost the whole report
            rep.notes.append(f"Figures of {builder.__name__} not drawn: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}")
            continue
        for name, caption, png in drawn:
            path = rep.out / "figures" / f"{slug(name)}.png"
            atomic_write(path, lambda f, png=png: f.write(png))  # whole or not at all, as the store's files
            rep.figures.append(Figure(slug(name), caption, path))
    rep.notes += [f"Damaged, left out: {path}: {why}." for path, why in sorted(src.damaged.items())]
    atomic_write(rep.out / "report.html", _html(src, rep))
    return rep


def _write_table(folder: Path, t: Table) -> None:
    buf = io.StringIO()
    csv.writer(buf).writerows([t.header, *t.rows])
    atomic_write(folder / f"{t.key}.csv", buf.getvalue())
    md = [f"**{t.title}**", "", "| " + " | ".join(t.header) + " |", "|" + " --- |" * len(t.header)]
    md += ["| " + " | ".join(c.replace("\n", "<br>") for c in r) + " |" for r in t.rows]
    atomic_write(folder / f"{t.key}.md", "\n".join(md) + "\n")


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}
th{background:#eee}td:first-child{font-weight:600}img{max-width:100%;border:1px solid #ddd}
figure{margin:1em 0 2em}figcaption{font-size:.9em;color:#555}.note{color:#555;font-size:.9em}"""


def _html(src: Source, rep: Report) -> str:
    counts = make_cell(src.rows)
    planned = (f" (an adaptive search of at most {src.n_planned})" if src.search else
               f" of {src.n_planned} planned") if src.n_planned else ""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>elrbench: {html.escape(src.title)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Trainability report: {html.escape(src.title)}</h1>",
             f"<p>{len(src.rows)} trials with a result{planned}: {counts.trained} trained, {counts.diverged} "
             f"diverged, {counts.failed} failed. From the {html.escape(src.origin)}; generated "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}.</p>"]
    if src.search:
        parts.append("<p>Adaptive search: each round chose the next depths of every arm (a workload, lr, optimizer "
                     "and schedule, under each warm-up on the same seeds) from the outcomes so far, where they tell "
                     "most about its D50; the P(trained) figures count the trials at each depth. "
                     f"Range and stopping rule: {html.escape(src.search)}.</p>")
    if rep.headline:
        parts.append("<h2 id='verdict'>Verdict</h2><ul class='headline'>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in rep.headline) + "</ul>")
    if rep.machines:
        parts.append("<p class='note'>Machines: " + "; ".join(html.escape(m) for m in rep.machines) + ".</p>")
    parts.append("<p class='note'>Every interval is 95%, and its coverage was measured on simulated studies "
                 "with a known truth (docs/statistics.md). Cells: trained/finished trials with the Wilson interval "
                 "of the fraction; the median final test accuracy over seeds with its order-statistic interval, "
                 "and the mean (no interval); diverged and failed counts. D50: the depth at which P(trained) = "
                 "0.5, from a logistic fit on log2(depth) with its calibrated profile-likelihood interval, at each "
                 "learning rate and at each warm-up's best learning rate (its interval holds the choice of lr). "
                 "Paired: each warm-up against the baseline on the same seeds: the difference of trained fractions "
                 "(Newcombe's paired score interval), the median accuracy difference (order statistics) and "
                 "P(X > Y) (score interval); * marks an interval that excludes no difference. Failure boundary: "
                 "the largest learning rate of the grid at which at least half of the seeds trained.</p>")
    for t in rep.tables:
        parts.append(f"<h2 id='{t.key}'>{html.escape(t.title)}</h2><table class='depth'><thead><tr>"
                     + "".join(f"<th>{html.escape(c)}</th>" for c in t.header) + "</tr></thead><tbody>"
                     + "".join("<tr>" + "".join(f"<td>{html.escape(c).replace(chr(10), '<br>')}</td>" for c in r)
                               + "</tr>" for r in t.rows)
                     + "</tbody></table>")
    for f in rep.figures:
        data = base64.b64encode(f.path.read_bytes()).decode()
        parts.append(f"<figure id='{f.key}'><img alt='{html.escape(f.caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in rep.notes]
    parts.append("</body></html>")
    return "\n".join(parts)
