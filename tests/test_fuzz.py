"""Property-based fuzzing of spec input (hypothesis): valid specs mutated at random, with random
overrides, through `validate` and `show`. Whatever the input: exit 0 or 2, never a traceback (exit 1
or an exception), and no file written outside the temporary folder."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from elrbench.cli.app import app
from tests.conftest import BASE, ROOT

SPEC = copy.deepcopy(BASE) | {
    "workloads": [{"model": "plain_cnn", "dataset": "digits", "threshold": 0.9, "width": 8},
                  {"name": "mlp", "model": "bn_mlp", "dataset": "synthetic", "threshold": 0.5,
                   "data": {"n_train": 128, "n_test": 32, "shape": [1, 8, 8]}}],
    "grid": {"depth": [3, 4], "lr": [0.1], "warmup": ["none", {"name": "linear", "steps": 5}],
             "optimizer": ["sgd", {"name": "sgdm", "momentum": 0.5}], "seed": [0, 1]},
}

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24), st.sampled_from(["../../x", "[/x]", "[bold]", "~", "/", "&a", "*a", "..", "\x00", "{}"]),
)
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def _paths(node, prefix=()):
    """Every place in a spec: (path, value)."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


PLACES = [p for p, _ in _paths(SPEC) if p]


def _mutate(spec: dict, place: tuple, how: str, value) -> dict:
    spec = copy.deepcopy(spec)
    parent = spec
    for k in place[:-1]:
        parent = parent[k]
    key = place[-1]
    if how == "delete":
        parent.pop(key) if isinstance(parent, dict) else parent.pop(key)
    elif how == "extra" and isinstance(parent, dict):
        parent[f"{key}_extra"] = value
    else:
        parent[key] = value
    return spec


overrides = st.lists(st.one_of(
    st.builds(lambda p, v: ".".join(map(str, p)) + "=" + yaml.safe_dump(v, default_flow_style=True).strip(),
              st.sampled_from(PLACES), values),
    st.text(alphabet="abcdefgrid.=[]{}0123456789-_ ~/*&:,", max_size=30),
), max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(place=st.sampled_from(PLACES), how=st.sampled_from(["replace", "delete", "extra"]), value=values,
       extra=overrides)
def test_mutated_specs_exit_0_or_2_and_write_nothing(tmp_path_factory, place, how, value, extra):
    tmp = tmp_path_factory.mktemp("fuzz")
    spec = _mutate(SPEC, place, how, value) | {"output_dir": str(tmp / "runs")}
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    before_repo, before_home = set(os.listdir(ROOT)), set(os.listdir(Path.home()))
    runner = CliRunner()
    for cmd in ("validate", "show"):
        result = runner.invoke(app, [cmd, str(path), *extra])
        assert result.exit_code in (0, 2), (cmd, spec, extra, result.output, repr(result.exception))
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
        event(f"{cmd} exit {result.exit_code}")
    assert set(os.listdir(ROOT)) == before_repo and set(os.listdir(Path.home())) == before_home
    assert [p.name for p in tmp.iterdir()] == ["s.yaml"]  # validate and show write nothing
