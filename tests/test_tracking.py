"""W&B tracking against real wandb offline runs, read back through elrbench's own reader."""
from __future__ import annotations

import json
import time

import pytest

from elrbench.errors import UsageError
from elrbench.spec import validate_spec
from elrbench.store import StudyStore
from elrbench.tracking import check_mode, read_offline_runs, read_run_file
from elrbench.train import run_trial
from tests.conftest import Died, stop_at

SECRET = "dummy-secret-0123456789abcdef0123456789abcdef"


@pytest.fixture
def tracked(base_spec, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)  # present in the environment: must never be written anywhere
    base_spec["tracking"] = {"wandb": "offline", "project": "elrbench-test"}
    base_spec["budget"].update(steps=24, log_every=4, eval_every=8, checkpoint_every=8)
    s = validate_spec(base_spec)
    return s, StudyStore.create(s)


def test_an_offline_run_reads_back_exactly(tracked):
    s, store = tracked
    (t,) = s.expand()
    row = run_trial(t, store)
    assert row.tracking_error is None
    (run,) = read_offline_runs(store.root)
    assert run["id"] == store.run_id(t.trial_id) == f"{t.trial_id}-{store.meta()['instance']}"
    assert run["group"] == s.study_id and run["job_type"] == t.workload.name
    assert run["project"] == "elrbench-test"
    assert {"depth=3", "warmup=none", "optimizer=sgd", "lr=0.1"} <= set(run["tags"])
    assert run["config"]["depth"] == 3 and run["config"]["trial_id"] == t.trial_id
    assert "tracking" not in run["config"]
    assert run["config"]["warmup_label"] == t.warmup.label  # what the W&B Report groups by
    hist = store.history(t.trial_id)
    assert [h["_step"] for h in run["history"]] == [h["step"] for h in hist]
    for h, w in zip(hist, run["history"]):  # every scalar, exactly
        for k, v in h.items():
            if k != "step":
                assert w[k] == v, k
    first = run["history"][0]
    assert first["layers/log10_elr"]["_type"] == "histogram" and len(first["layers/log10_elr"]["values"]) > 0
    assert first["layers/table"]["_type"] == "table-file" and first["layers/table"]["nrows"] == 2
    assert "layers/table" not in run["history"][1]  # the per-layer table only every TABLE_EVERY log periods
    assert not any(k.startswith("layer_") or k.count("/") > 1 for h in run["history"] for k in h)
    sm = run["summary"]
    assert sm["outcome"] == row.outcome and sm["final_test_acc"] == row.final_test_acc
    assert sm["spread_mean"] == row.spread_mean and sm["steps_done"] == 24
    # the summary holds the trial's result: every recorded field but its identity (beside the last
    # value of each logged key, which W&B adds itself)
    assert {k: sm.get(k, "missing") for k in row.summary()} == row.summary()
    assert "trial_id" not in sm and "threshold" in sm and "grad_explosion_slope" in sm


def test_a_restarted_trial_appends_to_its_run_without_duplicate_steps(tracked):
    s, store = tracked
    (t,) = s.expand()
    with pytest.raises(Died):
        run_trial(t, store, progress=stop_at(12))  # dies after step 12; last checkpoint at step 8
    row = run_trial(t, store)
    (run,) = read_offline_runs(store.root)
    assert len(run["files"]) == 2  # the first try and the resumed one
    steps = [h["_step"] for h in run["history"]]
    assert steps == [h["step"] for h in store.history(t.trial_id)] and len(steps) == len(set(steps))
    assert run["summary"]["outcome"] == row.outcome


