"""Reading a spec file safely, and the size limits of a study.

A spec is user input, possibly hostile: before anything is allocated the file's size is checked, the
YAML's nesting (from its events, without recursion), its size once aliases are expanded (a 1 KB alias
bomb expands to gigabytes), recursive aliases and duplicate keys (the last one would silently win).
Every refusal is one SpecError line naming the file.

The limits hold for every study and each can be raised for a big cluster through the environment
(docs/reliability.md): ELRBENCH_MAX_SPEC_BYTES, ELRBENCH_MAX_SPEC_NODES, ELRBENCH_MAX_NESTING,
ELRBENCH_MAX_TRIALS, ELRBENCH_MAX_DEPTH, ELRBENCH_MAX_DATA_BYTES, ELRBENCH_MAX_STEPS.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from elrbench.errors import SpecError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Limits:
    spec_bytes: int = 1 << 20  # a spec file: 1 MiB (the paper's largest spec is 2 KB)
    spec_nodes: int = 100_000  # values in a spec once YAML aliases are expanded
    nesting: int = 32  # mappings and lists inside each other
    trials: int = 100_000  # trials in one study
    depth: int = 2_000  # layers of one network
    data_bytes: int = 8 << 30  # one dataset in memory (float32), e.g. synthetic n_train x shape
    steps: int = 100_000_000  # optimizer steps of one trial (the paper's longest run is 64k; 10^8 is months on a GPU)

    @classmethod
    def from_env(cls) -> Limits:
        values = {}
        for name in cls.__dataclass_fields__:
            key = f"ELRBENCH_MAX_{name.upper()}"
            if key in os.environ:
                raw = os.environ[key].strip()
                # ASCII digits only: int() also takes '٣' (Arabic-Indic three) and '1_000'; at most 18 digits,
                # so the limit is a number a machine can count to (and never Python's 4300-digit error)
                if not (raw.isascii() and raw.isdigit() and len(raw) <= 18 and int(raw) >= 1):
                    raise UsageError(f"{key}={os.environ[key]!r}: give a positive whole number in ASCII digits "
                                     "(at most 18 of them)")
                values[name] = int(raw)
                if values[name] > CEILINGS.get(name, values[name]):
                    raise UsageError(f"{key}={raw}: at most {CEILINGS[name]} ({CEILING_WHY[name]})")
        return cls(**values)


# Limits that raising cannot pass: past them the readers themselves fail or slow down. Nesting: PyYAML's
# composer recurses per level (past about 250 it meets Python's recursion limit; measured), and its
# scanner costs the square of the depth of flow brackets (a 20,000-deep '[[[' took 22 s to scan).
CEILINGS = {"nesting": 200}
CEILING_WHY = {"nesting": "deeper documents overflow the YAML reader's recursion"}


def limits() -> Limits:
    return Limits.from_env()


def _raise_limit(what: str, key: str) -> str:
    return f"{what}; raise it with {key}=N if you mean it"


# ---------------------------------------------------------------- YAML without surprises
# libyaml's parser when PyYAML has it (its wheels do): a spec of 100,000 values (one seed per trial)
# reads in 0.5 s instead of 4 (measured); the safe constructor, and the checks below, are the same.
_SAFE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_INT = "tag:yaml.org,2002:int"


class _FastInts:
    """A plain scalar of decimal digits without a leading zero is an int under YAML 1.1's rules (no
    float, timestamp or octal matches it): resolved here without its dozen regular expressions. A
    spec of 100,000 seeds (one per trial) reads in 0.45 s instead of 0.54 and is written in 0.24
    instead of 0.40 (measured, best of 5; the same values and the same text)."""

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and implicit[0] and value.isascii() and value.isdigit() \
                and (value[0] != "0" or value == "0"):
            return _INT
        return super().resolve(kind, value, implicit)


# libyaml's emitter where PyYAML has it: the same text as the Python one (checked on every spec under
# studies/ and a 100,000-seed grid), 0.36 s instead of 0.95 for the latter
class Dumper(_FastInts, getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """The safe dumper (elrbench.spec.dump_spec)."""


class _Loader(_FastInts, _SAFE):  # type: ignore[misc, valid-type]
    """The safe loader, refusing duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise SpecError([("", f"line {key_node.start_mark.line + 1}: the key '{key}' is given twice "
                                          "(YAML would keep the last one silently)")])
                seen.add(key)
        return super().construct_mapping(node, deep)


def _check_nesting(text: str, lim: Limits) -> None:
    """Nesting from the parser's events: iterative, so a 10^5-deep document costs no recursion
    (libyaml's parser stops at 1,000 levels by itself: the same refusal)."""
    depth = 0

    def refuse(line: int) -> SpecError:
        return SpecError([("", f"line {line}: nested more than {lim.nesting} levels deep; "
                               + _raise_limit("a study spec needs a handful", "ELRBENCH_MAX_NESTING"))])

    try:
        for ev in yaml.parse(text, Loader=_SAFE):
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > lim.nesting:
                    raise refuse(ev.start_mark.line + 1)
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as e:
        if "maximum nesting depth" not in str(e):
            raise
        mark = getattr(e, "problem_mark", None)
        raise refuse(mark.line + 1 if mark else 1) from None


