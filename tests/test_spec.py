from __future__ import annotations

import copy
import json
import shutil

import pytest
import yaml

from elrbench.errors import SpecError
from elrbench.spec import apply_overrides, check_machine, dump_spec, load_spec, validate_spec
from tests.conftest import BASE, ROOT, write_cifar


def test_good_spec_loads_and_expands(base_spec):
    base_spec["grid"].update(depth=[3, 5], lr=[0.1, 0.01], warmup=["none", {"name": "linear", "steps": 5}], seed=[0, 1])
    s = validate_spec(base_spec)
    trials = s.expand()
    assert len(trials) == 2 * 2 * 2 * 2
    assert len({t.trial_id for t in trials}) == len(trials)
    assert [t.index for t in trials] == list(range(len(trials)))
    # defaults are resolved into the spec
    assert s.workloads[0].name == "plain_cnn-digits"
    assert s.workloads[0].data["test_fraction"] == 0.2
    assert s.grid.warmup[1].options == {"steps": 5, "start": 0.0}
    assert s.output_dir.is_absolute()


def test_ids_are_stable_and_depend_on_the_grid_point_only(base_spec, tmp_path):
    a = validate_spec(base_spec)
    b = validate_spec(json.loads(json.dumps(base_spec)))
    assert [t.trial_id for t in a.expand()] == [t.trial_id for t in b.expand()]
    assert a.study_id == b.study_id
    # where results go and how they are tracked does not change identities
    moved = dict(base_spec, output_dir=str(tmp_path / "elsewhere"), tracking={"wandb": "disabled"})
    assert [t.trial_id for t in validate_spec(moved).expand()] == [t.trial_id for t in a.expand()]
    # adding a depth keeps the existing trial's id; changing the budget changes it
    wider = copy.deepcopy(base_spec)
    wider["grid"]["depth"] = [3, 4]
    assert a.expand()[0].trial_id in {t.trial_id for t in validate_spec(wider).expand()}
    longer = copy.deepcopy(base_spec)
    longer["budget"]["steps"] = 21
    assert validate_spec(longer).expand()[0].trial_id != a.expand()[0].trial_id
    assert validate_spec(longer).study_id != a.study_id


def test_ids_known_value_is_pinned():
    # the id derives from content, not time or machine: pin one so an accidental change is seen
    s = validate_spec(copy.deepcopy(BASE) | {"output_dir": "/tmp/x"})
    assert s.expand()[0].trial_id.startswith("plain_cnn-digits-d3-none-lr0.1-s0-")
    assert len(s.expand()[0].trial_id.rsplit("-", 1)[1]) == 6


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_formats_load_the_same(base_spec, tmp_path, suffix):
    path = tmp_path / f"s{suffix}"
    if suffix == ".yaml":
        path.write_text(yaml.safe_dump(base_spec))
    elif suffix == ".json":
        path.write_text(json.dumps(base_spec))
    else:
        lines = ['name = "t"', f'output_dir = "{base_spec["output_dir"]}"',
                 "[[workloads]]", 'model = "plain_cnn"', 'dataset = "digits"', "threshold = 0.9",
                 "[grid]", "depth = [3]", "lr = [0.1]",
                 "[budget]", "steps = 20", "batch_size = 64", "log_every = 5"]
        path.write_text("\n".join(lines) + "\n")
    assert load_spec(path).spec_hash() == validate_spec(base_spec).spec_hash()


def test_overrides(base_spec, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(base_spec))
    s = load_spec(path, ["grid.depth=[4,6]", "budget.steps=7", "workloads.0.width=8", "name=other"])
    assert s.grid.depth == [4, 6] and s.budget.steps == 7 and s.workloads[0].width == 8 and s.name == "other"
    with pytest.raises(SpecError, match="workloads.3"):
        apply_overrides(base_spec, ["workloads.3.width=8"])
    with pytest.raises(SpecError, match="dotted.key=value"):
        apply_overrides(base_spec, ["grid.depth"])


