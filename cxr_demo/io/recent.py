"""A small bounded cache for per-image results: a long afternoon of uploads must not grow the process."""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

_PER_IMAGE: weakref.WeakSet = weakref.WeakSet()


class Recent:
    """A small thread-safe LRU: bounded, so a long afternoon of uploads does not grow the process.
    `per_image=True` marks a cache of answers about uploaded images, which `forget_images()` empties."""

    def __init__(self, size: int, per_image: bool = False):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()
        if per_image:
            _PER_IMAGE.add(self)

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


def forget_images() -> None:
    """Empty every per-image cache (intakes and task results): benchmarks time a first click, tests start clean."""
    for cache in list(_PER_IMAGE):
        cache.clear()
