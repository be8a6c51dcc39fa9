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
        self.pending: dict = {}  # key -> threading.Event of the one caller computing it
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

    def remember(self, key, compute) -> tuple[object, bool]:
        """(value, whether this call computed it). Callers that ask for a key while another computes it wait for that
        answer instead of computing it again: thirty students clicking the same example start one computation, not thirty."""
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key], False
            computing = self.pending.get(key)
            if computing is None:
                computing = self.pending[key] = threading.Event()
                owner = True
            else:
                owner = False
        if not owner:
            computing.wait()
            value = self.get(key)
            return (value, False) if value is not None else (compute(), True)  # the first caller failed: so may this one
        try:
            value = compute()
            self.put(key, value)
            return value, True
        finally:
            with self.lock:
                self.pending.pop(key, None)
            computing.set()

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


def forget_images() -> None:
    """Empty every per-image cache (intakes and task results): benchmarks time a first click, tests start clean."""
    for cache in list(_PER_IMAGE):
        cache.clear()
