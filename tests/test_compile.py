"""Compiled training steps (resources.compile): identity, the auto rule, the same function as eager,
records, a rerun that reuses them, many trials in one process, DDP, and the shared inductor cache.
Every compiled trial here is a small plain_cnn on digits, so each compile takes seconds."""
from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from elrbench import train
from elrbench.compiling import COMPILE_MIN_STEPS, compile_mode
from elrbench.errors import SpecError
from elrbench.spec import validate_spec
from elrbench.train import run_trial
from tests.conftest import ROOT


def _spec(base: dict, compile: str | None, **extra):
    d = copy.deepcopy(base)
    if compile is not None:
        d["resources"] = {"compile": compile}
    for k, v in extra.items():
        d[k] = {**d.get(k, {}), **v}
    return validate_spec(d)


def test_the_setting_is_part_of_the_identity_and_off_keeps_old_ids(base_spec):
    unset, off, on, auto = (_spec(base_spec, c) for c in (None, "off", "on", "auto"))
    assert unset.study_id == off.study_id and unset.expand()[0].trial_id == off.expand()[0].trial_id
    ids = {s.expand()[0].trial_id for s in (off, on, auto)}
    assert len(ids) == 3
    assert len({s.study_id for s in (off, on, auto)}) == 3


def test_auto_compiles_long_trials_only():
    assert compile_mode("auto", COMPILE_MIN_STEPS - 1) == "off"
    assert compile_mode("auto", COMPILE_MIN_STEPS) == "on"
    assert compile_mode("on", 1) == "on" and compile_mode("off", 10**6) == "off"
    assert compile_mode("cudagraphs", 5) == "cudagraphs"


def test_cudagraphs_needs_a_gpu(base_spec):
    with pytest.raises(SpecError, match="resources.compile.*cudagraphs needs a GPU"):
        _spec(base_spec, "cudagraphs")
    _spec(base_spec, "cudagraphs", resources={"gpus_per_worker": 0.5})  # valid on a GPU machine


def test_a_compiled_step_computes_what_the_eager_one_does(base_spec):
    """The same first steps (forward, backward, warm-up, optimizer) up to rounding: compare the
    weights after 3 steps; and the compiled trial records how it ran."""
    weights = {}
    for c in ("off", "on"):
        t = _spec(base_spec, c, budget={"steps": 3, "log_every": 1}).expand()[0]
        run = train.setup(t)
        assert run.channels_last == (c == "on")
        state = train.TrainState(run)
        for step in range(3):
            x, y = run.batch(step)
            loss = torch.nn.functional.cross_entropy(run.forward(x), y)
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
            run.opt.step()
            state.step += 1
        weights[c] = torch.cat([q.detach().flatten() for q in run.params])
    assert not torch.equal(weights["off"], torch.zeros_like(weights["off"]))
    torch.testing.assert_close(weights["on"], weights["off"], rtol=1e-4, atol=1e-5)

    r = run_trial(_spec(base_spec, "on").expand()[0])
    assert r.compile == "on" and r.compile_s > 0 and r.outcome in ("trained", "untrained")
    eager = run_trial(_spec(base_spec, "off").expand()[0])
    assert eager.compile is None and "compile" not in eager.record()  # eager results read as before


def test_many_trials_in_one_process_all_compile(base_spec):
    """A Ray chunk runs many trials in one process; without a reset dynamo would reach its recompile
    limit (lowered to 1 here, with dynamo's own patch: pytest's monkeypatch deletes a config entry
    when it undoes) and run the later networks eager."""
    import torch._dynamo

    s = _spec(base_spec, "on", grid={"depth": [3, 4]}, budget={"steps": 4})
    graphs, limit = [], torch._dynamo.config.recompile_limit
    with torch._dynamo.config.patch(recompile_limit=1):
        for t in s.expand():
            before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
            run_trial(t)
            graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"] - before)
    assert graphs == [1, 1]  # each network compiled into its own graph
    assert torch._dynamo.config.recompile_limit == limit  # restored for the tests after this one