def test_every_problem_is_reported_at_once(base_spec):
    base_spec["workloads"][0]["threshold"] = 2
    base_spec["grid"]["lr"] = [-1]
    base_spec["budget"]["bogus"] = 1
    with pytest.raises(SpecError) as e:
        validate_spec(base_spec)
    locs = {loc for loc, _ in e.value.problems}
    assert {"workloads.0.threshold", "grid.lr", "budget.bogus"} <= locs


def _mut(path: str, value, delete: bool = False):
    def f(d):
        node = d
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = int(keys[-1]) if isinstance(node, list) else keys[-1]
        if delete:
            del node[last]
        else:
            node[last] = value
    return f


# (case id, mutation of a good spec, dotted path that the message must name)
CATALOGUE = [
    ("name-missing", _mut("name", None, delete=True), "name"),
    ("name-bad-chars", _mut("name", "a b/c"), "name"),
    ("unknown-top-key", _mut("colour", "red"), "colour"),
    ("unknown-budget-key", _mut("budget.stepz", 3), "budget.stepz"),
    ("workloads-empty", _mut("workloads", []), "workloads"),
    ("unknown-model", _mut("workloads.0.model", "vgg"), "workloads.0.model"),
    ("unknown-dataset", _mut("workloads.0.dataset", "imagenet"), "workloads.0.dataset"),
    ("threshold-zero", _mut("workloads.0.threshold", 0), "workloads.0.threshold"),
    ("threshold-above-one", _mut("workloads.0.threshold", 1.5), "workloads.0.threshold"),
    ("threshold-string", _mut("workloads.0.threshold", "high"), "workloads.0.threshold"),
    ("width-zero", _mut("workloads.0.width", 0), "workloads.0.width"),
    ("unknown-norm", _mut("workloads.0.norm", "batch"), "workloads.0.norm"),
    ("unknown-init", _mut("workloads.0.init", "xavier"), "workloads.0.init"),
    ("bad-model-option", _mut("workloads.0.model_options", {"downsample": -1}), "workloads.0.model_options.downsample"),
    ("unknown-model-option", _mut("workloads.0.model_options", {"skip": "short"}), "workloads.0.model_options.skip"),
    ("unknown-data-option", _mut("workloads.0.data", {"dir": "/tmp"}), "workloads.0.data.dir"),
    ("test-fraction-one", _mut("workloads.0.data", {"test_fraction": 1.0}), "workloads.0.data.test_fraction"),
    ("depth-empty", _mut("grid.depth", []), "grid.depth"),
    ("depth-negative", _mut("grid.depth", [-3]), "grid.depth"),
    ("depth-string", _mut("grid.depth", ["deep"]), "grid.depth.0"),
    ("depth-duplicate", _mut("grid.depth", [3, 3]), "grid.depth"),
    ("lr-negative", _mut("grid.lr", [-0.1]), "grid.lr"),
    ("lr-zero", _mut("grid.lr", [0]), "grid.lr"),
    ("lr-empty", _mut("grid.lr", []), "grid.lr"),
    ("seed-negative", _mut("grid.seed", [-1]), "grid.seed"),
    ("unknown-optimizer", _mut("grid.optimizer", ["lamb"]), "grid.optimizer.0.name"),
    ("sgd-with-momentum", _mut("grid.optimizer", [{"name": "sgd", "momentum": 0.9}]), "grid.optimizer.0.momentum"),
    ("momentum-one", _mut("grid.optimizer", [{"name": "sgdm", "momentum": 1.0}]), "grid.optimizer.0.momentum"),
    ("negative-weight-decay", _mut("grid.optimizer", [{"name": "adamw", "weight_decay": -1}]),
     "grid.optimizer.0.weight_decay"),
    ("unknown-warmup", _mut("grid.warmup", ["magic"]), "grid.warmup.0.name"),
    ("warmup-bad-option", _mut("grid.warmup", [{"name": "linear", "steps": 0}]), "grid.warmup.0.options.steps"),
    ("warmup-unknown-option", _mut("grid.warmup", [{"name": "none", "steps": 3}]), "grid.warmup.0.options.steps"),
    ("unknown-schedule", _mut("grid.schedule", ["triangle"]), "grid.schedule.0.name"),
    ("schedule-milestone", _mut("grid.schedule", [{"name": "step", "milestones": [0.9, 0.5]}]),
     "grid.schedule.0.milestones"),
    ("budget-both", _mut("budget.epochs", 2), "budget"),
    ("budget-neither", _mut("budget.steps", None, delete=True), "budget"),
    ("budget-batch-one", _mut("budget.batch_size", 1), "budget.batch_size"),
    ("log-every-zero", _mut("budget.log_every", 0), "budget.log_every"),
    ("workers-zero", _mut("resources", {"workers_per_trial": 0}), "resources.workers_per_trial"),
    ("gpus-fraction-above-one", _mut("resources", {"gpus_per_worker": 1.5}), "resources.gpus_per_worker"),
    ("wandb-mode", _mut("tracking", {"wandb": "sometimes"}), "tracking.wandb"),
    ("schema-version", _mut("schema_version", 99), "schema_version"),
    ("resnet-depth", lambda d: (_mut("workloads.0.model", "resnet_v1")(d), _mut("grid.depth", [8, 10])(d)),
     "grid.depth"),
    ("duplicate-workload-names", lambda d: d["workloads"].append(dict(d["workloads"][0])), "workloads.1.name"),
    ("cifar-missing-dir", _mut("workloads.0", {"model": "plain_cnn", "dataset": "cifar10", "threshold": 0.5,
                                              "data": {"dir": "/nonexistent/cifar"}}), "workloads.0.data.dir"),
    ("critical-without-norm", lambda d: (_mut("workloads.0.norm", "none")(d), _mut("grid.warmup", ["critical"])(d)),
     "grid.warmup.0"),
    ("constrained-with-adamw",
     lambda d: (_mut("grid.optimizer", ["adamw"])(d), _mut("grid.warmup", ["constrained"])(d)), "grid.warmup.0"),
    ("untuned-adam-with-sgd", _mut("grid.warmup", ["untuned_adam"]), "grid.warmup.0"),
    ("critical-bad-source", _mut("grid.warmup", [{"name": "critical", "source": "weights"}]),
     "grid.warmup.0.options.source"),
    ("exponential-bad-tau", _mut("grid.warmup", [{"name": "exponential", "tau": -5}]), "grid.warmup.0.options.tau"),
    ("diagnostics-off-for-critical", lambda d: (_mut("diagnostics", {"enabled": False})(d),
                                                _mut("grid.warmup", ["critical"])(d)), "grid.warmup.0"),
    ("cifar-no-dir", _mut("workloads.0", {"model": "plain_cnn", "dataset": "cifar10", "threshold": 0.5}),
     "workloads.0.data.dir"),
]


