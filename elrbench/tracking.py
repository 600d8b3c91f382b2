"""Weights & Biases: one run per trial (rank 0 only, wandb imported lazily), and a reader of the
offline run files wandb writes (wandb 0.31 has none of its own).

Run id = trial id (resume="allow": a restarted trial appends to its run), group = study id,
job_type = workload, tags = depth, warm-up, optimizer, lr; config = the resolved trial spec. Every
log period: losses, accuracies, learning rate, ELR spread and global norms as scalars; per-layer
ELRs, weight and gradient norms as histograms (log10), never one scalar key per layer (W&B slows
down past ~10k keys per project); every `TABLE_EVERY`-th log period and at the end, a per-layer
table. Offline runs go to <study>/wandb/offline-run-*/; `wandb sync <study>/wandb/offline-run-*`
uploads them later from a machine with network.
"""
from __future__ import annotations

import configparser
import json
import math
import netrc
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from elrbench.errors import UsageError

if TYPE_CHECKING:
    from elrbench.result import TrialResult
    from elrbench.tables import Figure, Table

TABLE_EVERY = 10
LAYER_COLUMNS = ("layer", "name", "w_norm", "g_norm", "elr", "lr", "c_hat")
LABEL_KEY = "warmup_label"  # derived config key beside the trial spec: what tables and the W&B Report group by


DEFAULT_BASE_URL = "https://api.wandb.ai"


def wandb_base_url() -> str:
    """The W&B server wandb will talk to, resolved as wandb 0.31 does (lowest to highest precedence):
    the default, the global settings file (WANDB_CONFIG_DIR/settings or ~/.config/wandb/settings),
    the workspace's ./wandb/settings, then WANDB_BASE_URL. `wandb login --host URL` writes the
    global file (wandb.sdk.wandb_settings.Settings, docstring and read_system_settings)."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"].rstrip("/")
    config_dir = Path(os.environ["WANDB_CONFIG_DIR"]) if os.environ.get("WANDB_CONFIG_DIR") else (
        Path.home() / ".config" / "wandb")
    url = DEFAULT_BASE_URL
    for f in (config_dir / "settings", Path("wandb") / "settings"):
        parser = configparser.ConfigParser()
        try:
            parser.read(f, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue  # wandb, too, warns and goes on without a broken settings file
        if parser.has_option("default", "base_url"):
            url = parser.get("default", "base_url")
    return url.rstrip("/")


def netrc_path() -> Path:
    """The netrc file wandb reads: $NETRC, else ~/.netrc, else ~/_netrc if only that exists."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix, windows = Path.home() / ".netrc", Path.home() / "_netrc"
    return windows if windows.exists() and not unix.exists() else unix


def netrc_has_key(base_url: str) -> bool:
    """Whether the netrc holds a password for the server's host[:port], the machine name that
    `wandb login --host URL` writes (wandb.sdk.lib.wbauth.wbnetrc)."""
    machine = urlsplit(base_url).netloc
    try:
        creds = netrc.netrc(str(netrc_path())).authenticators(machine) if machine else None
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(creds and creds[2])


def check_mode(mode: str) -> None:
    """Before anything starts: online needs credentials for the server wandb will use (never read
    out or stored by elrbench itself): WANDB_API_KEY, or the netrc entry for that server's host."""
    if mode != "online":
        return
    base = wandb_base_url()
    if not os.environ.get("WANDB_API_KEY") and not netrc_has_key(base):
        raise UsageError(f"tracking.wandb: online needs a W&B API key for {base} (set WANDB_API_KEY or run "
                         f"`wandb login --host {base}`; {netrc_path()} has no entry for machine "
                         f"'{urlsplit(base).netloc}'); or use offline and `wandb sync` the runs later")


