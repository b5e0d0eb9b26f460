"""Domain exceptions. Only the CLI and UI turn these into user-facing messages."""


class ChatbotError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(ChatbotError):
    """Configuration is malformed: names the key and the fix."""


class StoreError(ChatbotError):
    """The knowledge base cannot be opened, read or written."""


class StoreBusy(StoreError):
    """Another writer holds the knowledge base."""


class EmbedderMismatch(StoreError):
    """The table was built by a different embedder than the one configured."""


class ModelLoadError(ChatbotError):
    """A model (embedder, reranker) could not be loaded from where config points."""

    @classmethod
    def from_failure(cls, role: str, name: str, where: str, error: Exception, fix: str) -> "ModelLoadError":
        """One line a user can act on: which model, whether it was read as a hub id, the first
        line of the library's own message (its tracebacks run to pages), and the config fix."""
        from pathlib import Path

        hint = "" if Path(where).exists() else " (not a local path; a hub id needs internet access)"
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        return cls(f"cannot load {role} '{name}'{hint}: {reason}. {fix}")


class CalibrationError(ChatbotError):
    """A calibration file is missing, malformed, or fitted for another pipeline."""


class ParseError(ChatbotError):
    """A document could not be turned into text."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class LLMError(ChatbotError):
    """The answering LLM endpoint failed; names the endpoint, never the key."""

    def __init__(self, endpoint: str, reason: str):
        super().__init__(f"LLM endpoint {endpoint} failed: {reason}")
        self.endpoint = endpoint
        self.reason = reason


class EmptyQuestion(ChatbotError):
    """The question has no content to search for."""


class UngroundedAnswer(ChatbotError):
    """The LLM answered, but not in a way the evidence supports (no citation, invented figures)."""
