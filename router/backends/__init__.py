"""Model backends: the things a cascade calls to get an answer.

Two kinds exist:

* :class:`OpenAIBackend` speaks the OpenAI chat-completions protocol over HTTP, so the one
  class talks to OpenAI itself, to ``vllm serve`` and to llama.cpp's ``llama-server`` alike
  (point ``base_url`` at the server's ``/v1``).
* :class:`ReplayBackend` answers from recorded outcomes (the long schema of
  :mod:`router.data`), for offline evaluation and tests without any model.

Both take a :class:`ChatRequest` (every OpenAI field that shapes the answer: structured
messages, tools, tool choice, response format, sampling parameters, …) and return a
:class:`Completion` holding the whole :class:`AssistantMessage`.  Both satisfy the
:class:`ChatBackend` protocol; :func:`make_backend` builds either from a plain mapping (as found
in a config file).  The ``openai`` package is imported lazily, on
first use of an :class:`OpenAIBackend`, so importing this package stays cheap.
"""

from __future__ import annotations

from router.backends.base import ChatBackend, Completion, SamplingBackend
from router.backends.factory import make_backend, replay_backend_for
from router.backends.messages import (
    VALID_ROLES,
    ChatInput,
    Messages,
    as_messages,
    as_request,
    estimate_tokens,
    normalise_text,
    step_text,
)
from router.backends.openai_api import DIALECTS, Dialect, OpenAIBackend
from router.backends.replay import REPLAY_COLUMNS, ReplayBackend
from router.backends.request import (
    AssistantMessage,
    ChatMessage,
    ChatRequest,
    FunctionCall,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
    answer_text,
    message_text,
    record_text,
    recorded_message,
)

__all__ = [
    "DIALECTS",
    "REPLAY_COLUMNS",
    "VALID_ROLES",
    "AssistantMessage",
    "ChatBackend",
    "ChatInput",
    "ChatMessage",
    "ChatRequest",
    "Completion",
    "Dialect",
    "FunctionCall",
    "Messages",
    "OpenAIBackend",
    "ReplayBackend",
    "ResponseFormat",
    "SamplingBackend",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "answer_text",
    "as_messages",
    "as_request",
    "estimate_tokens",
    "make_backend",
    "message_text",
    "normalise_text",
    "record_text",
    "recorded_message",
    "replay_backend_for",
    "step_text",
]