class Tracker:
    """A W&B run of one trial. Methods never raise into the training loop's caller: tracking is
    secondary to the result, so a W&B failure is recorded in the run's row instead."""

    def __init__(self, trial, root: Path, layer_names: list[str] | None = None, run_id: str | None = None) -> None:
        import wandb  # lazy: only trials that track pay for the import

        self.wandb = wandb
        self.names = layer_names or []
        self.n_logged = 0
        self.error: str | None = None
        tags = [f"depth={trial.depth}", f"warmup={trial.warmup.label}", f"optimizer={trial.optimizer.label}",
                f"lr={trial.lr:g}"]
        t = trial.tracking
        self.run = wandb.init(
            project=t.project, entity=t.entity, group=trial.study_id, job_type=trial.workload.name,
            name=trial.trial_id, id=run_id or trial.trial_id, resume="allow", tags=tags, dir=str(root),
            config={**trial.model_dump(mode="json", exclude={"tracking"}), LABEL_KEY: trial.warmup.label},
            mode=t.wandb,
            settings=wandb.Settings(console="off", x_disable_stats=True, disable_git=True, save_code=False,
                                    silent=True),
        )

    def log(self, row: dict[str, Any], layers: dict[str, Any] | None) -> None:
        try:
            payload: dict[str, Any] = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
            if layers:
                for key in ("elr", "w_norm", "g_norm"):
                    vals = [math.log10(v) for v in layers[key] if v > 0 and math.isfinite(v)]
                    if vals:
                        payload[f"layers/log10_{key}"] = self.wandb.Histogram(vals)
                if self.n_logged % TABLE_EVERY == 0:
                    payload["layers/table"] = self._table(layers)
                self.n_logged += 1
            self.last_layers = layers or getattr(self, "last_layers", None)
            self.run.log(payload, step=int(row["step"]))
        except Exception as e:  # noqa: BLE001 - see the class docstring
            self.error = self.error or f"{type(e).__name__}: {e}"

    def _table(self, layers: dict[str, Any]):
        names = self.names or [str(i) for i in range(len(layers["elr"]))]
        data = [[i, names[i], layers["w_norm"][i], layers["g_norm"][i], layers["elr"][i], layers["lr"][i],
                 layers["c_hat"][i]] for i in range(len(layers["elr"]))]
        return self.wandb.Table(columns=list(LAYER_COLUMNS), data=data)

    def finish(self, result: TrialResult) -> None:
        """The run's summary is the trial's result (its recorded fields, TrialResult.summary), and a
        numeric trained flag (1/0) that W&B panels can average into P(trained)."""
        try:
            self.run.summary.update({**result.summary(), "trained": float(result.outcome == "trained")})
            if getattr(self, "last_layers", None):
                self.run.summary["layers/final_table"] = self._table(self.last_layers)
            self.run.finish(exit_code=0)
        except Exception as e:  # noqa: BLE001
            self.error = self.error or f"{type(e).__name__}: {e}"

    def abort(self) -> None:
        """The trial stopped part-way (an exception): the run ends as failed; a retry resumes it."""
        try:
            self.run.finish(exit_code=1)
        except Exception as e:  # noqa: BLE001
            self.error = self.error or f"{type(e).__name__}: {e}"


def start_tracker(trial, store, layer_names: list[str] | None) -> Tracker | None:
    """A tracker for this trial (its run in the study folder `store`), or None (tracking disabled)."""
    if trial.tracking.wandb == "disabled" or trial.tracking.runs == "study":
        return None
    return Tracker(trial, store.root, layer_names, run_id=store.run_id(trial.trial_id))


# ---------------------------------------------------------------- offline run files
# The .wandb file (as wandb 0.31 writes it; seen in its files): a 7-byte header ":W&B",
# 0xBEE1 (little-endian), version 0; then LevelDB-log framing: 32 KiB blocks, each record a 7-byte
# header (crc32c, length u16, type: 1 full, 2 first, 3 middle, 4 last) and its bytes; a block tail
# shorter than a header is zero padding. Records are wandb_internal_pb2.Record messages.
_BLOCK, _HEADER = 32768, 7


