"""The local results store: one folder per study, one sub-folder per trial.

    <study>/study.json         id, spec hash, elrbench version, trial count, the driver's machine
    <study>/spec.yaml          the resolved spec
    <study>/trials.csv         the trial table (rebuilt from the result files; for humans and tools)
    <study>/trials/<id>/result.json    one row: grid point, outcome, final metrics, timings, host
    <study>/trials/<id>/history.jsonl  per-step rows (log and eval periods)
    <study>/trials/<id>/layers.jsonl   layer names, then per-layer rows at each log period
    <study>/trials/<id>/checkpoints/   last few checkpoints while the trial runs
    <study>/trials/<id>/worker-<rank>.json  host and pid of the process that last ran each rank

Every file is written whole to a temporary name and renamed into place, so a crash never leaves a
torn file, and a trial's row is keyed by its id, so rerunning a finished trial cannot duplicate it.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from elrbench import __version__
from elrbench.errors import StoreError
from elrbench.machine import machine
from elrbench.result import TrialResult


@functools.cache
def _file_mode() -> int:
    """What open() would give a new file: mkstemp's 0600 would hide results from the group. Reading
    the umask means setting it; done once, at the first write, and set straight back."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StudyStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------ opening
    @classmethod
    def create(cls, spec) -> StudyStore:
        """Open the study folder of a spec, making it on first use (never overwriting another spec's)."""
        from elrbench.spec import dump_spec

        store = cls(spec.study_dir)
        meta_path = store.root / "study.json"
        if meta_path.exists():
            meta = store.meta()
            if meta.get("spec_hash") != spec.spec_hash():
                raise StoreError(f"{store.root} holds another spec (hash {meta.get('spec_hash')}); "
                                 "choose another name or output_dir")
            return store
        atomic_write(store.root / "spec.yaml", dump_spec(spec))
        atomic_write(meta_path, json.dumps({
            "study_id": spec.study_id, "name": spec.name, "spec_hash": spec.spec_hash(),
            "n_trials": len(spec.expand()), "elrbench_version": __version__, "machine": machine(),
        }, indent=2))
        return store

    @classmethod
    def open(cls, root: str | Path) -> StudyStore:
        store = cls(Path(root))
        if not (store.root / "study.json").is_file():
            raise StoreError(f"{store.root} is not a study folder (no study.json); "
                             "give the folder that `elrbench submit` printed")
        return store

    def meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "study.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise StoreError(f"{self.root / 'study.json'} is unreadable: {e}") from None

    def spec(self):
        from elrbench.spec import load_spec

        return load_spec(self.root / "spec.yaml")

    def baseline(self) -> str:
        """The spec's report.baseline, read without validating the whole spec (whose data folders
        may not exist where the report is made)."""
        import yaml

        try:
            raw = yaml.safe_load((self.root / "spec.yaml").read_text()) or {}
            return str((raw.get("report") or {}).get("baseline", "none"))
        except (OSError, yaml.YAMLError, AttributeError):
            return "none"

    # ------------------------------------------------------------ trials
    def trial_dir(self, trial_id: str) -> Path:
        return self.root / "trials" / trial_id

    def write_worker(self, trial_id: str, rank: int, **where: Any) -> None:
        """Record which process runs a trial's rank now (for `elrbench status` and for operators)."""
        atomic_write(self.trial_dir(trial_id) / f"worker-{rank}.json", json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), **where}))

    def workers(self, trial_id: str) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.trial_dir(trial_id).glob("worker-*.json"))]

    def write_result(self, result: TrialResult) -> None:
        atomic_write(self.trial_dir(result.trial_id) / "result.json", result.to_json())
        self.write_table()

    def result(self, trial_id: str) -> TrialResult | None:
        return _read_result(self.trial_dir(trial_id) / "result.json")

    def finished(self, trial_id: str) -> bool:
        r = self.result(trial_id)
        return r is not None and r.finished

    def results(self) -> list[TrialResult]:
        found = (_read_result(p) for p in sorted((self.root / "trials").glob("*/result.json")))
        return sorted((r for r in found if r is not None), key=lambda r: r.index)

    def write_table(self) -> None:
        """trials.csv: one row per trial with a result, its columns the fields of TrialResult."""
        results = self.results()
        if not results:
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=TrialResult.columns(results))
        w.writeheader()
        w.writerows(r.record() for r in results)
        atomic_write(self.root / "trials.csv", buf.getvalue())

    # ------------------------------------------------------------ history
    def write_history(self, trial_id: str, rows: Iterable[dict[str, Any]]) -> None:
        atomic_write(self.trial_dir(trial_id) / "history.jsonl",
                     "".join(json.dumps(r) + "\n" for r in rows))

    def write_layers(self, trial_id: str, names: list[str], rows: Iterable[dict[str, Any]]) -> None:
        """Per-layer rows (||W||, ||g||, ELR, lr, actual update ratio) at each log step."""
        atomic_write(self.trial_dir(trial_id) / "layers.jsonl",
                     json.dumps({"names": names}) + "\n" + "".join(json.dumps(r) + "\n" for r in rows))

    def layers(self, trial_id: str) -> tuple[list[str], list[dict[str, Any]]]:
        rows = _read_jsonl(self.trial_dir(trial_id) / "layers.jsonl")
        return (rows[0]["names"], rows[1:]) if rows else ([], [])

    def history(self, trial_id: str) -> list[dict[str, Any]]:
        return _read_jsonl(self.trial_dir(trial_id) / "history.jsonl")


def _read_result(path: Path) -> TrialResult | None:
    try:
        return TrialResult.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        raise StoreError(f"{path}: not a readable trial result ({type(e).__name__}: {str(e).splitlines()[0]}); "
                         "move it away and rerun the trial") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
