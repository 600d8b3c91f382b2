"""Every claims study runs end to end in a smoke mode (a few steps): submit inline, then the report
with its figures; the critical-LR claim through `elrbench theory scan`. The full runs and their
numbers are in docs/results.md."""
from __future__ import annotations

import pytest
import yaml

from tests.conftest import ROOT
from tests.conftest import cli as run

CLAIMS = sorted((ROOT / "studies" / "claims").glob("*.yaml"))
SMOKE = ["budget.epochs=null", "budget.steps=4", "budget.log_every=1", "grid.seed=[0]", "tracking.wandb=disabled"]


def test_there_is_a_study_per_claim():
    assert [p.name[0] for p in CLAIMS] == list("abcde")


@pytest.mark.parametrize("path", [p for p in CLAIMS if not p.name.startswith("b_")], ids=lambda p: p.name)
def test_claim_study_smoke(path, tmp_path):
    depth = min(yaml.safe_load(path.read_text())["grid"]["depth"])
    r = run("submit", str(path), "--executor", "inline", f"output_dir={tmp_path}", f"grid.depth=[{depth}]", *SMOKE)
    assert r.returncode == 0, r.stderr[-3000:]
    (folder,) = tmp_path.iterdir()
    assert (folder / "report" / "report.html").is_file()
    assert list((folder / "report" / "figures").glob("spread-*.png"))
    assert list((folder / "report" / "tables").glob("elr-spread-*.csv"))


def test_claim_b_critical_lr_smoke():
    (path,) = [p for p in CLAIMS if p.name.startswith("b_")]
    r = run("theory", "scan", str(path), "--trial", "0", "--points", "7")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "eta_crit" in r.stdout