def _chunks(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B" or struct.unpack("<H", data[4:6])[0] != 0xBEE1:
        raise ValueError("not a W&B run file (no :W&B header)")
    pos, buf = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0 and length == 0:  # padding up to the end of the block
            pos += left
            continue
        end = pos + _HEADER + length
        if end > len(data):  # a torn record at the end of a killed run's file
            return
        chunk, pos = data[pos + _HEADER : end], end
        if kind == 1:
            yield chunk
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield buf + chunk
            buf = b""


def _set(d: dict[str, Any], item) -> None:
    path = list(item.nested_key) or [item.key]
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = json.loads(item.value_json)


def read_run_file(path: Path) -> dict[str, Any]:
    """One offline run file: {id, project, group, job_type, tags, config, history, summary}."""
    from wandb.proto import wandb_internal_pb2 as pb

    run: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "file": str(path)}
    for chunk in _chunks(Path(path).read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(chunk)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.update(id=r.run_id, project=r.project, group=r.run_group, job_type=r.job_type,
                       tags=list(r.tags), name=r.display_name, entity=r.entity)
            for it in r.config.update:
                _set(run["config"], it)
        elif kind == "config":
            for it in rec.config.update:
                _set(run["config"], it)
        elif kind == "history":
            row: dict[str, Any] = {}
            for it in rec.history.item:
                _set(row, it)
            run["history"].append(row)
        elif kind == "summary":
            for it in rec.summary.update:
                _set(run["summary"], it)
            for it in rec.summary.remove:
                run["summary"].pop(it.key, None)
    run["config"].pop("_wandb", None)
    return run


def read_offline_runs(folder: Path, damaged: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every run under a wandb folder (or a study folder), one entry per run id. A run resumed after
    a restart has several offline files: they merge in time order, a later file's row replacing an
    earlier one at the same step (the steps redone since the last checkpoint), so no step appears twice."""
    folder = Path(folder)
    files = sorted(folder.glob("**/offline-run-*/run-*.wandb"), key=lambda p: p.parent.name)
    runs: dict[str, dict[str, Any]] = {}
    for f in files:
        try:
            r = read_run_file(f)
        except Exception as e:  # noqa: BLE001 - a damaged file (bad header, bad record) is named and skipped
            if damaged is None:
                raise
            why = str(e).splitlines()[0] if str(e) else ""
            damaged[str(f)] = f"not a readable W&B run file ({type(e).__name__}: {why})"
            continue
        if "id" not in r:
            continue
        if r["id"] not in runs:
            runs[r["id"]] = r | {"files": [r.pop("file")]}
            continue
        into = runs[r["id"]]
        into["files"].append(r["file"])
        by_step = {h.get("_step"): h for h in into["history"]}
        by_step.update({h.get("_step"): h for h in r["history"]})
        into["history"] = [by_step[s] for s in sorted(by_step, key=lambda s: -1 if s is None else s)]
        into["summary"].update(r["summary"])
        into["config"].update(r["config"])
    return list(runs.values())


def log_report(study_id: str, tracking, root: Path, tables: list[Table], figures: list[Figure],
               results: list[TrialResult] | None = None, make_id: Callable[[str], str] = str) -> str | None:
    """The study-summary run (id <study>-report, job_type report): every report table as a W&B
    Table, every figure as an image, and a table of every trial's result (one row each: what
    tracking.runs = study keeps instead of a run per trial; "trials", or "trials/part-000", ... of
    10,000 rows each for larger studies). Returns the run id, or None when tracking is disabled."""
    if tracking.wandb == "disabled":
        return None
    import wandb

    # W&B names a logged table's artifact run-<id>-<key> and refuses names past 128 characters:
    # a short id (the study's hash) and numbered keys; the titles go into the run's config.
    run_id = make_id(f"report-{study_id.rsplit('-', 1)[-1]}")  # make_id: the study folder's StudyStore.run_id
    run = wandb.init(project=tracking.project, entity=tracking.entity, group=study_id, job_type="report",
                     id=run_id, name=f"{study_id}-report", resume="allow", dir=str(root), mode=tracking.wandb,
                     config={"tables": {f"t{i:02d}": t.title for i, t in enumerate(tables)},
                             "figures": {f"f{i:02d}": f.caption for i, f in enumerate(figures)}},
                     settings=wandb.Settings(console="off", x_disable_stats=True, disable_git=True,
                                             save_code=False, silent=True))
    payload: dict[str, Any] = {}
    for i, t in enumerate(tables):
        payload[f"tables/t{i:02d}-{t.key[:40]}"] = wandb.Table(columns=t.header, data=t.rows)
    for i, f in enumerate(figures):
        payload[f"figures/f{i:02d}-{f.key[:40]}"] = wandb.Image(str(f.path), caption=f.caption)
    if results:
        from elrbench.result import TrialResult

        # A table logged to a run keeps its first wandb.Table.MAX_ROWS rows (10,000 in wandb 0.31: the rest
        # is dropped with a logged warning; measured): larger studies log their trials in parts of that size.
        cols, size = TrialResult.columns(results), wandb.Table.MAX_ROWS
        parts = [results[k : k + size] for k in range(0, len(results), size)]
        for i, part in enumerate(parts):
            data = [[json.dumps(v) if isinstance(v, (list, dict)) else v for v in r.row(cols)] for r in part]
            payload["trials" if len(parts) == 1 else f"trials/part-{i:03d}"] = wandb.Table(columns=cols, data=data)
    run.log(payload)
    run.finish()
    return run_id


# ---------------------------------------------------------------- a W&B Report (wandb-workspaces)
def wandb_report(study_id: str, tracking, entity: str, headline: list[str], tables: list[Table]):
    """A W&B Report of the study: its verdict, the by-depth tables, and panels over the study's trial
    runs (the run set is the study's W&B group, without the summary run) grouped by warm-up: the
    trained fraction by depth and the ELR spread against step. Runs are grouped by the warm-up's label
    (config.warmup_label, as every table groups them: `critical` and `critical(source=update)` are
    two groups), not its name. Built without a server; saving it
    (save_wandb_report) needs one."""
    import wandb_workspaces.reports.v2 as wr

    runs = wr.Runset(entity=entity, project=tracking.project, name=study_id,
                     filters=f"Metric('Group') == '{study_id}' and Metric('JobType') != 'report'",
                     groupby=[f"config.{LABEL_KEY}", "config.depth"])
    by_warmup = wr.Runset(entity=entity, project=tracking.project, name=f"{study_id} by warm-up",
                          filters=runs.filters, groupby=[f"config.{LABEL_KEY}"])
    blocks = [wr.H1(f"elrbench: {study_id}"),
              wr.MarkdownBlock("**Verdict** (D50: the depth at which P(trained) = 0.5, 95% intervals)\n\n"
                               + "\n".join(f"- {line}" for line in headline) if headline else
                               "No verdict: the study has too few depths or trials.")]
    for t in tables:
        md = ["| " + " | ".join(t.header) + " |", "|" + " --- |" * len(t.header)]
        md += ["| " + " | ".join(c.replace("\n", "<br>") for c in r) + " |" for r in t.rows]
        blocks += [wr.H2(t.title), wr.MarkdownBlock("\n".join(md))]
    blocks += [
        wr.H2("P(trained) by warm-up and depth"),
        wr.PanelGrid(runsets=[runs], panels=[wr.BarPlot(title="P(trained): mean of the trained flag",
                                                        metrics=[wr.SummaryMetric("trained")])]),
        wr.H2("ELR spread against step, by warm-up"),
        wr.PanelGrid(runsets=[by_warmup], panels=[wr.LinePlot(title="ELR spread log10(max/min)", x="Step",
                                                              y=["elr_spread"], groupby_aggfunc="mean",
                                                              groupby_rangefunc="minmax")]),
    ]
    return wr.Report(project=tracking.project, entity=entity, title=f"elrbench: {study_id}",
                     description="Trainability by depth and what each warm-up buys, from elrbench.", blocks=blocks)


def save_wandb_report(study_id: str, tracking, headline: list[str], tables: list[Table]) -> str:
    """Build the study's W&B Report and save it to the W&B server; returns its URL. Online only."""
    if tracking.wandb != "online":
        raise UsageError(f"--wandb-report: a W&B Report is saved on a W&B server, and this study tracks "
                         f"'{tracking.wandb}'; sync its runs (wandb sync) and set tracking.wandb: online")
    check_mode("online")
    import wandb

    entity = tracking.entity or wandb.Api().default_entity
    report = wandb_report(study_id, tracking, entity, headline, tables)
    report.save()
    return report.url
