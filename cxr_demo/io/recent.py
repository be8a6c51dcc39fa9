"""A small bounded cache for per-image results: a long afternoon of uploads must not grow the process."""
from __future__ import annotations

import threading
from collections import OrderedDict


class Recent:
    """A small thread-safe LRU: bounded, so a long afternoon of uploads does not grow the process."""

    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
