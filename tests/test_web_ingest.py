"""`chatbot ingest URL`: a site section crawled from a local HTTP server the test starts, with
robots.txt, redirects, errors, a slow page and conditional re-fetching."""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chatbot.cli import main
from chatbot.store import ChunkStore
from ingest.run import ChunkingSettings
from ingest.web import CrawlSettings, ingest_urls

NAV = "<nav><a href='/handbook/'>Handbook home</a> · <a href='/shop/'>Company shop</a></nav>"
FOOTER = "<footer>Copyright notice and cookie settings</footer>"


def page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><title>{title}</title></head><body>{NAV}<header>Intranet banner</header>"
            f"<main><h1>{title}</h1>{body}</main>{FOOTER}</body></html>").encode()


class Site:
    """A small intranet on loopback: what it serves, and every request it got."""

    def __init__(self):
        self.pages = {
            "/robots.txt": (b"User-agent: *\nDisallow: /handbook/private/\n", "text/plain"),
            "/handbook/": (page("Handbook", "<p>Start here.</p><a href='travel.html'>Travel</a> "
                                "<a href='rooms.csv'>Rooms</a> <a href='private/salaries.html'>Salaries</a> "
                                "<a href='moved'>Moved</a> <a href='gone.html'>Gone</a> <a href='slow.html'>Slow</a> "
                                "<a href='/shop/'>Shop</a> <a href='http://elsewhere.invalid/x'>Partner</a> "
                                "<a href='travel.html#hotels'>Hotels</a>"), "text/html"),
            "/handbook/travel.html": (page("Travel", "<h2>Hotels</h2><table><tr><th>City</th><th>Cap</th></tr>"
                                           "<tr><td>Rotterdam</td><td>€160</td></tr></table>"
                                           "<a href='deep.html'>Deeper</a>"), "text/html"),
            "/handbook/deep.html": (page("Deep", "<p>Two links away.</p>"), "text/html"),
            "/handbook/rooms.csv": (b"Room,Seats\nAtlantic,14\n", "text/csv"),
            "/handbook/private/salaries.html": (page("Salaries", "<p>Secret.</p>"), "text/html"),
            "/handbook/slow.html": (page("Slow", "<p>Eventually.</p>"), "text/html"),
            "/shop/": (page("Shop", "<p>Mugs.</p>"), "text/html"),
        }
        self.requests: list[tuple[str, str | None]] = []  # (path, If-None-Match)
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                site.requests.append((self.path, self.headers.get("If-None-Match")))
                if self.path == "/handbook/moved":
                    self.send_response(301)
                    self.send_header("Location", "http://elsewhere.invalid/handbook/")
                    self.end_headers()
                    return
                if self.path == "/handbook/slow.html":
                    time.sleep(2.5)
                if self.path not in site.pages:
                    self.send_error(404)
                    return
                body, kind = site.pages[self.path]
                etag = '"' + hashlib.sha1(body).hexdigest()[:12] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fetched(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)


@pytest.fixture
def site():
    s = Site()
    yield s
    s.server.shutdown()


CRAWL = CrawlSettings(depth=1, max_pages=20, timeout_s=1.0)


def test_a_section_is_crawled_within_its_host_folder_and_robots(site, tmp_path, embedder):
    store = ChunkStore(str(tmp_path / "db"))
    report = ingest_urls([f"{site.base}/handbook/"], store, embedder, ChunkingSettings(), CRAWL)
    b = site.base
    assert set(report.added) == {f"{b}/handbook/", f"{b}/handbook/travel.html", f"{b}/handbook/rooms.csv"}
    failed = dict(report.failed)
    assert failed[f"{b}/handbook/private/salaries.html"] == "robots.txt disallows it"
    assert "redirects off the host to http://elsewhere.invalid/handbook/" in failed[f"{b}/handbook/moved"]
    assert failed[f"{b}/handbook/gone.html"].startswith("HTTP 404")
    assert failed[f"{b}/handbook/slow.html"] == "timed out after 1 s"
    assert site.fetched("/shop/") == 0 and site.fetched("/handbook/deep.html") == 0  # off-section; depth 2
    assert site.fetched("/handbook/private/salaries.html") == 0
    chunks = store.snapshot().chunks
    text = "\n".join(c.text for c in chunks)
    assert "Hotels — City: Rotterdam; Cap: €160" in text and "Room: Atlantic; Seats: 14" in text
    for chrome in ("Handbook home", "Company shop", "Copyright notice", "Intranet banner"):
        assert chrome not in text  # navigation, header and footer are not content
    assert {c.title for c in chunks if c.doc_path.endswith("travel.html")} == {"Travel"}


def test_reingest_asks_if_changed_and_unchanged_pages_cost_nothing(site, tmp_path, embedder):
    store = ChunkStore(str(tmp_path / "db"))
    url = f"{site.base}/handbook/travel.html"
    crawl = CrawlSettings(depth=0, timeout_s=1.0)
    assert ingest_urls([url], store, embedder, ChunkingSettings(), crawl).added == [url]
    before = store.snapshot().chunks
    again = ingest_urls([url], store, embedder, ChunkingSettings(), crawl)
    assert again.unchanged == [url] and again.chunks_written == 0
    assert site.requests[-1][0] == "/handbook/travel.html" and site.requests[-1][1]  # sent If-None-Match, got 304
    assert store.snapshot().chunks == before
    site.pages["/handbook/travel.html"] = (page("Travel", "<p>The Rotterdam cap is now €175.</p>"), "text/html")
    changed = ingest_urls([url], store, embedder, ChunkingSettings(), crawl)
    assert changed.updated == [url]
    assert "€175" in " ".join(c.text for c in store.snapshot().chunks)


def test_a_page_that_starts_failing_keeps_what_was_stored(site, tmp_path, embedder):
    store = ChunkStore(str(tmp_path / "db"))
    url = f"{site.base}/handbook/travel.html"
    ingest_urls([url], store, embedder, ChunkingSettings(), CrawlSettings(timeout_s=1.0))
    before = store.snapshot().chunks
    del site.pages["/handbook/travel.html"]
    report = ingest_urls([url], store, embedder, ChunkingSettings(), CrawlSettings(timeout_s=1.0))
    assert report.failed[0][0] == url and "404" in report.failed[0][1]
    assert store.snapshot().chunks == before


def test_cli_ingests_a_url_and_answers_from_it(site, tmp_path, capsys):
    db = str(tmp_path / "db")
    assert main(["--db", db, "ingest", f"{site.base}/handbook/travel.html", "--quiet"]) == 0
    assert "1 added" in capsys.readouterr().out
    assert main(["--db", db, "ask", "What is the nightly hotel cap in Rotterdam?"]) == 0
    out = capsys.readouterr().out
    assert "€160" in out and f"{site.base}/handbook/travel.html" in out
    assert main(["--db", db, "ingest", f"{site.base}/handbook/gone.html", "--quiet"]) == 1  # nothing ingested
    assert "HTTP 404" in capsys.readouterr().err
