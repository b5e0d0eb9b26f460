"""Configuration: built once at the entry point, then passed down. No module reads it globally.

Sources, later ones winning: defaults < TOML file < environment (CHATBOT_<KEY>, plus the
usual OPENAI_BASE_URL / OPENAI_API_KEY) < explicit overrides (CLI flags).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from chatbot.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
SHIPPED_RERANKER_DIR = PACKAGE_DIR / "resources" / "reranker"
SHIPPED_RERANKER = "shipped"
# The calibrations fitted for the shipped reranker, by the name config key `calibration` may give: "" (the default)
# reads its scores and the chunk cosine; "located" also reads the closest sentence's cosine (`chatbot.locate`),
# which refuses more of what the documents are about and do not answer, at the cost of embedding the best
# chunks' sentences for every question (bench/README.md, "The closest sentence").
SHIPPED_CALIBRATIONS = {"": "calibration.json", "located": "calibration_located.json"}
RERANKER_PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class Config:
    db_uri: str = ".chatbot/lancedb"  # a local directory, or any LanceDB URI (s3://..., db://...)
    table: str = "chunks"
    embedder: str = DEFAULT_EMBEDDER  # sentence-transformers id or local path
    reranker: str = SHIPPED_RERANKER  # "shipped", a CrossEncoder hub id, or a local path
    reranker_max_length: int = 256
    # "int8": the encoder's matrix products in int8, but for a few outsized input channels kept fp32
    # (1.85x faster here for a pool of 30, same ranking on the held-out sets; see bench/README.md);
    # "fp32": full precision
    reranker_precision: str = "int8"
    # (question, chunk) scores remembered, least recently used forgotten first (~180 bytes each); 0 = off
    rerank_cache_pairs: int = 50_000
    calibration: str = ""  # calibration JSON; empty (or "located", see SHIPPED_CALIBRATIONS) = one beside the shipped reranker
    tokenizer_encoding: str = "cl100k_base"
    chunk_max_tokens: int = 200
    chunk_overlap_tokens: int = 30
    embed_batch_size: int = 16  # texts per forward pass: 16 embedded 5-15% faster than 32 or 64 here (less padding)
    ingest_batch_chunks: int = 512  # chunks embedded and committed together: bounds ingest memory and lost work on a crash
    pool_size: int = 30  # candidates fused from the vector and BM25 lists, all shown in the inspection panel
    # The cross-encoder reads only the top `rerank_depth` of the fused pool (its cost is linear in this);
    # the rest keep their fused order below, unscored. >= pool_size reranks the whole pool.
    rerank_depth: int = 20
    # "rank_bm25" (in memory), "lancedb" (its full-text index), "auto": lancedb for remote URIs and for
    # tables of 20k+ chunks (ingest builds the index there), rank_bm25 below
    bm25_backend: str = "auto"
    rrf_k: int = 60
    top_n: int = 5
    llm_base_url: str = ""  # empty = no LLM: answers are extractive
    llm_api_key: str = field(default="", repr=False)
    llm_model: str = ""
    llm_timeout_s: float = 60.0
    llm_max_answer_tokens: int = 400
    context_max_tokens: int = 1800
    prompts_dir: str = str(REPO_DIR / "prompts")
    traces: bool = True  # persist a score trace of every question beside the chunks
    upload_dir: str = ".chatbot/uploads"  # where files uploaded in the UI are kept (and ingested from)
    upload_max_mb: int = 25  # per uploaded file
    max_file_mb: int = 32  # larger files are reported, not ingested: logs and dumps are not documents
    # Chat sessions the UI keeps in memory (each holds its conversation and its last inspection panel,
    # ~0.1-1.5 MB); beyond this the least recently used is forgotten, so memory is bounded.
    ui_max_sessions: int = 500
    ui_session_hours: float = 12.0  # a user's sign-in lasts this long; then they sign in again
    # Who may read what is ingested from a folder: {folder: [groups]}, the deepest matching folder wins,
    # `ingest --access` overrides it, and files under no folder here are for everyone. In chatbot.toml:
    # [chatbot.access] "docs/hr" = ["hr"]
    access: dict[str, list[str]] = field(default_factory=dict, hash=False)
    # Object-storage options for an s3:// db_uri, when the usual AWS variables (AWS_ACCESS_KEY_ID,
    # AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT, ...) are not the way: in chatbot.toml,
    # [chatbot.storage] aws_access_key_id = "...", aws_secret_access_key = "...", aws_region = "eu-west-1",
    # aws_endpoint = "https://minio.internal:9000". Handed to LanceDB and the write lock; never printed,
    # traced or logged (only which keys are set).
    storage: dict[str, str] = field(default_factory=dict, hash=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("chunk_max_tokens", "pool_size", "rerank_depth", "top_n", "embed_batch_size",
                     "context_max_tokens", "llm_max_answer_tokens", "reranker_max_length", "upload_max_mb", "max_file_mb",
                     "ingest_batch_chunks", "ui_max_sessions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"config key '{name}' must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.chunk_overlap_tokens < self.chunk_max_tokens:
            raise ConfigError(
                "config key 'chunk_overlap_tokens' must be >= 0 and smaller than 'chunk_max_tokens' "
                f"({self.chunk_max_tokens}), got {self.chunk_overlap_tokens}"
            )
        if self.rerank_cache_pairs < 0:
            raise ConfigError(f"config key 'rerank_cache_pairs' must be 0 (off) or more, got {self.rerank_cache_pairs}")
        if self.ui_session_hours <= 0:
            raise ConfigError(f"config key 'ui_session_hours' must be positive, got {self.ui_session_hours}")
        if self.llm_timeout_s <= 0:
            raise ConfigError(f"config key 'llm_timeout_s' must be positive, got {self.llm_timeout_s}")
        if self.reranker_precision not in RERANKER_PRECISIONS:
            raise ConfigError(f"config key 'reranker_precision' must be {' or '.join(map(repr, RERANKER_PRECISIONS))}, "
                              f"got {self.reranker_precision!r}")
        if self.bm25_backend not in ("auto", "rank_bm25", "lancedb"):
            raise ConfigError(f"config key 'bm25_backend' must be 'auto', 'rank_bm25' or 'lancedb', got {self.bm25_backend!r}")
        if not self.db_uri.strip():
            raise ConfigError("config key 'db_uri' is empty: give a directory or a LanceDB URI")

    @property
    def llm_enabled(self) -> bool:
        return bool(self.llm_base_url and self.llm_model)

    @property
    def chunking_fingerprint(self) -> str:
        return f"max={self.chunk_max_tokens},overlap={self.chunk_overlap_tokens},{self.tokenizer_encoding}"

    def public_dict(self) -> dict[str, Any]:
        """Everything but secrets, for traces and --json output."""
        d = dataclasses.asdict(self)
        d["llm_api_key"] = "***" if self.llm_api_key else ""
        d["storage"] = {k: v if k in PUBLIC_STORAGE_KEYS else "***" for k, v in self.storage.items()}
        return d


_TYPES: dict[str, type] = {f.name: typing.get_type_hints(Config)[f.name] for f in fields(Config)}
_ENV_ALIASES = {"OPENAI_BASE_URL": "llm_base_url", "OPENAI_API_KEY": "llm_api_key"}


def _coerce(key: str, value: Any, source: str) -> Any:
    if key == "access":
        return _access_rules(value, source)
    if key == "storage":
        return _storage_options(value, source)
    want = _TYPES[key]
    if want is bool and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
    if isinstance(value, str) and want is not str:
        try:
            return want(value.strip())
        except ValueError:
            raise ConfigError(f"{source}: '{key}' must be {want.__name__}, got {value!r}") from None
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, want) or isinstance(value, bool) and want is not bool:
        raise ConfigError(
            f"{source}: '{key}' must be {want.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _access_rules(value: Any, source: str) -> dict[str, list[str]]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: 'access' must be a table of folder = [groups], e.g. "
                          '[chatbot.access] "docs/hr" = ["hr"] (in chatbot.toml)')
    rules = {}
    for folder, groups in value.items():
        groups = [groups] if isinstance(groups, str) else groups
        if not isinstance(groups, list) or not groups or not all(isinstance(g, str) for g in groups):
            raise ConfigError(f"{source}: access for '{folder}' must be a list of group names, e.g. [\"hr\"]")
        rules[str(folder)] = [g.strip().lower() for g in groups]
    return rules


# LanceDB's (object_store's) option names for S3; the lock's boto3 client reads the same ones.
STORAGE_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region", "aws_endpoint",
                "allow_http", "aws_virtual_hosted_style_request", "aws_s3_express")
PUBLIC_STORAGE_KEYS = ("aws_region", "aws_endpoint", "allow_http", "aws_virtual_hosted_style_request", "aws_s3_express")


def _storage_options(value: Any, source: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: 'storage' must be a table of object-storage options, e.g. [chatbot.storage] "
                          'aws_region = "eu-west-1" (in chatbot.toml); or use the AWS_* environment variables')
    unknown = sorted(set(value) - set(STORAGE_KEYS))
    if unknown:  # the name only: a misplaced value could be a secret
        raise ConfigError(f"{source}: unknown storage option(s) {', '.join(map(repr, unknown))}; "
                          f"valid ones are: {', '.join(STORAGE_KEYS)}")
    options = {}
    for k, v in value.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{source}: storage option '{k}' must be a non-empty string")
        options[k] = v
    return options


def _check_keys(values: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(values) - set(_TYPES))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
            f"valid keys are: {', '.join(sorted(_TYPES))}"
        )


def load_config(
    path: str | os.PathLike | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration. `path` None means ./chatbot.toml if present."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}

    file = Path(path) if path is not None else Path("chatbot.toml")
    if path is not None and not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    if file.is_file():
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {file} is not valid TOML: {e}") from None
        section = raw.get("chatbot", raw)
        if not isinstance(section, dict):
            raise ConfigError(f"config file {file}: [chatbot] must be a table")
        _check_keys(section, f"config file {file}")
        values.update({k: _coerce(k, v, f"config file {file}") for k, v in section.items()})

    for var, key in _ENV_ALIASES.items():
        if env.get(var):
            values[key] = env[var]
    for var, raw_value in env.items():
        if var.startswith("CHATBOT_") and var != "CHATBOT_CONFIG":
            key = var[len("CHATBOT_"):].lower()
            if key not in _TYPES:
                raise ConfigError(
                    f"environment variable {var}: unknown key '{key}'; valid keys are: {', '.join(sorted(_TYPES))}"
                )
            values[key] = _coerce(key, raw_value, f"environment variable {var}")

    if overrides:
        _check_keys(overrides, "override")
        values.update({k: _coerce(k, v, "override") for k, v in overrides.items() if v is not None})

    return Config(**values)
