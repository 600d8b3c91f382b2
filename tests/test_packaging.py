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
