import threading
import time

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
