"""Span and attribute names: OpenTelemetry's GenAI and HTTP conventions, and the router's own.

The names are spelled out rather than imported from ``opentelemetry-semantic-conventions``:
its ``gen_ai.*`` constants are all marked deprecated there (they moved to the GenAI
conventions' own repository), and its enum classes warn when used.
"""

from __future__ import annotations

#: The instrumentation scope of every span the router emits.
INSTRUMENTATION_NAME = "cascade_router"

# ---------------------------------------------------------------- GenAI client inference span
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
# opt-in: the conversation itself
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
TOOL_DEFINITIONS = "gen_ai.tool.definitions"

#: ``gen_ai.operation.name`` of a chat-completions call.
CHAT = "chat"
#: ``gen_ai.provider.name`` for an OpenAI-protocol upstream (what the official OpenAI
#: instrumentation reports whatever the base URL; ``server.address`` tells the servers apart).
OPENAI_PROVIDER = "openai"

# ---------------------------------------------------------------- HTTP and network
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
URL_PATH = "url.path"
URL_QUERY = "url.query"
URL_SCHEME = "url.scheme"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
NETWORK_PROTOCOL_VERSION = "network.protocol.version"
USER_AGENT = "user_agent.original"
#: the opt-in ``http.response.header.<name>`` attribute for the request id (a string array)
RESPONSE_REQUEST_ID_HEADER = "http.response.header.x-request-id"
ERROR_TYPE = "error.type"

# ---------------------------------------------------------------- the router's own
STEP = "cascade.step"
TARGET = "cascade.target"
TIER = "cascade.tier"
ROLE = "cascade.role"
PATH = "cascade.path"
P_ACCEPT = "cascade.p_accept"
GAIN = "cascade.gain"
ACTION = "cascade.action"
STAGE = "cascade.stage"
OPINION_SOURCE = "cascade.opinion_source"
ROUTER_VERSION = "cascade.router_version"
COST_USD = "cascade.cost_usd"
REQUEST_ID = "cascade.request_id"

#: Span names of the router's internal work (constant: span names stay low-cardinality).
ROUTE_SPAN = "cascade.route"
DECIDE_SPAN = "cascade.decide"

#: Content capture switch read by the official GenAI instrumentations.
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
