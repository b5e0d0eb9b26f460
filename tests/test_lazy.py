import threading
import time

import pytest

from chatbot.lazy import Lazy


def test_builds_once_under_concurrent_first_use():
    calls = []

    def build():
        calls.append(1)
        time.sleep(0.05)  # wide window for a race
        return object()

    lazy = Lazy(build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(lazy.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1


def test_own_thread_runs_every_call_on_one_thread():
    from concurrent.futures import ThreadPoolExecutor

    from chatbot.lazy import OwnThread

    runner = OwnThread("model")
    with ThreadPoolExecutor(16) as callers:
        idents = set(callers.map(lambda _: runner.run(threading.get_ident), range(64)))
    assert len(idents) == 1 and threading.get_ident() not in idents
    # A call made from inside a call runs in place instead of waiting on itself.
    assert runner.run(lambda: runner.run(threading.get_ident)) == idents.pop()
    with pytest.raises(ZeroDivisionError):  # the caller gets the call's exception
        runner.run(lambda: 1 / 0)
    assert runner.run(lambda x, y=0: x + y, 2, y=3) == 5
