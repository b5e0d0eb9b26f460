"""Build a heavy object on first use, once, even when several threads ask at once."""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Lazy(Generic[T]):
    def __init__(self, build: Callable[[], T]):
        self._build = build
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        value = self._value
        if value is None:  # check, lock, check, build: the common path takes no lock
            with self._lock:
                if self._value is None:
                    self._value = self._build()
                value = self._value
        return value
