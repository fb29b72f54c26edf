"""A tiny name -> factory registry, one per plug-in folder (tasks, tools, methods, models).

Modelled on lm-evaluation-harness's ``lm_eval/api/registry.py``: a plug-in module registers
itself with a decorator, and importing the folder imports every module in it, so adding a
plug-in is adding one file.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Dict, Generic, Iterable, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """An unknown plug-in name; the message lists close matches and every valid name."""


def did_you_mean(kind: str, name: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Valid: {', '.join(valid)}"


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self.package = package  # imported lazily so that registration happens on first lookup
        self._entries: Dict[str, T] = {}
        self._aliases: Dict[str, str] = {}
        self._loaded = package is None

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            for alias in aliases:
                self._aliases[alias] = name
            return obj

        return decorator

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def canonical(self, name: str) -> str:
        self._load()
        name = self._aliases.get(name, name)
        if name not in self._entries:
            raise UnknownNameError(did_you_mean(self.kind, name, self.names()))
        return name

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries or name in self._aliases