def test_a_torn_run_file_reads_up_to_the_tear(tracked, tmp_path):
    s, store = tracked
    (t,) = s.expand()
    run_trial(t, store)
    (f,) = store.root.glob("wandb/offline-run-*/run-*.wandb")
    whole = read_run_file(f)
    torn = tmp_path / "run-x.wandb"
    torn.write_bytes(f.read_bytes()[: f.stat().st_size * 2 // 3])
    part = read_run_file(torn)
    assert part["id"] == whole["id"] and 0 < len(part["history"]) < len(whole["history"])
    assert part["history"] == whole["history"][: len(part["history"])]
    (tmp_path / "bad.wandb").write_bytes(b"not a run")
    with pytest.raises(ValueError, match="not a W&B run file"):
        read_run_file(tmp_path / "bad.wandb")


def test_no_secret_is_written_anywhere(tracked):
    s, store = tracked
    (t,) = s.expand()
    run_trial(t, store)
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p


def test_online_needs_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(UsageError, match="tracking.wandb: online needs a W&B API key"):
        check_mode("online")
    check_mode("offline")
    check_mode("disabled")
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    check_mode("online")


def test_online_accepts_the_netrc_entry_of_the_server_wandb_uses(monkeypatch, tmp_path):
    """A self-hosted W&B Server: `wandb login --host http://127.0.0.1:8080` writes a netrc entry for
    machine 127.0.0.1:8080 and base_url to wandb's global settings file; api.wandb.ai is not named."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.chdir(tmp_path)
    rc = tmp_path / "netrc"
    rc.write_text(f"machine 127.0.0.1:8080\n  login user\n  password {SECRET}\n")
    monkeypatch.setenv("NETRC", str(rc))
    with pytest.raises(UsageError, match=r"for https://api.wandb.ai .*no entry for machine 'api.wandb.ai'"):
        check_mode("online")  # the default server: the netrc has no key for it
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "settings").write_text("[default]\nbase_url = http://127.0.0.1:8080\n")
    check_mode("online")  # as `wandb login --host` leaves it
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9999")
    with pytest.raises(UsageError, match="127.0.0.1:9999"):
        check_mode("online")  # the environment wins over the settings file, as in wandb
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:8080/")
    check_mode("online")
    rc.write_text("machine api.wandb.ai login user password\n")  # an entry without a key, unparseable is alike
    monkeypatch.delenv("WANDB_BASE_URL")
    (tmp_path / "cfg" / "settings").unlink()
    with pytest.raises(UsageError):
        check_mode("online")
    rc.write_text(f"machine api.wandb.ai login user password {SECRET}\n")
    check_mode("online")


def test_a_wandb_report_is_built_without_a_server():
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    from elrbench.spec import TrackingSpec
    from elrbench.tables import Table, by_depth
    from elrbench.tracking import save_wandb_report, wandb_report
    from tests.conftest import result_row as _row

    (grid,) = by_depth([_row(4, "none", 0, "trained", 0.9), _row(8, "none", 0, "untrained", 0.3)])
    table = Table.of("by_depth", grid)
    online = TrackingSpec(wandb="online", project="elrbench-test", entity="someone")
    r = wandb_report("demo-1234abcd", online, "someone", ["linear: trainable to 27 layers [21, 35]"], [table])
    assert (r.project, r.entity, r.title) == ("elrbench-test", "someone", "elrbench: demo-1234abcd")
    kinds = [type(b).__name__ for b in r.blocks]
    assert kinds[:2] == ["H1", "MarkdownBlock"] and kinds.count("PanelGrid") == 2
    assert "linear: trainable to 27 layers [21, 35]" in r.blocks[1].text
    assert any(isinstance(b, wr.MarkdownBlock) and "| depth | warm-up: none |" in b.text for b in r.blocks)
    runsets = [rs for b in r.blocks if isinstance(b, wr.PanelGrid) for rs in b.runsets]
    for rs in runsets:  # each run set is the study's trial runs, and only those
        assert (rs.entity, rs.project) == ("someone", "elrbench-test")
        tree = repr(expr.expr_to_filters(rs.filters))
        assert "demo-1234abcd" in tree and "group" in tree and "report" in tree
    assert runsets[0].groupby == ["config.warmup_label", "config.depth"]  # as the tables group: by label
    assert runsets[1].groupby == ["config.warmup_label"]
    panels = [p for b in r.blocks if isinstance(b, wr.PanelGrid) for p in b.panels]
    assert {type(p).__name__ for p in panels} == {"BarPlot", "LinePlot"}
    # saving needs a W&B server: an offline study is refused in one line (never tried against a server)
    with pytest.raises(UsageError, match="--wandb-report: a W&B Report is saved on a W&B server"):
        save_wandb_report("demo-1234abcd", TrackingSpec(wandb="offline"), [], [table])


def test_study_mode_keeps_one_run_with_every_trials_result(base_spec, tmp_path):
    import yaml

    from tests.conftest import cli

    base_spec["grid"]["seed"] = [0, 1, 2]
    base_spec["budget"]["steps"] = 6
    base_spec["tracking"] = {"wandb": "offline", "project": "elrbench-test", "runs": "study"}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(base_spec))
    r = cli("submit", str(path), "--executor", "inline")
    assert r.returncode == 0, r.stderr[-2000:]
    (folder,) = (tmp_path / "runs").iterdir()
    (run,) = read_offline_runs(folder)  # no run per trial: the study's summary run only
    assert run["job_type"] == "report"
    (logged,) = run["history"]
    assert logged["trials"]["_type"] == "table-file" and logged["trials"]["nrows"] == 3


def test_two_folders_of_one_spec_never_share_a_run_id(base_spec, tmp_path):
    """A study run twice (or its offline runs synced into a project holding its online runs) must not
    merge W&B runs: each folder's ids carry its own mark; a folder without one (older) keeps bare ids."""
    ids = []
    for out in ("a", "b"):
        base_spec["output_dir"] = str(tmp_path / out)
        store = StudyStore.create(validate_spec(base_spec))
        ids.append(store.run_id("x-d3"))
    assert ids[0] != ids[1] and all(i.startswith("x-d3-") and len(i) == len("x-d3-") + 8 for i in ids)
    meta = json.loads((store.root / "study.json").read_text())
    del meta["instance"]
    (store.root / "study.json").write_text(json.dumps(meta))
    assert StudyStore.open(store.root).run_id("x-d3") == "x-d3"


def test_a_large_studys_trials_reach_wandb_whole_in_parts(tmp_path, monkeypatch):
    """wandb keeps the first wandb.Table.MAX_ROWS rows of a table logged to a run and drops the rest:
    the summary run's trials go in parts, and every row arrives (MAX_ROWS lowered to keep it small)."""
    import wandb

    from elrbench.spec import TrackingSpec
    from elrbench.tracking import log_report
    from tests.conftest import result_row

    monkeypatch.setattr(wandb.Table, "MAX_ROWS", 40)
    rows = [result_row(2 + i % 5, "none", i, "trained", 0.9).model_copy(update={"index": i}) for i in range(100)]
    log_report("big-1234abcd", TrackingSpec(wandb="offline", project="elrbench-test"), tmp_path, [], [], rows)
    for _ in range(300):  # wandb's service may still be writing the run file when finish() returns (seen 2 in 30)
        runs = read_offline_runs(tmp_path, damaged={})  # (a file still being written reads as damaged)
        if runs and runs[0]["history"]:
            break
        time.sleep(0.1)
    (run,) = runs
    (logged,) = run["history"]
    parts = sorted(k for k in logged if k.startswith("trials"))
    assert parts == ["trials/part-000", "trials/part-001", "trials/part-002"]
    assert [logged[k]["nrows"] for k in parts] == [40, 40, 20]
    tables = [json.loads(p.read_text()) for p in tmp_path.glob("wandb/offline-run-*/files/media/table/trials/*.json")]
    written = [row[t["columns"].index("index")] for t in tables for row in t["data"]]
    assert sorted(written) == list(range(100))  # every row, once
