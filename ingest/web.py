"""Web pages into the knowledge base: one page, or a site section to a stated depth and page limit.

Same host only, and under the start URL's folder (a section, not the whole site); robots.txt is
honoured for our user agent; a redirect that leaves the host is refused. Re-ingest sends each page's
stored ETag and Last-Modified, so a page the server says is unchanged (304) costs one request and
no parsing. Pages come out as `run.Source`s and land through the same atomic, incremental writer as
files; boilerplate (navigation, headers, footers, asides) is stripped by the HTML parser.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

from ingest.parse import SUPPORTED_SUFFIXES
from ingest.run import Source

USER_AGENT = "grounded-chatbot-ingest/1.0"
# A page's Content-Type to the parser it needs, when its URL does not end in a known suffix.
CONTENT_TYPES = {"text/html": ".html", "application/xhtml+xml": ".html", "text/plain": ".txt",
                 "text/markdown": ".md", "text/csv": ".csv", "application/pdf": ".pdf",
                 "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
                 "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
                 "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx"}
MAX_REDIRECTS = 5


def is_url(text: str) -> bool:
    return urlsplit(str(text)).scheme in ("http", "https")


@dataclass(frozen=True)
class CrawlSettings:
    depth: int = 0  # links followed from the start page: 0 = the page alone
    max_pages: int = 50
    timeout_s: float = 20.0
    max_bytes: int = 32 * 2**20
    delay_s: float = 0.0  # between requests, to be gentle with the server


@dataclass(frozen=True)
class Validators:
    """What the server said identifies a page's version: sent back to ask "changed since?"."""

    etag: str = ""
    last_modified: str = ""


class Crawler:
    def __init__(self, settings: CrawlSettings, validators: dict[str, Validators] | None = None, client=None):
        import httpx

        self.settings = settings
        self.validators = dict(validators or {})
        self.seen_validators: dict[str, Validators] = {}  # what this crawl learned, to store afterwards
        self.client = client or httpx.Client(timeout=settings.timeout_s, follow_redirects=False,
                                             headers={"User-Agent": USER_AGENT})
        self._robots: dict[str, RobotFileParser] = {}

    def close(self) -> None:
        self.client.close()

    def crawl(self, start: str) -> Iterator[Source]:
        """Sources for the start page and, breadth first, the pages it links to within its section."""
        start = urldefrag(start)[0]
        root = urlsplit(start)
        section = root.path if root.path.endswith("/") else root.path.rsplit("/", 1)[0] + "/"
        queue, queued = deque([(start, 0)]), {start}
        fetched = 0
        while queue and fetched < self.settings.max_pages:
            url, depth = queue.popleft()
            if not self._allowed(url):
                yield Source(url, reason="robots.txt disallows it")
                continue
            if fetched and self.settings.delay_s:
                time.sleep(self.settings.delay_s)
            fetched += 1
            source, html_text = self._fetch(url, root.netloc)
            yield source
            if html_text is None or depth >= self.settings.depth:
                continue
            for link in _links(html_text, source.doc_path):
                parts = urlsplit(link)
                if (parts.scheme in ("http", "https") and parts.netloc == root.netloc
                        and parts.path.startswith(section) and link not in queued and _crawlable(parts.path)):
                    queued.add(link)
                    queue.append((link, depth + 1))

    def _allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        if base not in self._robots:
            robots = RobotFileParser()
            try:
                response = self.client.get(f"{base}/robots.txt")
                lines = response.text.splitlines() if response.status_code == 200 else []
            except Exception:  # no robots.txt to read: nothing is disallowed
                lines = []
            robots.parse(lines)
            self._robots[base] = robots
        return self._robots[base].can_fetch(USER_AGENT, url)

    def _fetch(self, url: str, host: str) -> tuple[Source, str | None]:
        """The page as a Source, and its HTML text when it is a page whose links may be followed."""
        import httpx

        headers = {}
        known = self.validators.get(url)
        if known:
            if known.etag:
                headers["If-None-Match"] = known.etag
            if known.last_modified:
                headers["If-Modified-Since"] = known.last_modified
        target = url
        try:
            for _ in range(MAX_REDIRECTS + 1):
                with self.client.stream("GET", target, headers=headers) as response:
                    if response.status_code == 304:
                        self.seen_validators[url] = known
                        return Source(url, unchanged=True), None
                    if response.is_redirect:
                        location = urljoin(target, response.headers.get("Location", ""))
                        if urlsplit(location).netloc != host:
                            return Source(url, reason=f"redirects off the host to {location}; not followed"), None
                        target = location
                        continue
                    if response.status_code >= 400:
                        return Source(url, reason=f"HTTP {response.status_code} {response.reason_phrase}"), None
                    body = bytearray()
                    for piece in response.iter_bytes():
                        body += piece
                        if len(body) > self.settings.max_bytes:
                            return Source(url, reason=f"larger than {self.settings.max_bytes / 2**20:g} MiB"), None
                    suffix = _suffix(target, response.headers.get("Content-Type", ""))
                    if suffix is None:
                        kind = response.headers.get("Content-Type", "unknown")
                        return Source(url, reason=f"not a document type the knowledge base reads ({kind})"), None
                    self.seen_validators[url] = Validators(response.headers.get("ETag", ""),
                                                           response.headers.get("Last-Modified", ""))
                    data = bytes(body)
                    html_text = data.decode(response.encoding or "utf-8", errors="replace") if suffix == ".html" else None
                    return Source(url, data, suffix), html_text
            return Source(url, reason=f"more than {MAX_REDIRECTS} redirects"), None
        except httpx.TimeoutException:
            return Source(url, reason=f"timed out after {self.settings.timeout_s:g} s"), None
        except httpx.HTTPError as e:
            return Source(url, reason=f"cannot fetch: {type(e).__name__}: {e}"), None