def test_a_rerun_reuses_compiled_trials_and_the_log_says_so(tmp_path, base_spec):
    d = copy.deepcopy(base_spec)
    d["resources"] = {"compile": "on"}
    d["budget"]["steps"] = 6
    (tmp_path / "s.yaml").write_text(json.dumps(d))
    run = lambda: subprocess.run([sys.executable, "-m", "cli.app", "submit", str(tmp_path / "s.yaml"),
                                  "--executor", "inline", "--no-report"], cwd=ROOT, capture_output=True, text=True)
    first = run()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "compiled in" in first.stdout and "1 trials ran compiled steps (resources.compile: on)" in first.stdout
    second = run()
    assert second.returncode == 0 and "(1 already finished)" in second.stdout
    assert "ran compiled steps" in second.stdout  # the finished trial's record says how it ran


def _ddp_worker(rank: int, port: int, spec: dict, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    r = run_trial(validate_spec(spec).expand()[0])
    with open(f"{out}.{rank}", "w") as f:
        f.write(r.model_dump_json())
    dist.destroy_process_group()


def test_ddp_trials_compile(base_spec, tmp_path):
    """Two gloo ranks on 127.0.0.1 (torch.distributed directly; tests/test_study.py runs DDP through Ray
    Train): both compile, and their weights and averaged gradients agree while their losses differ."""
    import torch.multiprocessing as mp

    d = copy.deepcopy(base_spec)
    d["resources"] = {"compile": "on", "workers_per_trial": 2}
    d["budget"]["steps"] = 6
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(port, d, str(tmp_path / "r")), nprocs=2, start_method="spawn")
    from elrbench.result import TrialResult

    r0, r1 = (TrialResult.model_validate_json((tmp_path / f"r.{i}").read_text()) for i in range(2))
    assert r0.compile == r1.compile == "on" and r0.workers == 2
    a, b = r0.ranks
    assert a["param_sum"] == b["param_sum"] and a["grad_sum"] == b["grad_sum"]
    assert a["last_loss"] != b["last_loss"]


CACHE_PROBE = """
import sys, torch._dynamo.utils as u
from elrbench.spec import validate_spec
from elrbench.train import run_trial
run_trial(validate_spec(__import__("json").loads(sys.argv[1])).expand()[0])
print("hits", u.counters["inductor"]["fxgraph_cache_hit"])
"""


def test_the_inductor_cache_is_shared_by_the_processes_of_a_machine(base_spec, tmp_path):
    d = copy.deepcopy(base_spec)
    d["resources"] = {"compile": "on"}
    d["budget"]["steps"] = 3
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    hits = []
    for _ in range(2):  # two processes, as two Ray workers of one machine
        p = subprocess.run([sys.executable, "-c", CACHE_PROBE, json.dumps(d)], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        hits.append(int(p.stdout.split("hits")[-1]))
    assert any((tmp_path / "cache").rglob("*"))
    assert hits[0] == 0 and hits[1] > 0  # the second process compiled nothing anew


def test_yaml_on_and_off_read_as_the_settings(tmp_path, base_spec):
    from elrbench.spec import load_spec

    d = copy.deepcopy(base_spec)
    d.pop("resources", None)
    f = tmp_path / "s.yaml"
    for text, want in (("on", "on"), ("off", "off"), ("auto", "auto"), ('"on"', "on")):
        f.write_text(json.dumps(d)[:-1] + f', "resources": {{"compile": {text}}}}}')  # JSON is YAML
        assert load_spec(f).resources.compile == want
        assert load_spec(f, [f"resources.compile={text}"]).resources.compile == want


def test_show_says_which_trials_auto_compiles(tmp_path, base_spec):
    d = copy.deepcopy(base_spec)
    d["grid"]["depth"] = [3, 4]
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(d))
    show = lambda *o: subprocess.run([sys.executable, "-m", "cli.app", "show", str(f), "--grid", *o], cwd=ROOT,  # noqa: E731
                                     capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"})
    assert "resources.compile" not in show().stdout  # off: nothing to say
    r = show("resources.compile=auto")
    assert r.returncode == 0 and f"auto compiles trials of at least {COMPILE_MIN_STEPS} steps" in r.stdout
    assert "0 of 2 trials compile, 2 run eager" in r.stdout
    r = show("resources.compile=auto", f"budget.steps={COMPILE_MIN_STEPS}")
    assert "2 of 2 trials compile, 0 run eager" in r.stdout