def _expanded_size(node: yaml.Node, lim: Limits) -> int:
    """The number of values once every alias is expanded, counted without expanding (shared nodes
    are counted once per reference, from a memo); a recursive alias is refused."""
    memo: dict[int, int] = {}
    on_path: set[int] = set()

    def size(n: yaml.Node) -> int:
        if id(n) in on_path:
            raise SpecError([("", f"line {n.start_mark.line + 1}: a recursive alias (an anchor used inside itself)")])
        if id(n) in memo:
            return memo[id(n)]
        on_path.add(id(n))
        if isinstance(n, yaml.SequenceNode):  # (a scalar is one value, aliased or not)
            s = 1 + sum(1 if isinstance(c, yaml.ScalarNode) else size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            s = 1 + sum(size(k) + size(v) for k, v in n.value)
        else:
            s = 1
        on_path.discard(id(n))
        memo[id(n)] = s
        if s > lim.spec_nodes:
            raise SpecError([("", f"more than {lim.spec_nodes} values once its aliases are expanded (an alias "
                                  "bomb?); " + _raise_limit("a study spec has a few hundred",
                                                            "ELRBENCH_MAX_SPEC_NODES"))])
        return s

    return size(node)


def load_yaml(text: str, lim: Limits | None = None) -> Any:
    lim = lim or limits()
    _check_nesting(text, lim)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, lim)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_plain(data: Any, lim: Limits) -> None:
    """Nesting and size of JSON or TOML data (no aliases there), walked without recursion."""
    stack, count = [(data, 1)], 0
    while stack:
        v, depth = stack.pop()
        count += 1
        if depth > lim.nesting:
            raise SpecError([("", f"nested more than {lim.nesting} levels deep; "
                                  + _raise_limit("a study spec needs a handful", "ELRBENCH_MAX_NESTING"))])
        if count > lim.spec_nodes:
            raise SpecError([("", f"more than {lim.spec_nodes} values; "
                                  + _raise_limit("a study spec has a few hundred", "ELRBENCH_MAX_SPEC_NODES"))])
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        stack += [(c, depth + 1) for c in children if isinstance(c, (dict, list))]
        count += sum(1 for c in children if not isinstance(c, (dict, list)))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise SpecError([("", f"the key '{k}' is given twice (JSON would keep the last one silently)")])
        out[k] = v
    return out


# ---------------------------------------------------------------- reading
def _value_problem(e: ValueError) -> str:
    if "digits" in str(e):
        return "a number with thousands of digits (Python reads at most 4300); no field takes one"
    return f"a value that cannot be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def read_spec_file(path: Path) -> dict[str, Any]:
    """Parse a YAML (safe loader only), TOML or JSON file into a dict; SpecError on any problem."""
    path = Path(path).expanduser()
    src = str(path)
    lim = limits()
    if not path.is_file():
        raise SpecError([("", "spec file not found" if not path.exists() else "not a file (give a spec file)")], src)
    if path.stat().st_size > lim.spec_bytes:
        raise SpecError([("", f"{path.stat().st_size} bytes, more than {lim.spec_bytes} for a spec; "
                              + _raise_limit("a study spec is a few KB", "ELRBENCH_MAX_SPEC_BYTES"))], src)
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix in (".yaml", ".yml"):
            data = load_yaml(text, lim)
        elif suffix == ".toml":
            data = tomllib.loads(text)
            _check_plain(data, lim)
        elif suffix == ".json":
            data = json.loads(text, object_pairs_hook=_no_duplicates)
            _check_plain(data, lim)
        else:
            raise SpecError([("", f"unknown spec format '{suffix}' (use .yaml, .yml, .toml or .json)")], src)
    except SpecError as e:
        raise SpecError(e.problems, src) from None
    except UnicodeDecodeError:
        raise SpecError([("", "not a UTF-8 text file")], src) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise SpecError([("", f"YAML error: {where}{getattr(e, 'problem', None) or e}")], src) from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise SpecError([("", f"{suffix[1:].upper()} error: {e}")], src) from None
    except RecursionError:
        raise SpecError([("", f"nested too deeply (more than {lim.nesting} levels)")], src) from None
    except OSError as e:
        raise SpecError([("", f"cannot read it: {e.strerror or e}")], src) from None
    except ValueError as e:  # e.g. Python's limit on int digits (4300), met by a 5001-digit number
        raise SpecError([("", _value_problem(e))], src) from None
    if not isinstance(data, dict):
        raise SpecError([("", "the spec must be a mapping of fields (name, workloads, grid, budget, ...)")], src)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted key=value overrides (value parsed as YAML, with the same limits) to a copy of a raw
    spec. The copy goes through JSON (dates and other YAML types become strings), which is bounded:
    the spec's expanded size was checked when it was read."""
    data = json.loads(json.dumps(data, default=str))
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append((item, "an override is dotted.key=value"))
            continue
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except SpecError as e:
            problems += [(key, msg) for _, msg in e.problems]
            continue
        except ValueError as e:
            problems.append((key, _value_problem(e)))
            continue
        except yaml.YAMLError:
            value = raw
        node: Any = data
        parts = key.split(".")
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                if isinstance(node, list):
                    idx = int(part)
                    if idx < 0:
                        raise IndexError
                    if last:
                        node[idx] = value
                    else:
                        node = node[idx]
                elif isinstance(node, dict):
                    if last:
                        node[part] = value
                    else:
                        node = node.setdefault(part, {})
                else:
                    raise TypeError
        except (ValueError, IndexError, TypeError):
            problems.append((key, f"cannot set '{key}': no such place in the spec"))
    if problems:
        raise SpecError(problems, "override")
    return data
