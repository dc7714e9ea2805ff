"""Named implementations (fusion modes, heads, constraints, ...) behind one lookup.

An entry is the implementation itself or a :class:`Lazy` ``"module:attribute"`` reference imported on first
use, so the names are known without importing torch (the CLI lists them in ``--help``, and validates options,
before any model code loads). Adding an implementation is its class and one ``register`` call.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Lazy:
    """``"package.module:attribute"``, imported when the entry is first looked up."""

    target: str

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


class Registry(Mapping[str, T], Generic[T]):
    """An ordered mapping of names to implementations (resolved on lookup) that can grow by ``register``."""

    def __init__(self, kind: str, entries: Mapping[str, T | Lazy] | None = None):
        self.kind = kind
        self._entries: dict[str, T | Lazy] = dict(entries or {})

    def register(self, name: str, implementation: T | None = None) -> Any:
        """Add ``implementation`` under ``name`` (or use as a decorator); a taken name is an error."""

        def add(value: T) -> T:
            if name in self._entries:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self._entries[name] = value
            return value

        return add if implementation is None else add(implementation)

    def unregister(self, name: str) -> None:
        del self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __getitem__(self, name: str) -> T:
        entry = self._entries[name]
        if isinstance(entry, Lazy):
            entry = self._entries[name] = entry.load()
        return entry  # type: ignore[return-value]

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"


def lazy_entries(module: str, names: Mapping[str, str]) -> dict[str, Lazy]:
    """``{name: Lazy("module:attribute")}`` for every ``name: attribute`` of ``names``."""
    return {name: Lazy(f"{module}:{attribute}") for name, attribute in names.items()}

