"""The report: table numbers from a results store the test writes; the HTML page rendered by headless
Chromium; the W&B round trip (report from the store == report from the offline runs); no secret."""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess

import pytest
import yaml

from elrbench.result import TrialResult
from elrbench.spec import validate_spec
from elrbench.store import StudyStore
from elrbench.tables import Table, best_lr, by_depth, failure_boundary
from tests.conftest import cli as run

SECRET = "dummy-secret-fedcba9876543210fedcba9876543210"


def _row(i, depth, lr, warmup, seed, outcome, acc, spread=0.5):
    return TrialResult(trial_id=f"t{i}", index=i, workload="w", depth=depth, lr=lr, optimizer="sgd", warmup=warmup,
                       schedule="constant", seed=seed, outcome=outcome, final_test_acc=acc, spread_mean=spread)


ROWS = [  # depth 4 trains at both lrs; depth 32 only at lr 0.1 with a warm-up
    _row(0, 4, 0.1, "none", 0, "trained", 0.95), _row(1, 4, 0.1, "none", 1, "trained", 0.93),
    _row(2, 4, 1.0, "none", 0, "trained", 0.91), _row(3, 4, 1.0, "none", 1, "untrained", 0.85),
    _row(4, 32, 0.1, "none", 0, "untrained", 0.40), _row(5, 32, 0.1, "none", 1, "diverged", None),
    _row(6, 32, 1.0, "none", 0, "diverged", None), _row(7, 32, 1.0, "none", 1, "diverged", None),
    _row(8, 32, 0.1, "lin", 0, "trained", 0.92), _row(9, 32, 0.1, "lin", 1, "untrained", 0.88),
    _row(10, 4, 0.1, "lin", 0, "trained", 0.96), _row(11, 4, 0.1, "lin", 1, "trained", 0.94),
    _row(12, 4, 1.0, "lin", 0, "trained", 0.97), _row(13, 4, 1.0, "lin", 1, "trained", 0.97),
    _row(14, 32, 1.0, "lin", 0, "untrained", 0.50), _row(15, 32, 1.0, "lin", 1, "failed", None),
]


