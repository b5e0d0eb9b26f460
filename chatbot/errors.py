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
