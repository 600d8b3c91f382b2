from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.conftest import ROOT


def test_wheel_holds_only_elrbench(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("elrbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert all(t == "elrbench" or (t.startswith("elrbench-") and t.endswith(".dist-info")) for t in tops), tops
    for mod in ("elrbench/cli/app.py", "elrbench/workloads/models.py", "elrbench/spec.py"):
        assert mod in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "elrbench = elrbench.cli.app:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_library_does_not_import_the_cli_stack():
    # elrbench/ never imports typer or rich (architecture); workloads imports nothing of elrbench
    for path in (ROOT / "elrbench").glob("*.py"):
        text = path.read_text()
        assert "import typer" not in text and "from rich" not in text and "import rich" not in text, path
    for path in (ROOT / "workloads").glob("*.py"):
        text = path.read_text()
        assert "from elrbench" not in text and "import elrbench" not in text, path


def test_ruff_finds_nothing():
    # the lint rules are pyproject.toml's [tool.ruff]; ruff comes with the test extra
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(ROOT)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_importing_elrbench_changes_no_global_state():
    # environment, umask, matplotlib's backend, and no ray import: each is set when its thing starts
    probe = """
import importlib, json, os, pkgutil, sys
env = dict(os.environ)
mask = os.umask(0o022); os.umask(mask)
import matplotlib
backend = matplotlib.rcParams._get_backend_or_none()
import elrbench, elrbench.cli, elrbench.workloads
names = []
for pkg in (elrbench, elrbench.cli, elrbench.workloads):
    for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(m.name)
        names.append(m.name)
mask2 = os.umask(0o022); os.umask(mask2)
print(json.dumps({"env": dict(os.environ) == env, "umask": mask2 == mask, "ray": "ray" in sys.modules,
                  "backend": matplotlib.rcParams._get_backend_or_none() == backend,
                  "pyplot": "matplotlib.pyplot" in sys.modules, "modules": len(names)}))
"""
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["modules"] > 20
    assert out == {"env": True, "umask": True, "ray": False, "backend": True, "pyplot": False,
                   "modules": out["modules"]}


def test_nothing_points_outside_the_repository():
    # users have the repository only: definitions live in docs/, never in a team folder beside it
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    if not tracked:  # not a git checkout (an sdist): every file then
        tracked = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]
    bad = [f for f in tracked if f.endswith((".py", ".md", ".yaml", ".toml"))
           and "../" + "shared" in (ROOT / f).read_text(errors="ignore")]
    assert not bad, bad
