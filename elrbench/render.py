"""`elrbench report`: the trainability report of a study (finished or still running) from its
results store, or from W&B offline run files alone. Writes into one folder:

    report.html         one self-contained page (styles inline, figures embedded; opens offline)
    tables/<name>.csv   each table, and the same as Markdown in tables/<name>.md
    figures/<name>.png  each figure
"""
from __future__ import annotations

import base64
import csv
import html
import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from elrbench import plots
from elrbench.report import best_lr, boundary_rows, by_depth, failure_boundary, spread_rows, table_rows
from elrbench.results import StudyStore, atomic_write

History = Callable[[str], list[dict[str, Any]]]
Layers = Callable[[str], tuple[list[str], list[dict[str, Any]]]]


@dataclass
class Source:
    """What a report is built from: result rows and, per trial, its history and per-layer rows."""
    title: str
    rows: list[dict[str, Any]]
    history: History
    layers: Layers | None  # None: not available (W&B files hold per-layer tables only now and then)
    n_planned: int | None = None
    origin: str = ""


@dataclass
class Report:
    out: Path
    tables: list[tuple[str, str, list[list[str]]]] = field(default_factory=list)  # (slug, title, rows)
    figures: list[tuple[str, str, Path]] = field(default_factory=list)  # (slug, caption, png)
    notes: list[str] = field(default_factory=list)


def from_store(store: StudyStore) -> Source:
    meta = store.meta()
    return Source(meta["study_id"], store.results(), store.history, store.layers, meta.get("n_trials"),
                  f"results store {store.root}")


def from_wandb(folder: Path) -> Source:
    """Rows and histories rebuilt from the trial runs' config, summary and history."""
    from elrbench.spec import TrialSpec
    from elrbench.tracking import read_offline_runs

    runs = [r for r in read_offline_runs(folder) if r.get("job_type") != "report"]
    rows, hist = [], {}
    for run in runs:
        t = TrialSpec.model_validate({**run["config"], "tracking": {}})  # tracking is not logged in config
        sm = run["summary"]
        rows.append({"trial_id": t.trial_id, "index": t.index, **t.point(),
                     **{k: v for k, v in sm.items() if not k.startswith("_") and not isinstance(v, dict)}})
        hist[t.trial_id] = [{"step": h["_step"], **h} for h in run["history"] if "_step" in h]
    rows.sort(key=lambda r: r["index"])
    title = runs[0]["group"] if runs else Path(folder).name
    return Source(title, rows, lambda tid: hist.get(tid, []), None, None, f"W&B offline runs under {folder}")


def _group_title(r: dict[str, Any]) -> str:  # the title by_depth gives the table a row belongs to
    return f"{r['workload']}  lr={r['lr']:g}  {r['optimizer']}  {r['schedule']}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def choose_trials(rows: list[dict[str, Any]], wanted: list[str] | None) -> list[dict[str, Any]]:
    """The trials shown in detail: those asked for (id or unique prefix), else the deepest depth's
    first seed at the first learning rate, one per warm-up (at most 4)."""
    if wanted:
        return [r for w in wanted for r in rows if r["trial_id"] == w or r["trial_id"].startswith(w)]
    done = [r for r in rows if r["outcome"] != "failed"]
    if not done:
        return []
    deep, lr, seed = max(r["depth"] for r in done), done[0]["lr"], min(r["seed"] for r in done)
    return [r for r in done if r["depth"] == deep and r["lr"] == lr and r["seed"] == seed][:4]


