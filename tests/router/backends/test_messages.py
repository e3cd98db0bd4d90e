"""The router's input window of a request (``step_text``) on realistic agent conversations: what a
tool-using agent sends on each turn, and the plain single question the bundled data records."""

from __future__ import annotations

import json
from typing import Any

from router.backends import as_request, step_text
from router.backends.messages import TOOL_DESCRIPTION_CHARS, TOOL_RESULT_CHARS
from router.data import bundled_dataset, load_outcomes

LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look up an order by its number.\nReturns status, items and carrier.",
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "string"}},
            "required": ["order"],
        },
    },
}
CANCEL = {
    "type": "function",
    "function": {
        "name": "cancel_order",
        "description": "Cancel an order that has not shipped. " + "Policy details. " * 30,
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "string"}, "reason": {"type": "string"}},
            "required": ["order"],
        },
    },
}
HUMAN = {"type": "function", "function": {"name": "talk_to_human"}}
TOOLS = [LOOKUP, CANCEL, HUMAN]
SYSTEM = {"role": "system", "content": "You are the support agent of a shoe shop. Be brief."}


def call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


#: Turn 1 of an agent: the customer asks; the model must pick a tool.
TURN_1 = [SYSTEM, {"role": "user", "content": "Where is my order 88412? It is a blue kettle."}]
#: Turn 2: the model called two tools (in parallel), both results came back; it must answer.
TURN_2 = [
    *TURN_1,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            call("call_a", "lookup_order", {"order": "88412"}),
            call("call_b", "talk_to_human", {}),
        ],
    },
    {"role": "tool", "tool_call_id": "call_a", "content": '{"status": "shipped", "eta": "Fri"}'},
    {"role": "tool", "tool_call_id": "call_b", "content": "No agent is free before 18:00."},
]
#: Turn 3: the model answered, then the customer asked something new.
TURN_3 = [
    *TURN_2,
    {"role": "assistant", "content": "It shipped and arrives on Friday."},
    {"role": "user", "content": "Then cancel order 55120 instead, please."},
]


def test_first_turn_reads_the_question_and_the_offered_tools() -> None:
    text = step_text(as_request(TURN_1, tools=TOOLS, tool_choice="auto"))
    assert text == (
        "Where is my order 88412? It is a blue kettle.\n\n"
        "Tools: lookup_order: Look up an order by its number.; "
        f"cancel_order: {CANCEL['function']['description'][:TOOL_DESCRIPTION_CHARS]}; "
        "talk_to_human"
    )
    assert "shoe shop" not in text  # the system prompt is the same on every turn: left out


def test_after_a_tool_round_reads_the_last_result_not_the_calls() -> None:
    text = step_text(as_request(TURN_2, tools=TOOLS))
    question, tools, result = text.split("\n\n")
    assert question == "Where is my order 88412? It is a blue kettle."
    assert tools.startswith("Tools: lookup_order: ")
    assert result == "Tool result: No agent is free before 18:00."  # the last one only
    assert "call_a" not in text and '88412"}' not in text  # no ids, no call arguments


def test_a_new_user_turn_starts_a_new_window() -> None:
    text = step_text(as_request(TURN_3, tools=TOOLS))
    # what was asked and answered before is not this step's input: the results of the earlier
    # round answered the earlier question
    assert text.split("\n\n")[0] == "Then cancel order 55120 instead, please."
    assert "Tool result" not in text and "kettle" not in text and "Friday" not in text


def test_the_window_is_bounded_whatever_the_conversation_holds() -> None:
    long_result = {"role": "tool", "tool_call_id": "call_b", "content": "z" * 50_000}
    long_tools = [
        {"type": "function", "function": {"name": f"tool_{k}", "description": "d" * 5_000}}
        for k in range(4)
    ]
    many_turns = [*TURN_2[:-1], long_result] * 40
    text = step_text(as_request(many_turns, tools=long_tools))
    question = "Where is my order 88412? It is a blue kettle."
    described = [f"tool_{k}: {'d' * TOOL_DESCRIPTION_CHARS}" for k in range(4)]
    tools_line = "Tools: " + "; ".join(described)
    assert text == f"{question}\n\n{tools_line}\n\nTool result: {'z' * TOOL_RESULT_CHARS}"


def test_content_parts_and_tool_results_as_parts_are_read_as_text() -> None:
    parts = [
        SYSTEM,
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What does this label say? "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {"role": "assistant", "content": "", "tool_calls": [call("c1", "ocr", {})]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "FRAGILE"}]},
    ]
    assert step_text(parts) == "What does this label say? \n\nTool result: FRAGILE"


def test_a_plain_question_reads_exactly_as_the_bundled_data_records_it() -> None:
    # routers in the package were trained on these prompts as recorded: a request holding one
    # question (alone, after a system prompt, with sampling fields) must read byte for byte alike
    frame = load_outcomes([bundled_dataset("mmlu_pro")])
    for prompt in frame["prompt"].drop_duplicates().head(50):
        assert step_text(prompt) == prompt
        assert step_text([{"role": "user", "content": prompt}]) == prompt
        assert step_text(as_request([SYSTEM, {"role": "user", "content": prompt}])) == prompt
        assert step_text(as_request(prompt, temperature=0.0, max_tokens=64, seed=1)) == prompt
