"""One generic registry for methods, suites and device profiles.

Entries are registered by name with a lazy ``"module:attr"`` entry point, so listing the registry
never imports torch, MuJoCo or highway-env. Plug-ins are discovered from ``methods/*/plugin.py`` and
``suites/*/plugin.py``: a new plug-in is one folder, and no file elsewhere changes.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; the message names the closest valid choice (CLI exit code 2)."""

    def __init__(self, kind: str, name: str, choices: list[str]):
        self.kind, self.name, self.choices = kind, name, choices
        close = difflib.get_close_matches(name, choices, n=3, cutoff=0.4)
        if not close:  # fall back to prefix/substring matches, then to the nearest by ratio
            close = [c for c in choices if name.lower() in c.lower() or c.lower() in name.lower()][:3]
        if not close and choices:
            close = [max(choices, key=lambda c: difflib.SequenceMatcher(None, name, c).ratio())]
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        self.closest = close[0] if close else None
        super().__init__(f"unknown {kind} {name!r}{hint} (valid: {', '.join(sorted(choices))})")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


@dataclass
class Entry(Generic[T]):
    name: str
    entry_point: str | Callable[..., T]
    description: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Callable[..., T]:
        if callable(self.entry_point):
            return self.entry_point
        module, _, attr = self.entry_point.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
        return obj

    def make(self, **overrides: Any) -> T:
        return self.load()(**{**self.kwargs, **overrides})


class Registry(Generic[T]):
    """Name -> lazily imported factory. ``kind`` is used in error messages ("method", "suite", ...)."""

    def __init__(self, kind: str, discover: Callable[[], None] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._discover = discover
        self._discovered = discover is None

    def register(self, name: str, entry_point: str | Callable[..., T], description: str = "",
                 *, kwargs: dict[str, Any] | None = None, **meta: Any) -> None:
        if name in self._entries and self._entries[name].entry_point != entry_point:
            raise ValueError(f"{self.kind} {name!r} is registered twice "
                             f"({self._entries[name].entry_point} and {entry_point})")
        self._entries[name] = Entry(name, entry_point, description, dict(kwargs or {}), meta)

    def alias(self, name: str, target: str) -> None:
        """Make ``name`` another name of the registered ``target`` (results are filed under the target)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} alias {name!r} clashes with a registered {self.kind}")
        self._aliases[name] = target

    def canonical(self, name: str) -> str:
        """The registered name behind ``name`` (itself unless it is an alias)."""
        self._ensure()
        return self._aliases.get(name, name)

    def aliases(self) -> dict[str, str]:
        self._ensure()
        return dict(self._aliases)

    def _ensure(self) -> None:
        if not self._discovered:
            self._discovered = True
            assert self._discover is not None
            self._discover()

    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._entries)

    def entry(self, name: str) -> Entry[T]:
        self._ensure()
        try:
            return self._entries[self._aliases.get(name, name)]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._entries) + list(self._aliases)) from None

    def make(self, name: str, **overrides: Any) -> T:
        return self.entry(name).make(**overrides)

    def __contains__(self, name: str) -> bool:
        self._ensure()
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[Entry[T]]:
        self._ensure()
        return iter(self._entries[n] for n in sorted(self._entries))
