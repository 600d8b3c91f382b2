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
What a trial leaves is synced to disk once it ends: its history.jsonl and layers.jsonl (their data),
then its result.json and the trial's folder (one folder sync makes all three renames durable, and
the result, which marks the trial done, is never durable before its logs). worker-<rank>.json, a
note for operators of which process runs a trial now, is renamed into place but not synced.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import functools
import io
import json
import os
import re
import secrets
import socket
import stat
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Optional

from elrbench import __version__
from elrbench.defaults import NO_WARMUP
from elrbench.errors import StoreError
from elrbench.machine import machine
from elrbench.result import Brief, TrialResult


@functools.cache
def _file_mode() -> int:
    """What open() would give a new file: mkstemp's 0600 would hide results from the group. Reading
    the umask means setting it; done once, at the first write, and set straight back."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, data: str | Callable[[BinaryIO], None], sync: str = "full") -> None:
    """Write a file whole or not at all: to a temporary file of its own beside it, synced, renamed into
    place, and the folder synced. data: text, or a function that writes to the binary file. sync:
    "full" as said; "file" syncs the file's data but not the folder (the caller syncs the folder
    later, after the file that must not be durable before this one); "none" syncs nothing (a crash of
    the process still never tears it; a crash of the machine may lose it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        raise StoreError(f"{printable(path)} is a folder where a file belongs; move it away and run the command again")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode("utf-8"))
            else:
                data(f)
            f.flush()
            if sync != "none":
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync == "full":
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in this folder durable (POSIX: the directory entry is data of the folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename is then as durable as they make it
        pass
    finally:
        os.close(fd)


# The most elrbench reads of one file: a study's own small files (study.json, spec.yaml, result.json,
# worker-*.json), and its per-step logs (history.jsonl, layers.jsonl: a 64k-step trial of 110 layers
# logged every 10 steps is about 60 MB). Past them a file is not one elrbench wrote.
SMALL_FILE, LOG_FILE = 16 << 20, 1 << 30
FILES = {".lock", "study.json", "spec.yaml", "trials.csv", "result.json", "history.jsonl", "layers.jsonl",
         "report.html"}  # what elrbench writes as a file in a study folder


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """A trial's checkpoints, checkpoints/step_<n>.pt, as (step, path) by step; a file of any other
    name there (a stray step_x.pt, a *.damaged one set aside) is not one."""
    found = [(int(m[1]), p) for p in folder.glob("step_*.pt") if (m := re.fullmatch(r"step_(\d+)\.pt", p.name))]
    return sorted(found)


def read_bytes(path: Path | str, limit: int = SMALL_FILE) -> bytes:
    """A file of the study, read only when it is a regular file (not a link, a FIFO or a device: a
    planted /dev/zero or FIFO must not hang or exhaust the reader) of at most `limit` bytes.
    FileNotFoundError when it is missing; ValueError saying what it is otherwise."""
    return read_file(path, limit)[0]


def read_file(path: Path | str, limit: int = SMALL_FILE) -> tuple[bytes, os.stat_result]:
    """read_bytes, and the file's stat (its modification time: what trials.csv is as new as)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError("a symbolic link, not a file (elrbench follows no link inside a study folder)") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file (a folder, FIFO or device)")
        if st.st_size > limit:
            raise ValueError(f"{st.st_size} bytes, more than the {limit} a file of this kind has")
        parts, left = [], min(st.st_size, limit) + 1  # (one read for a small file: no file object)
        while left > 0 and (chunk := os.read(fd, left)):
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)[:limit], st
    finally:
        os.close(fd)


def printable(text: object) -> str:
    """A name from disk made safe for a terminal: control characters (escape codes) as \\xNN."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class StudyStore:
    def __init__(self, root: Path) -> None:
        # absolute and resolved: Ray wants absolute storage paths, and every path built from data is
        # checked against it (a relative path, '~' or a symlink names the same folder)
        self.root = Path(root).expanduser().resolve()
        self.damaged: dict[str, str] = {}  # file (relative to the study folder) -> what is wrong with it
        self._last_dir: tuple[Optional[str], Path] = (None, self.root)  # trial_dir's last answer
        self.newest_result = 0  # the latest modification (ns) of the result files read so far

    # ------------------------------------------------------------ opening
    @classmethod
    def create(cls, spec) -> StudyStore:
        """Open the study folder of a spec, making it on first use (never overwriting another spec's)."""
        from elrbench.adaptive import describe
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
            "n_trials": spec.max_trials, **({"search": "adaptive", "search_rule": describe(spec)} if spec.adaptive
                                            else {}),
            "elrbench_version": __version__, "machine": machine(),
            # this folder's own mark, in its W&B run ids: two folders of one spec (a study run twice, or
            # offline runs synced into a project that holds the online ones) never merge runs
            "instance": secrets.token_hex(4),
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
        """study.json, checked: a JSON object with the fields every command reads, of their types."""
        path = self.root / "study.json"
        try:
            meta = json.loads(read_bytes(path).decode("utf-8"))
            if not isinstance(meta, dict):
                raise ValueError(f"a JSON {type(meta).__name__}, not an object")
            for key, kind in (("study_id", str), ("spec_hash", str), ("n_trials", int)):
                if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
                    raise ValueError(f"'{key}' is missing or not a {kind.__name__}")
            if not TRIAL_ID.fullmatch(meta["study_id"]) or meta["n_trials"] < 0:
                raise ValueError("'study_id' or 'n_trials' holds an impossible value")
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise StoreError(f"{printable(path)} is damaged ({_what(e)}); restore it from a copy, or submit the "
                             "spec again into a new folder") from None
        return meta

    def run_id(self, name: str) -> str:
        """The W&B run id of a trial (or of the study-summary run) in this folder: the name and the
        folder's instance mark. Folders made before the mark existed keep the bare name (their runs
        resume as before)."""
        if not hasattr(self, "_instance"):
            mark = self.meta().get("instance")
            self._instance = mark if isinstance(mark, str) and re.fullmatch(r"[0-9a-f]{8}", mark) else None
        return f"{name}-{self._instance}" if self._instance else name

    def spec(self):
        from elrbench.spec import load_spec

        return load_spec(self.root / "spec.yaml", machine=False)  # reading a study needs no data

    def baseline(self) -> str:
        """The spec's report.baseline, read without validating the whole spec (whose data folders
        may not exist where the report is made)."""
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where PyYAML has it
        try:
            text = read_bytes(self.root / "spec.yaml").decode("utf-8")
            # the study's own file, as elrbench wrote it (block style, a top-level key per line): its
            # report section alone (100,000 seeds: 1 s to read whole, not 5 ms); whole when not found
            section = re.search(r"^report:\n(?:[ #].*\n|\n)*", text + "\n", re.MULTILINE)
            raw = yaml.load(section.group(0) if section else text, Loader=loader) or {}
            return str((raw.get("report") or {}).get("baseline", NO_WARMUP))
        except (OSError, ValueError, yaml.YAMLError, AttributeError):
            return NO_WARMUP

    # ------------------------------------------------------------ one writer at a time
    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[Optional[dict[str, Any]]]:
        """Hold the study folder for one `submit`, `resume` or `train` at a time: a second one is refused
        (StoreError) with who holds it since when. The lock is the kernel's (flock on <study>/.lock), so
        a holder that died has released it; its record, left in the file, is handed back (to say that a
        dead run's lock was taken over)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.check_paths()
        try:  # O_NOFOLLOW: a planted link must not make the lock truncate a file elsewhere
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, _file_mode())
        except OSError as e:
            raise StoreError(f"{printable(self.root / '.lock')}: cannot open the study's lock ({e.strerror}); "
                             "remove it if it is a link or not a file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
            who = (f"`elrbench {holder.get('command', '?')}` (pid {holder.get('pid', '?')} on "
                   f"{holder.get('host', '?')}, since {since})" if holder else "another elrbench process")
            raise StoreError(f"{self.root} is in use by {who}; wait for it to end, or stop it and run "
                             "`elrbench resume` then") from None
        previous = _holder(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                                      "since": time.time()}).encode(), 0)
            yield previous or None
        finally:
            os.ftruncate(fd, 0)  # released cleanly: nothing left to take over
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def check_paths(self, trials: bool = True) -> None:
        """StoreError naming the first symbolic link where elrbench writes or deletes in the study folder
        (or a folder where one of its files belongs)
        (its own files, trials/ and each trial's folder and files, checkpoints/, report/, wandb/): a study
        received from someone else, or on a shared file system, may hold a link to a file outside,
        which a write would overwrite and a delete remove. (Links inside wandb/ are wandb's own.)
        trials=False leaves out what is inside trials/, for a command that writes nothing there (the
        report: the walk of a 100,000-trial study's folders takes 4 s)."""
        def refuse(p: Path) -> None:
            raise StoreError(f"{printable(p)} is a symbolic link; elrbench writes through no link in a study "
                             "folder: replace it with the folder or file itself (or remove it)")

        def folder(p: Path) -> None:
            raise StoreError(f"{printable(p)} is a folder where elrbench keeps a file; move it away and run the "
                             "command again")

        for name in (".lock", "study.json", "spec.yaml", "trials.csv", "trials", "report", "wandb"):
            if (self.root / name).is_symlink():
                refuse(self.root / name)
            if name in FILES and (self.root / name).is_dir():
                folder(self.root / name)
        for top in (self.root / "trials", self.root / "report")[0 if trials else 1:]:
            stack = [str(top)] if top.is_dir() else []
            while stack:  # scandir's entry types come with the listing: no stat per file (and no Path)
                with os.scandir(stack.pop()) as entries:
                    for e in entries:
                        if e.is_symlink():
                            refuse(Path(e.path))
                        if e.is_dir(follow_symlinks=False):
                            if e.name in FILES:
                                folder(Path(e.path))
                            stack.append(e.path)

    # ------------------------------------------------------------ trials
    def trial_names(self) -> list[str]:
        """The trial folders under trials/, by name; anything else there (a stray folder, a file of
        notes) is left alone and named in self.damaged."""
        names = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.root / "trials") as entries:
            for e in entries:
                if TRIAL_ID.fullmatch(e.name) and e.is_dir(follow_symlinks=False):
                    names.append(e.name)
                elif not e.name.startswith("."):
                    self.damaged[f"trials/{printable(e.name)}"] = "not a trial's folder; left alone"
        return sorted(names)

    def pending(self, spec) -> Sequence[int]:
        """The grid indices of the trials without a finished result, in grid order, held compactly: a
        range when no trial has a folder yet (planning a 1,000,000-trial study costs nothing), else
        an array of 8 bytes a trial (ids are worked out, trials never built)."""
        names = set(self.trial_names())
        if not names:
            return range(spec.n_trials)
        left = array("q")
        for i in range(spec.n_trials):
            tid = spec.trial_id(i)
            if tid not in names or not self.finished(tid):
                left.append(i)
        return left

    def trial_dir(self, trial_id: str) -> Path:
        """A trial's folder: the id must be a safe name, and the folder must lie inside the study's."""
        if self._last_dir[0] == trial_id:  # a trial's own writes ask for its folder six times
            return self._last_dir[1]
        trials = self.root / "trials"
        path = trials / trial_id
        if not TRIAL_ID.fullmatch(trial_id) or path.resolve().parent != trials.resolve():
            raise StoreError(f"{trial_id!r} is not a trial id (letters, digits, '_', '.', '-'): it would name a "
                             f"path outside {trials}")
        self._last_dir = (trial_id, path)
        return path

    def _damaged(self, path: Path, problem: str) -> None:
        self.damaged[printable(path.relative_to(self.root) if path.is_relative_to(self.root) else path)] = problem

    def write_worker(self, trial_id: str, rank: int, **where: Any) -> None:
        """Record which process runs a trial's rank now (for `elrbench status` and for operators)."""
        atomic_write(self.trial_dir(trial_id) / f"worker-{rank}.json", json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), **where}), sync="none")

    def last_checkpoint(self, trial_id: str) -> Optional[int]:
        """The step of a trial's newest checkpoint, None when it has none."""
        steps = checkpoints(self.trial_dir(trial_id) / "checkpoints")
        return steps[-1][0] if steps else None

    def workers(self, trial_id: str) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.trial_dir(trial_id).glob("worker-*.json")):
            try:
                w = json.loads(read_bytes(p).decode("utf-8"))
                if not isinstance(w, dict):
                    raise ValueError("not a JSON object")
                out.append(w)
            except (OSError, ValueError) as e:
                self._damaged(p, _what(e))
        return out

    def write_result(self, result: TrialResult) -> None:
        """A trial's result.json, synced with its folder (which makes the logs written before it
        durable too: write_history, write_layers). trials.csv, which reads every result, is rebuilt by whoever runs the
        study (write_table), not after each trial: that would cost the square of the trial count."""
        atomic_write(self.trial_dir(result.trial_id) / "result.json", result.to_json())
        self.damaged.pop(str(Path("trials") / result.trial_id / "result.json"), None)

    def result(self, trial_id: str) -> TrialResult | None:
        """A trial's result; None when it has none yet, or a damaged one (named in self.damaged), which
        a resume then reruns."""
        return self._read_result(self.trial_dir(trial_id).parent, trial_id)

    def finished(self, trial_id: str) -> bool:
        r = self.result(trial_id)
        return r is not None and r.finished

    def results(self) -> list[TrialResult]:
        """Every readable result in grid order; damaged ones are left out and named in self.damaged."""
        trials = self.root / "trials"
        found = (self._read_result(trials, name) for name in self.trial_names())
        return sorted((r for r in found if r is not None), key=lambda r: r.index)

    def _read_result(self, trials: Path, name: str) -> TrialResult | None:
        """trials/<name>/result.json (the path as a string: 100,000 Paths cost 2 s)."""
        path = f"{trials}{os.sep}{name}{os.sep}result.json"
        try:
            raw, st = read_file(path)
            self.newest_result = max(self.newest_result, st.st_mtime_ns)
            r = TrialResult.model_validate_json(raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # pydantic's ValidationError is a ValueError
            self._damaged(Path(path), _what(e))
            return None
        if r.trial_id != name:
            self._damaged(Path(path), f"its trial_id {r.trial_id!r} is not the name of its folder")
            return None
        return r

    def refresh_table(self) -> None:
        """write_table while a study runs, at most every 10 s and with at most a tenth of the time
        spent on it: it reads every result, so after each trial it would cost the square of the
        trial count."""
        now = time.monotonic()
        if now < getattr(self, "_table_due", 0.0):
            return
        self.write_table()
        spent = time.monotonic() - now
        self._table_due = time.monotonic() + max(10.0, 10 * spent)

    def table_is_current(self, results: Sequence[TrialResult]) -> bool:
        """Whether trials.csv is the table of these results (just read: self.results()): newer than
        every result file read, with their columns and one row each. A finished study's report then
        leaves it as it is (rewriting a 100,000-trial table takes 2 s)."""
        try:
            raw, st = read_file(self.root / "trials.csv", LOG_FILE)
        except (OSError, ValueError):
            return False
        header = raw[: raw.find(b"\n") + 1].decode("utf-8", "replace").rstrip("\r\n")
        return (st.st_mtime_ns > self.newest_result and raw.count(b"\n") == len(results) + 1
                and header == ",".join(TrialResult.columns(results)))

    def write_table(self, results: Optional[Sequence[TrialResult]] = None, briefs: bool = False) -> list[Brief]:
        """trials.csv: one row per trial with a result, in grid order, its columns the fields of
        TrialResult that some trial set. From results already read (every result, in grid order:
        self.results()), or streamed from the folder: a first pass over the results finds the order
        and the columns (keeping 2 numbers a trial), the second writes each row as it reads it, so a
        100,000-trial study's table never sits in memory. briefs (streamed): also return each row's
        TrialResult.brief(), in grid order: what the end of a run prints, read on the way."""
        trials = self.root / "trials"
        kept: list[Brief] = []
        if results is not None:
            order, columns = None, TrialResult.columns(results)
        else:
            order, used = [], set()
            for name in self.trial_names():
                if (r := self._read_result(trials, name)) is not None:
                    order.append((r.index, name))
                    used |= r.model_fields_set
                    if briefs:
                        kept.append(r.brief())
            order.sort()
            kept.sort(key=lambda b: b.index)
            columns = TrialResult.columns(used=used)
        if not columns:
            return kept

        def rows() -> Iterator[TrialResult]:
            if order is None:
                yield from results or ()
                return
            for _, name in order:
                if (r := self._read_result(trials, name)) is not None:
                    yield r

        def write(f: BinaryIO) -> None:
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            w = csv.writer(text)
            w.writerow(columns)
            for r in rows():
                w.writerow(r.row(columns))
            text.flush()
            text.detach()

        atomic_write(self.root / "trials.csv", write)
        return kept

    # ------------------------------------------------------------ history
    def write_history(self, trial_id: str, rows: Iterable[dict[str, Any]]) -> None:
        atomic_write(self.trial_dir(trial_id) / "history.jsonl",
                     "".join(json.dumps(r) + "\n" for r in rows), sync="file")  # the folder: write_result

    def write_layers(self, trial_id: str, names: list[str], rows: Iterable[dict[str, Any]]) -> None:
        """Per-layer rows (||W||, ||g||, ELR, lr, actual update ratio) at each log step."""
        atomic_write(self.trial_dir(trial_id) / "layers.jsonl",
                     json.dumps({"names": names}) + "\n" + "".join(json.dumps(r) + "\n" for r in rows), sync="file")

    def layers(self, trial_id: str) -> tuple[list[str], list[dict[str, Any]]]:
        path = self.trial_dir(trial_id) / "layers.jsonl"
        rows = self._read_jsonl(path)
        if not rows:
            return [], []
        names = rows[0].get("names")
        if not isinstance(names, list) or any("elr" not in r or "step" not in r for r in rows[1:]):
            self._damaged(path, "not per-layer rows (a names line, then rows with step and elr)")
            return [], []
        return names, rows[1:]

    def history(self, trial_id: str) -> list[dict[str, Any]]:
        path = self.trial_dir(trial_id) / "history.jsonl"
        rows = self._read_jsonl(path)
        if any("step" not in r for r in rows):
            self._damaged(path, "a row without its step")
            return [r for r in rows if "step" in r]
        return rows

    def _read_jsonl(self, path: Path) -> list[dict[str, Any]]:
        """The rows of a JSON-lines file up to its first damaged line (a torn write, an edit)."""
        try:
            text = read_bytes(path, LOG_FILE).decode("utf-8")
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            self._damaged(path, _what(e))
            return []
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line:
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                self._damaged(path, f"line {i}: {_what(e)}; read up to line {i - 1}")
                break
            rows.append(row)
        return rows


def check_output_dir(spec) -> None:
    """SpecError unless the spec's output_dir is, or can be made, a writable folder (checked before
    anything starts; nothing is created here)."""
    folder = Path(spec.output_dir)
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        problem = f"{p} is a file, not a folder" + ("" if p == folder else f" (so {folder} cannot be made)")
    elif not os.access(p, os.W_OK | os.X_OK):
        problem = f"{p} is not writable" + ("" if p == folder else f" (so {folder} cannot be made)")
    else:
        return
    from elrbench.errors import SpecError

    raise SpecError([("output_dir", problem + "; give a folder you can write to")])


def _holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


TRIAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")  # what trial ids are made of (elrbench/spec.py)


def _what(e: Exception) -> str:
    """What is wrong with a file, in one line."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, json.JSONDecodeError):
        return f"not JSON ({e.msg} at line {e.lineno}, column {e.colno}; torn or edited?)"
    if hasattr(e, "errors"):  # pydantic's ValidationError
        err = e.errors()[0]
        if err["type"] == "json_invalid":
            why = (err.get("ctx") or {}).get("error", err["msg"])
            return f"not JSON ({why}; torn or edited?)"
        where = ".".join(str(p) for p in err["loc"]) or "the file"
        return f"not a trial result ({where}: {err['msg']}; {e.error_count()} problem(s))"
    return text
