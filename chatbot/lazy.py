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


class OwnThread:
    """Runs every call it is given on one long-lived thread of its own, one call at a time.

    For model inference: each thread that calls into torch keeps its own OpenMP team and oneDNN
    scratch buffers for as long as it lives, and a web server hands requests to dozens of worker
    threads in turn, so memory would grow with every new thread. On this machine's cores two
    concurrent inference calls only contend anyway.
    """

    def __init__(self, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._executor = None
        self._thread_id: int | None = None

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        if threading.get_ident() == self._thread_id:  # already on it (a call made from a call): no deadlock
            return fn(*args, **kwargs)
        with self._lock:
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name,
                                                    initializer=self._remember_thread)
        return self._executor.submit(fn, *args, **kwargs).result()

    def _remember_thread(self) -> None:
        self._thread_id = threading.get_ident()
