"""One small registry type for every closed set (algorithms, ops, backends, precisions, tasks).

Each closed set has exactly one `Registry` instance, next to the code of its entries; the
config validation, CLI choices, help text and report defaults read their names from it,
so adding an entry is a change in one place.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from sppquant.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name -> spec map that refuses duplicates and explains unknown names."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str, spec: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Remove an entry (tests register toy entries and clean up after themselves)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """The spec for ``name``; a one-line UserError naming the valid choices otherwise."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._items), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown {self.what} {name!r}; known: {', '.join(self._items)}{hint}") from None

    __getitem__ = get

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._items.items()))

    def values(self) -> Iterator[T]:
        return iter(list(self._items.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def help(self) -> str:
        """``a|b|c`` for help texts."""
        return "|".join(self._items)
