"""The size each key had when this process last appended to it or read it."""

from __future__ import annotations

from collections.abc import Mapping

#: Keys whose last seen size a store remembers; forgotten past this.
SIZES_KEPT = 65536


class Sizes(dict[str, int]):
    """Last seen sizes of keys, forgotten wholesale when there are too many (a miss only
    costs an append that memcached's own limit still bounds)."""

    def __setitem__(self, key: str, size: int) -> None:
        if len(self) >= SIZES_KEPT and key not in self:
            self.clear()
        super().__setitem__(key, size)

    def note(self, sizes: Mapping[str, int]) -> None:
        """Many sizes at once (a batch's): one check of the count, not one per key."""
        if len(self) + len(sizes) > SIZES_KEPT:
            self.clear()
        self.update(sizes)