def build(src: Source, out: Path, trials: list[str] | None = None) -> Report:
    rep = Report(Path(out))
    rows = src.rows
    (rep.out / "tables").mkdir(parents=True, exist_ok=True)
    (rep.out / "figures").mkdir(parents=True, exist_ok=True)

    def add_table(title: str, body: list[list[str]]) -> None:
        slug = _slug(title)
        rep.tables.append((slug, title, body))
        buf = io.StringIO()
        csv.writer(buf).writerows(body)
        atomic_write(rep.out / "tables" / f"{slug}.csv", buf.getvalue())
        md = [f"**{title}**", "", "| " + " | ".join(body[0]) + " |", "|" + " --- |" * len(body[0])]
        md += ["| " + " | ".join(r) + " |" for r in body[1:]]
        atomic_write(rep.out / "tables" / f"{slug}.md", "\n".join(md) + "\n")

    def add_figure(name: str, caption: str, png: bytes) -> None:
        path = rep.out / "figures" / f"{_slug(name)}.png"
        path.write_bytes(png)
        rep.figures.append((_slug(name), caption, path))

    tables = by_depth(rows)
    for t in tables:
        add_table(f"trainability by depth: {t.title}", table_rows(t))
    for t in tables:
        group = [r for r in rows if _group_title(r) == t.title]
        if any(r.get("spread_mean") is not None for r in group):
            add_table(f"ELR spread, first K steps / whole run: {t.title}", spread_rows(t, group))
    if len({r["lr"] for r in rows}) > 1:
        for t, chosen in best_lr(rows):
            add_table(f"trainability by depth: {t.title}", table_rows(t, chosen))
        for title, depths, warmups, edge in failure_boundary(rows):
            add_table(f"failure boundary: {title}", boundary_rows(depths, warmups, edge))
    else:
        rep.notes.append("The failure boundary (largest learning rate that still trains) needs a grid of "
                         "several learning rates; this study has one.")

    for t in tables:
        thr = next((r.get("threshold") for r in rows if _group_title(r) == t.title), None)
        add_figure(f"accuracy-{t.title}", f"Final test accuracy against depth, mean ± std over seeds: {t.title}",
                   plots.accuracy_by_depth(t.title, t.depths, t.warmups, t.cells, thr))
    for t in tables:
        group = [r for r in rows if _group_title(r) == t.title]
        with_hist = [(r, src.history(r["trial_id"])) for r in group]
        if any(h for _, h in with_hist):
            add_figure(f"spread-{t.title}", f"ELR spread against step, mean over seeds: {t.title}",
                       plots.spread_curves(t.title, with_hist))
    scatter = [r for r in rows if r.get("spread_mean") is not None]
    if scatter:
        add_figure("spread-vs-accuracy", "Run-averaged ELR spread against final test accuracy, one point per trial",
                   plots.spread_vs_accuracy(scatter))
    chosen = choose_trials(rows, trials)
    if src.layers is None:
        rep.notes.append("Per-layer heatmaps need the results store's layers.jsonl (not in W&B files).")
    else:
        for r in chosen:
            names, layers = src.layers(r["trial_id"])
            if layers:
                add_figure(f"heatmap-{r['trial_id']}", f"Per-layer ELR (log10) by step: {r['trial_id']}",
                           plots.layer_heatmap(r, names, layers))
        plain = [r for r in chosen if r["warmup"] == "none" and r["schedule"] == "constant" and r["optimizer"] == "sgd"]
        for r in plain[:2]:
            _, layers = src.layers(r["trial_id"])
            if len(layers) > 1:
                add_figure(f"predicted-{r['trial_id']}", "Measured ELR spread against the weight-dynamics model "
                           f"(constant lr, constant base gradients), from the first logged ELRs: {r['trial_id']}",
                           plots.predicted_vs_measured(r, layers))
        if not plain:
            rep.notes.append("Predicted against measured ELR curves are drawn for plain SGD at a constant "
                             "learning rate without warm-up (what the model describes); no chosen trial is one.")
    atomic_write(rep.out / "report.html", _html(src, rep))
    return rep


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}
th{background:#eee}td:first-child{font-weight:600}img{max-width:100%;border:1px solid #ddd}
figure{margin:1em 0 2em}figcaption{font-size:.9em;color:#555}.note{color:#555;font-size:.9em}"""


def _html(src: Source, rep: Report) -> str:
    from elrbench.report import make_cell

    counts = make_cell(src.rows)
    planned = f" of {src.n_planned} planned" if src.n_planned else ""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>elrbench: {html.escape(src.title)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Trainability report: {html.escape(src.title)}</h1>",
             f"<p>{len(src.rows)} trials with a result{planned}: {counts.trained} trained, {counts.diverged} "
             f"diverged, {counts.failed} failed. From the {html.escape(src.origin)}; generated "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}.</p>",
             "<p class='note'>Cells: final test accuracy mean±std over seeds (trained/finished trials, diverged "
             "and failed counts). Failure boundary: the largest learning rate of the grid at which at least half "
             "of the seeds trained.</p>"]
    for slug, title, body in rep.tables:
        parts.append(f"<h2 id='{slug}'>{html.escape(title)}</h2><table class='depth'><thead><tr>"
                     + "".join(f"<th>{html.escape(c)}</th>" for c in body[0]) + "</tr></thead><tbody>"
                     + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body[1:])
                     + "</tbody></table>")
    for slug, caption, path in rep.figures:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<figure id='{slug}'><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in rep.notes]
    parts.append("</body></html>")
    return "\n".join(parts)
