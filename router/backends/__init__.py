"""Model backends: the things a cascade calls to get an answer.

Two kinds exist:

* :class:`OpenAIBackend` speaks the OpenAI chat-completions protocol over HTTP, so the one
  class talks to OpenAI itself, to ``vllm serve`` and to llama.cpp's ``llama-server`` alike
  (point ``base_url`` at the server's ``/v1``).
* :class:`ReplayBackend` answers from recorded outcomes (the long schema of
  :mod:`router.data`), for offline evaluation and tests without any model.

Both satisfy the :class:`ChatBackend` protocol; :func:`make_backend` builds either from a
plain mapping (as found in a config file).  The ``openai`` package is imported lazily, on
first use of an :class:`OpenAIBackend`, so importing this package stays cheap.
"""

from __future__ import annotations

from router.backends.base import ChatBackend, Completion, SamplingBackend
from router.backends.factory import make_backend, replay_backend_for
from router.backends.messages import (
    VALID_ROLES,
    Messages,
    as_messages,
    estimate_tokens,
    input_text,
    normalise_text,
)
from router.backends.openai_api import OpenAIBackend
from router.backends.replay import REPLAY_COLUMNS, ReplayBackend

__all__ = [
    "REPLAY_COLUMNS",
    "VALID_ROLES",
    "ChatBackend",
    "Completion",
    "Messages",
    "OpenAIBackend",
    "ReplayBackend",
    "SamplingBackend",
    "as_messages",
    "estimate_tokens",
    "input_text",
    "make_backend",
    "normalise_text",
    "replay_backend_for",
]