@pytest.mark.parametrize("case,mutate,loc", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_malformed_spec_names_the_field(base_spec, case, mutate, loc):
    mutate(base_spec)
    with pytest.raises(SpecError) as e:  # the spec's own validation, or (data folders) the machine's check
        check_machine(validate_spec(base_spec))
    locs = [p[0] for p in e.value.problems]
    assert loc in locs, f"{case}: expected a problem at {loc}, got {e.value.problems}"
    assert all(msg for _, msg in e.value.problems)


def test_validation_is_pure_and_a_finished_study_reports_without_its_data_folder(base_spec, tmp_path):
    """A spec's validity does not depend on the machine: a study that read CIFAR from a folder is
    reported (and its status shown) where the folder is gone; starting trials there is refused."""
    from elrbench.executors import create_executor
    from elrbench.report import build, from_store
    from elrbench.store import StudyStore
    from tests.conftest import cli, write_cifar

    write_cifar(tmp_path / "cifar", "cifar10")
    base_spec["workloads"] = [{"model": "bn_mlp", "dataset": "cifar10", "width": 8, "threshold": 0.5,
                               "data": {"dir": str(tmp_path / "cifar")}}]
    base_spec["grid"]["depth"] = [2, 3]
    base_spec["budget"].update(steps=4, batch_size=16, log_every=2)
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    create_executor("inline").run(s, store)
    shutil.rmtree(tmp_path / "cifar")
    s2 = validate_spec(base_spec)  # still valid: the folder is the machine's business
    with pytest.raises(SpecError) as e:
        check_machine(s2)
    assert e.value.problems[0][0] == "workloads.0.data.dir"
    rep = build(from_store(StudyStore.open(store.root)), tmp_path / "report")
    assert (tmp_path / "report" / "report.html").is_file() and rep.tables
    r = cli("status", str(store.root))
    assert r.returncode == 0 and "2/2 trials have a result" in r.stdout, r.stderr
    r = cli("resume", str(store.root), "--executor", "inline")
    assert r.returncode == 2 and "workloads.0.data.dir" in r.stderr, r.stderr


def test_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 25


@pytest.mark.parametrize("text,needle", [
    ("name: [unclosed\n", "YAML error: line"),
    ("!!python/object/apply:os.system ['echo hacked']\n", "YAML error"),
    ("name: !!python/object/new:collections.OrderedDict [[]]\n", "YAML error"),
    ("- just\n- a list\n", "must be a mapping"),
    ("", "must be a mapping"),
])
def test_bad_yaml_files(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=needle) as e:
        load_spec(path)
    assert str(path) in str(e.value)


def test_missing_and_unknown_format_files(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    (tmp_path / "s.ini").write_text("x")
    with pytest.raises(SpecError, match="unknown spec format"):
        load_spec(tmp_path / "s.ini")


def test_cifar_folder_is_checked(base_spec, tmp_path):
    write_cifar(tmp_path / "c10")
    base_spec["workloads"] = [{"model": "resnet_v1", "dataset": "cifar10", "threshold": 0.5,
                               "data": {"dir": str(tmp_path / "c10")}}]
    base_spec["grid"]["depth"] = [8]
    s = validate_spec(base_spec)
    assert s.workloads[0].data["augment"] is True
    # a truncated file is refused by the machine's check (validate, submit), with the file named
    f = tmp_path / "c10" / "cifar-10-batches-bin" / "data_batch_3.bin"
    f.write_bytes(f.read_bytes()[:-5])
    with pytest.raises(SpecError, match="data_batch_3.bin.*whole number"):
        check_machine(validate_spec(base_spec))


STUDIES = sorted((ROOT / "studies").rglob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_every_shipped_study_validates(path, tmp_path):
    raw = yaml.safe_load(path.read_text())
    # specs for CIFAR name the user's data folder: point them at a small one in the official format
    cifar = [i for i, w in enumerate(raw["workloads"]) if w["dataset"] in ("cifar10", "cifar100")]
    names = {raw["workloads"][i]["dataset"] for i in cifar}
    folders = {name: write_cifar(tmp_path / name, name).parent for name in names}
    s = load_spec(path, [f"workloads.{i}.data.dir={folders[raw['workloads'][i]['dataset']]}" for i in cifar])
    assert s.expand()
    assert path.read_text().startswith("#"), "a study spec opens with a header comment"
    assert "elrbench " in path.read_text().split("\nname:")[0] and str(path.relative_to(ROOT)) in path.read_text(), \
        "the header gives the exact command"


def test_studies_exist():
    assert len(STUDIES) >= 2


@pytest.mark.parametrize("case,mutate,loc", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_malformed_spec_exits_2_through_the_cli(base_spec, tmp_path, case, mutate, loc):
    from typer.testing import CliRunner

    from elrbench.cli.app import app

    mutate(base_spec)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(base_spec))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, (case, result.output)
    assert f"{path}: {loc}:" in result.stderr, (case, result.stderr)
    assert "Traceback" not in result.output


@pytest.mark.parametrize("field, entry, value, words", [
    ("schedule", {"name": "cosine", "milestones": [0.3]}, None, "the cosine schedule has no milestones"),
    ("schedule", {"name": "constant", "gamma": 0.5}, None, "the constant schedule has no gamma"),
    ("schedule", {"name": "step", "final_fraction": 0.1}, None, "the step schedule has no final_fraction"),
    ("optimizer", {"name": "sgd", "betas": [0.8, 0.9]}, None, "sgd has no betas"),
    ("optimizer", {"name": "sgdm", "eps": 1e-6}, None, "sgdm has no eps"),
])
def test_an_option_its_entry_does_not_read_is_refused(base_spec, field, entry, value, words):
    base_spec["grid"][field] = [entry]
    with pytest.raises(SpecError) as e:
        validate_spec(base_spec)
    (problem,) = e.value.problems
    assert problem[0] == f"grid.{field}.0.{[k for k in entry if k != 'name'][0]}" and words in problem[1]


def test_a_dumped_spec_reads_back_with_every_default_written(base_spec, tmp_path):
    """dump_spec writes every field (milestones on a cosine schedule, betas on sgd, at their defaults):
    reading it back must not count them as foreign options."""
    from elrbench.spec import dump_spec

    base_spec["grid"].update(schedule=["constant", {"name": "cosine", "final_fraction": 0.1}, "step"],
                             optimizer=["sgd", "sgdm", {"name": "adamw", "betas": [0.9, 0.95]}])
    s = validate_spec(base_spec)
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_spec(s))
    again = load_spec(path)
    assert again.spec_hash() == s.spec_hash()
    assert [t.trial_id for t in again.expand()] == [t.trial_id for t in s.expand()]


def test_tracking_runs_auto_keeps_a_run_per_trial_for_small_studies_only(base_spec):
    from elrbench.spec import TRIAL_RUNS_MAX

    assert validate_spec(base_spec).tracking.runs == "trial"
    base_spec["grid"]["seed"] = list(range(TRIAL_RUNS_MAX + 1))
    s = validate_spec(base_spec)
    assert s.tracking.runs == "study" and s.trial(0).tracking.runs == "study"
    assert "runs: study" in dump_spec(s)  # the stored spec says what was done
    base_spec["tracking"] = {"runs": "trial"}
    assert validate_spec(base_spec).tracking.runs == "trial"  # asked for: kept


@pytest.mark.parametrize("text", ["0", "7", "123456", "00", "010", "0777", "1_000", "+5", "-3", "12:30", "1e3", "1.5",
                                  "2026-12-07", "0x1f", "0b101", "\uff11\uff12", "\u00b2", "١٢", "123abc", "'17'"])
def test_the_fast_int_reading_of_yaml_agrees_with_the_safe_loader(text):
    """Plain decimal integers skip YAML 1.1's resolver regexes (specfile._Loader); everything else,
    leading zeros (octal in YAML 1.1), signs, underscores, sexagesimals and non-ASCII digits
    included, reads as PyYAML's own safe loader reads it."""
    from elrbench.specfile import load_yaml

    doc = f"v: {text}\nseq: [{text}, {text}]\n"
    expected = yaml.load(doc, Loader=yaml.SafeLoader)
    got = load_yaml(doc)
    assert got == expected and [type(x) for x in got["seq"]] == [type(x) for x in expected["seq"]]


def test_grid_values_are_unique_by_type_and_value(base_spec):
    """Seeds and names are checked as they are; other values (warm-ups with options, optimizers) by
    their JSON text."""
    base_spec["grid"]["seed"] = [0, 1, 1]
    with pytest.raises(SpecError, match="holds a value twice"):
        validate_spec(base_spec)
    base_spec["grid"]["seed"] = list(range(1000))
    assert validate_spec(base_spec).n_trials % 1000 == 0
    base_spec["grid"]["warmup"] = [{"name": "linear", "steps": 3}, {"steps": 3, "name": "linear"}]
    with pytest.raises(SpecError, match="holds a value twice"):
        validate_spec(base_spec)
    base_spec["grid"]["warmup"] = [{"name": "linear", "steps": 3}, {"name": "linear", "steps": 4}, "none"]
    assert validate_spec(base_spec).n_trials % 3000 == 0


def test_the_fast_int_writing_of_yaml_gives_the_safe_dumpers_text(base_spec):
    from elrbench.specfile import Dumper

    data = validate_spec(base_spec).model_dump(mode="json") | {"ints": [0, 7, 10, 123456, -3, 2**70], "texts": [
        "0", "010", "123", "1_000", "12:30", "1e3", "yes", "\uff11"]}
    assert yaml.dump(data, sort_keys=False, Dumper=Dumper) == yaml.dump(data, sort_keys=False, Dumper=yaml.SafeDumper)
    assert yaml.load(yaml.dump(data, Dumper=Dumper), Loader=yaml.SafeLoader) == data