def _suffix(url: str, content_type: str) -> str | None:
    path = urlsplit(url).path.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if path.endswith(suffix):
            return suffix
    return CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())


def _crawlable(path: str) -> bool:
    """A link worth fetching: a page (no suffix, or .html) or a document type we read."""
    last = path.rsplit("/", 1)[-1].lower()
    return "." not in last or last.endswith(SUPPORTED_SUFFIXES)


def _links(html_text: str, base: str) -> list[str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html_text, "lxml")
    base_tag = soup.find("base", href=True)
    base = urljoin(base, base_tag["href"]) if base_tag else base
    links = []
    for a in soup.find_all("a", href=True):
        if (a.get("rel") and "nofollow" in a.get("rel")) or a["href"].startswith(("mailto:", "javascript:", "tel:")):
            continue
        links.append(urldefrag(urljoin(base, a["href"].strip()))[0])
    return list(dict.fromkeys(links))


def ingest_urls(urls, store, embedder, settings, crawl: CrawlSettings = CrawlSettings(), *, batch_chunks: int = 512,
                progress=None, full_text_index_from: int | None = None, client=None, access=None,
                sentence_vectors: bool = False, sentence_progress=None):
    """Crawl each URL (a page, or its section to `crawl.depth`) into the knowledge base, like `ingest_paths`
    does files: one writer at a time, atomic batches, only what changed; the pages' validators are kept
    for the next run. Pages that fail are reported with their reason and keep what was stored for them."""
    from ingest.run import IngestReport, SentenceStep, access_groups, finish, write_sources

    with store.write_lock():
        started = time.perf_counter()
        report = IngestReport()
        stored = store.web_validators()
        crawler = Crawler(crawl, {url: Validators(*v) for url, v in stored.items()}, client=client)
        try:
            sources = (source for url in urls for source in crawler.crawl(url))
            write_sources(progress(sources) if progress else sources, store, embedder, settings, batch_chunks, report,
                          access_groups(access))
        finally:
            if client is None:
                crawler.close()
        kept = set(report.added) | set(report.updated) | set(report.unchanged) | set(report.relabeled)
        store.save_web_validators({url: (v.etag, v.last_modified) for url, v in crawler.seen_validators.items()
                                   if url in kept and v is not None})
        finish(store, report, [], full_text_index_from, started,
               SentenceStep(embedder, sentence_progress) if sentence_vectors else None)
    return report
