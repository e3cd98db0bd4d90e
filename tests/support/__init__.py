"""Test helpers: a real OpenAI-compatible HTTP server (:mod:`tests.support.openai_server`)."""
