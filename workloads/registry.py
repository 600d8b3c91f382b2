"""Registries keyed by name (one per extensible concept) and the errors workloads raise.

workloads/ imports nothing of elrbench; elrbench treats these errors as user mistakes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class WorkloadError(Exception):
    """A user-facing problem with a workload (unknown name, bad data folder, bad option)."""


class UnknownNameError(WorkloadError, LookupError, ValueError):
    pass


class DataError(WorkloadError):
    pass


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    fn: T
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = Entry(name, fn, meta)
            return fn

        return deco

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}' (known: {', '.join(self.names())})"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
