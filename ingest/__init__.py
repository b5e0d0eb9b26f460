"""Turning files into chunks in the store: parse -> chunk -> embed -> write.

`ingest` may use `chatbot`'s store and types; nothing in `chatbot` imports `ingest`.
"""
