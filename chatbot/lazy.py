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


class TorchWorkers:
    """`count` long-lived threads that run torch work side by side, each with an intra-op team of
    `threads_each`: on 2 cores, two batches at once on one thread each score a pool of 20 pairs in
    about 15% less time than one batch after another on both cores, because the many small
    operations between the matrix products (GELU, layer norm, adds, quantizing activations) do not
    split well across threads.

    torch keeps a process-wide default team size that a thread adopts on its first torch call, and
    `torch.set_num_threads` sets both that default and the calling thread's own; so each worker
    adopts the default first, then sets its own, and the default is put back for threads started
    later (an embedder's, a web server's). One worker runs on the caller's thread, with its team.
    """

    def __init__(self, name: str, count: int, threads_each: int):
        self.name = name
        self.count = count
        self.threads_each = threads_each
        self._executor = None
        self._lock = threading.Lock()

    def map(self, fn: Callable[..., T], items) -> list[T]:
        if self.count == 1:
            return [fn(item) for item in items]
        with self._lock:
            if self._executor is None:
                self._executor = self._start()
        return list(self._executor.map(fn, items))

    def _start(self):
        from concurrent.futures import ThreadPoolExecutor

        import torch

        default = torch.get_num_threads()
        all_pinned = threading.Barrier(self.count)

        def pin() -> None:
            torch.get_num_threads()  # adopt the default now, so it cannot overwrite the line below later
            torch.set_num_threads(self.threads_each)
            all_pinned.wait()  # holds this thread, so each pin() lands on a thread of its own

        executor = ThreadPoolExecutor(max_workers=self.count, thread_name_prefix=self.name)
        for done in [executor.submit(pin) for _ in range(self.count)]:
            done.result()
        torch.set_num_threads(default)
        return executor
