"""The shape of the code: an import graph without circles (every import counted, the lazy ones in
functions and the type-only ones too), so that each module depends on the ones below it."""
from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for top, prefix in (("elrbench", "elrbench"), ("cli", "elrbench.cli"), ("workloads", "elrbench.workloads")):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT / top).with_suffix("").parts
            name = ".".join((prefix, *rel)).removesuffix(".__init__")
            deps = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("elrbench"):
                    deps.add(node.module)
                elif isinstance(node, ast.ImportFrom) and node.level == 1:  # cli's `from .common import ...`
                    deps.add(f"{name.rsplit('.', 1)[0]}.{node.module}")
                elif isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names if a.name.startswith("elrbench")}
            graph[name] = deps
    return graph


def test_the_import_graph_has_no_circle():
    graph = _graph()
    assert {"elrbench.spec", "elrbench.executors", "elrbench.executors.ray", "elrbench.cli.submit"} <= set(graph)
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        for v in sorted(graph[u] & set(graph)):
            if state.get(v) == 1:
                circles.append([*path[path.index(v):], v])
            elif v not in state:
                visit(v, [*path, v])
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


GOLDEN = {"name": "golden", "workloads": [{"model": "bn_mlp", "dataset": "digits", "width": 16, "threshold": 0.5}],
          "grid": {"depth": [3], "lr": [0.1]},
          "budget": {"steps": 12, "batch_size": 32, "log_every": 4, "eval_every": 12},
          "tracking": {"wandb": "disabled"}}


@pytest.mark.parametrize("grid, expected", [
    # (final train loss, final test loss, final test accuracy, mean ELR spread), measured 2026-12-03 on the
    # 2-core Xeon (AVX512), torch 2.13 CPU. A change of the training math (data order, init, optimizer,
    # warm-up, the ELR's definition) moves these by far more than the tolerance; other CPUs' kernels
    # sum in other orders, which moves the last bits only.
    ({"warmup": ["none"], "optimizer": ["sgd"]}, (2.1329588890075684, 2.128356763579387, 0.23676880222841226,
                                                  0.3404601613680522)),
    ({"warmup": [{"name": "linear", "steps": 6}], "optimizer": ["sgdm"]},
     (1.8031190633773804, 1.6486209454974756, 0.4735376044568245, 0.3142467737197876)),
])
def test_golden_numbers_of_a_fixed_tiny_trial(tmp_path, grid, expected):
    from elrbench.spec import validate_spec
    from elrbench.train import run_trial

    spec = {**GOLDEN, "output_dir": str(tmp_path), "grid": {**GOLDEN["grid"], **grid}}
    (t,) = validate_spec(spec).expand()
    r = run_trial(t)
    got = (r.final_train_loss, r.final_test_loss, r.final_test_acc, r.spread_mean)
    assert got == pytest.approx(expected, rel=1e-4), got


def test_the_definitions_doc_matches_the_registries():
    """docs/definitions.md restates each warm-up's options and defaults, the optimizers and the
    schedules: every registered name and option is there, and every default it states is the code's."""
    import re

    from elrbench.optimizers import OPTIMIZERS
    from elrbench.schedules import SCHEDULES
    from elrbench.spec import ScheduleSpec
    from elrbench.warmup import WARMUPS

    doc = (ROOT / "docs" / "definitions.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", doc, re.M)}
    assert set(WARMUPS.names()) <= set(rows), set(WARMUPS.names()) - set(rows)
    for name in WARMUPS.names():
        defaults = WARMUPS.get(name).meta["options"]().model_dump()
        options_cell = rows[name].split(" | ")[2]
        for option, value in defaults.items():
            assert f"`{option}`" in options_cell, (name, option)
            stated = re.search(rf"`{option}`[^(`]*\(([^)]*)\)", options_cell)
            if value is not None and stated:  # e.g. "`steps` k (100)", "`momentum_correction` (false)"
                text = stated.group(1).split(":")[0].strip()  # "(0: off)" states 0
                assert text == str(value).lower() or float(text) == value, (name, option, text)
    for name in OPTIMIZERS.names():
        assert f"`{name}`" in doc, name
    assert f"momentum, default {OPTIMIZERS.get('sgdm').fn.default_momentum:g}" in doc
    for name in SCHEDULES.names():
        assert f"`{name}`" in doc, name
    s = ScheduleSpec(name="step")
    assert s.milestones == (0.5, 0.75) and s.gamma == 0.1 and "0.5 and 0.75, γ = 0.1" in doc


def test_the_grid_axes_are_named_once(base_spec):
    """StudySpec.axes() is the grid's order and names; the result's grid point, a trial's point and
    the trial index agree with it."""
    from elrbench.result import POINT
    from elrbench.spec import validate_spec

    base_spec["grid"].update(depth=[2, 3], lr=[0.1, 0.2], seed=[0, 1, 2])
    s = validate_spec(base_spec)
    assert tuple(s.axes()) == POINT
    trials = s.expand()
    assert len(trials) == s.n_trials == 12 and tuple(trials[0].point()) == POINT
    for t in trials:
        pos = [list(map(str, axis)).index(str(getattr(t, name))) for name, axis in s.axes().items()]
        assert s.index(*pos) == t.index
