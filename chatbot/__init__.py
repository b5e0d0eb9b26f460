"""Grounded-refusal RAG chatbot: answers only from evidence it can cite.

Stages, each in its own module, data flowing one way:
ingest -> store -> retrieve -> rerank -> gate -> answer -> ui/cli.
`chatbot.pipeline` is the one place that wires them together.
"""

__version__ = "0.1.0"