def test_table_numbers_from_a_written_store(tmp_path, base_spec):
    store = StudyStore.create(validate_spec(base_spec))
    for r in ROWS:
        store.write_result(r)
    rows = store.results()
    assert rows == ROWS  # written and read back as typed results
    t01 = next(t for t in by_depth(rows) if t.group.lr == 0.1)
    c = t01.cells[(4, "none")]
    assert (c.n, c.trained, c.acc_mean) == (2, 2, pytest.approx(0.94))
    assert c.accs == (0.95, 0.93)
    c = t01.cells[(32, "none")]
    assert (c.n, c.trained, c.diverged, c.acc_mean, c.accs) == (2, 0, 1, 0.40, (0.40,))
    t1 = next(t for t in by_depth(rows) if t.group.lr == 1.0)
    c = t1.cells[(32, "lin")]
    assert (c.n, c.trained, c.failed, c.acc_mean) == (2, 0, 1, 0.50)
    (best,) = best_lr(rows)
    assert best.cells[(4, "lin")].lr == 1.0 and best.cells[(4, "lin")].cell.acc_mean == pytest.approx(0.97)
    assert best.cells[(4, "none")].lr == 0.1 and best.cells[(32, "lin")].lr == 0.1
    (edge,) = failure_boundary(rows)
    assert edge.cells == {(4, "none"): 1.0, (4, "lin"): 1.0, (32, "none"): None, (32, "lin"): 0.1}
    # the text forms carry the same numbers
    t = Table.of("boundary", edge)
    assert t.kind == "boundary" and t.title == "failure boundary: w  sgd  constant"
    assert t.header == ["depth", "warm-up: none", "warm-up: lin"] and t.rows == [["4", "1", "1"], ["32", "-", "0.1"]]
    assert Table.of("best_lr", best).rows[0][2].endswith(" @ lr 1")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A small real study (inline, W&B offline, a dummy API key in the environment) and its report."""
    tmp = tmp_path_factory.mktemp("report")
    spec = {"name": "rep", "output_dir": str(tmp / "runs"),
            "workloads": [{"model": "plain_cnn", "dataset": "digits", "threshold": 0.8}],
            "grid": {"depth": [3, 8], "lr": [0.1, 1.0], "warmup": ["none", {"name": "linear", "steps": 10}]},
            "budget": {"steps": 30, "batch_size": 64, "log_every": 5},
            "tracking": {"wandb": "offline", "project": "elrbench-test"}}
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {"WANDB_API_KEY": SECRET}
    sub = run("submit", str(path), "--executor", "inline", env=env)
    assert sub.returncode == 0, sub.stderr[-3000:]
    (folder,) = (tmp / "runs").iterdir()
    rep = run("report", str(folder), env=env)
    assert rep.returncode == 0, rep.stderr[-3000:]
    return folder, sub, rep


def test_report_writes_tables_figures_and_html(study):
    folder, _, rep = study
    out = folder / "report"
    assert "trainability by depth" in rep.stdout and "failure boundary" in rep.stdout
    assert f"report: {out / 'report.html'}" in rep.stdout
    tables = sorted(p.stem for p in (out / "tables").glob("*.csv"))
    # per lr: by depth, paired, spread (x2); across lrs: D50 by lr, best lr, failure boundary
    assert len(tables) == 9 and sorted(p.stem for p in (out / "tables").glob("*.md")) == tables
    assert "verdict (D50" in rep.stdout and "linear(steps=10) at its best lr " in rep.stdout
    assert "; lrs 0.1, 1)" in rep.stdout  # the verdict names the lr grid it chose from
    figures = list((out / "figures").glob("*.png"))
    assert {"spread-vs-accuracy.png"} <= {p.name for p in figures} and len(figures) >= 5
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in figures)
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    assert html.count("data:image/png;base64,") == len(figures)
    rows = [json.loads(p.read_text()) for p in folder.glob("trials/*/result.json")]
    table = next((out / "tables").glob("trainability-by-depth-*lr-0.1-*.csv")).read_text()
    body = list(csv.reader(io.StringIO(table)))
    assert body[0] == ["depth", "warm-up: none", "warm-up: linear(steps=10)"]
    r = next(r for r in rows if r["depth"] == 3 and r["lr"] == 0.1 and r["warmup"] == "none")
    trained = int(r["outcome"] == "trained")
    assert body[1][1].startswith(f"{trained}/1 trained [") and f"\nacc median {r['final_test_acc']:.3f}\n" in body[1][1]
    assert "Verdict" in html and "Machines: " in html and "95%" in html
    assert {p.name.split("-")[0] for p in figures} >= {"trained", "accuracy", "spread", "d50"}
    d50 = next((out / "tables").glob("trainable-depth-d50-by-learning-rate-*.csv")).read_text()
    body = list(csv.reader(io.StringIO(d50)))
    assert body[0] == ["warm-up", "lr", "D50, layers [95%]", "difference to none [95%]", "seeds"]
    assert [r[1] for r in body[1:4]] == ["0.1", "1", body[3][1]] and body[3][1].startswith("best: ")


def test_the_html_renders_in_headless_chromium(study, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not exe:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium package)")
    folder, _, _ = study
    page = tmp_path / "check.html"
    # the report plus a probe that records, once loaded, the table rows and whether every image decoded
    probe = ("<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
             "const p=document.createElement('pre');p.id='probe';p.textContent=JSON.stringify({"
             "rows:document.querySelectorAll('table.depth tbody tr').length,images:imgs.length,"
             "verdict:document.querySelectorAll('ul.headline li').length,"
             "interval:/\\d\\/\\d trained \\[0\\.\\d\\d, [01]\\.\\d\\d\\]/.test("
             "document.querySelector('table.depth tbody td:nth-child(2)').innerText),"
             "decoded:imgs.filter(i=>i.complete&&i.naturalWidth>0).length});document.body.appendChild(p);});"
             "</script>")
    page.write_text((folder / "report" / "report.html").read_text().replace("</body>", probe + "</body>"))
    common = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
              "--user-data-dir=" + str(tmp_path / "profile"), "--virtual-time-budget=5000"]
    dom = subprocess.run(common + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    start = dom.stdout.index('<pre id="probe">') + len('<pre id="probe">')
    probe_out = json.loads(dom.stdout[start : dom.stdout.index("</pre>", start)])
    n_figures = len(list((folder / "report" / "figures").glob("*.png")))
    # 8 tables of 2 rows and the D50 table (2 warm-ups x (2 lrs + best)); one verdict line (best lr
    # against best lr); a cell's Wilson interval as rendered
    assert probe_out == {"rows": 8 * 2 + 6, "images": n_figures, "decoded": n_figures, "verdict": 1, "interval": True}
    shot = tmp_path / "shot.png"
    subprocess.run(common + ["--window-size=1200,1600", f"--screenshot={shot}", (folder / "report" / "report.html")
                             .as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1200, 1600)
    assert sum(1 for n in img.histogram() if n) > 50  # text, table borders and plots, not a blank page


def test_wandb_round_trip_gives_the_same_report(study, tmp_path):
    folder, _, _ = study
    r = run("report", "--from-wandb", str(folder / "wandb"), "--out", str(tmp_path / "from-wandb"))
    assert r.returncode == 0, r.stderr[-3000:]
    for csv_path in (folder / "report" / "tables").glob("*.csv"):
        assert (tmp_path / "from-wandb" / "tables" / csv_path.name).read_text() == csv_path.read_text(), csv_path.name
    from elrbench.tracking import read_offline_runs

    runs = read_offline_runs(folder / "wandb")
    assert len([x for x in runs if x["job_type"] != "report"]) == 8
    (summary,) = [x for x in runs if x["job_type"] == "report"]
    (logged,) = summary["history"]
    assert sum(k.startswith("tables/") for k in logged) == 9
    assert all(logged[k]["_type"] == "image-file" for k in logged if k.startswith("figures/"))
    bad = run("report", "--from-wandb", str(tmp_path))
    assert bad.returncode == 2 and "no W&B offline runs" in bad.stderr
    offline = run("report", str(folder), "--wandb-report")  # this study is offline: refused in one line
    assert offline.returncode == 2 and offline.stderr.count("\n") == 1 and "--wandb-report" in offline.stderr


def test_no_secret_in_any_output(study):
    folder, sub, rep = study
    for text in (sub.stdout, sub.stderr, rep.stdout, rep.stderr):
        assert SECRET not in text
    for p in folder.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p


def test_report_on_bad_input(tmp_path):
    r = run("report", str(tmp_path))
    assert r.returncode == 2 and "not a study folder" in r.stderr
    r = run("report")
    assert r.returncode == 2 and "--from-wandb" in r.stderr


def test_compare_two_runs_of_one_grid(study, tmp_path):
    folder, _, _ = study
    twin = tmp_path / "twin"
    shutil.copytree(folder, twin)
    # make the twin differ in one trial, as another machine might
    one = next(twin.glob("trials/*d8-none-lr1*/result.json"))
    row = json.loads(one.read_text())
    row["outcome"], row["final_test_acc"] = ("untrained", 0.1) if row["outcome"] == "trained" else ("trained", 0.99)
    one.write_text(json.dumps(row, indent=2))
    r = run("compare", str(folder), str(twin))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "8 trials in both (paired by grid point); 0 only in A, 0 only in B" in r.stdout
    assert "differ in identity" not in r.stdout  # the same trial ids
    assert "0 of 8 cells differ beyond their 95% intervals" in r.stdout  # one seed: no interval, nothing called
    assert "A: " in r.stdout and "B: " in r.stdout and "the verdicts" in r.stdout
    assert "linear(steps=10) against none" in r.stdout and "at its best lr " in r.stdout
    other = tmp_path / "other"
    other.mkdir()
    (other / "study.json").write_text(json.dumps({"study_id": "x", "n_trials": 0}))
    bad = run("compare", str(folder), str(other))
    assert bad.returncode == 2 and "no grid point in common" in bad.stderr


def test_report_against_another_baseline(study, tmp_path):
    folder, _, rep = study
    own = (folder / "report" / "report.html").read_bytes()
    assert "linear(steps=10) at its best lr" in rep.stdout  # the spec's baseline: none
    r = run("report", str(folder), "--baseline", "linear(steps=10)", "--out", str(tmp_path / "vs"), "--no-wandb")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "none at its best lr" in r.stdout and "; linear(steps=10) at its best lr" in r.stdout
    assert (tmp_path / "vs" / "report.html").is_file()
    assert (folder / "report" / "report.html").read_bytes() == own  # the study's own report is left alone
    bad = run("report", str(folder), "--baseline", "cap", "--out", str(tmp_path / "bad"), "--no-wandb")
    assert bad.returncode == 2 and "--baseline 'cap' is not a warm-up of this study" in bad.stderr
    assert "none, linear(steps=10)" in bad.stderr and not (tmp_path / "bad").exists()
