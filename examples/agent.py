"""A customer-support agent of five LLM steps that gets cascading by pointing the openai client
at the sidecar.

Each step names its policy in the model name (``cascade:STEP:TARGET``); the sidecar answers
with the small model where the router trusts it and escalates the rest.  The steps are real
agent calls: intent classification (text), extraction (a ``json_schema`` response format whose
JSON the agent parses), tool selection (a ``tools`` request whose tool call the agent executes
with a local Python function and feeds back as a ``tool`` message), response generation (the
conversation with the tool result) and output validation (text).  For every step the agent
prints which tier answered, the path, the cost and the latency, next to what the same step
would have cost sent to the frontier model.

    python examples/agent.py --base-url http://127.0.0.1:8000/v1 --api-key local-dev-key

(`examples/run_local.sh` starts the small model, the frontier stand-in and the sidecar first.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai

FRONTIER = "gpt-4o-2024-05-13"

#: The target of each step (the step kinds, in the order the agent runs them).
TARGETS: dict[str, str] = {
    "intent_classification": "share=0.2",
    "extraction": "quality=0.95",
    "tool_selection": "quality=0.95",
    "response_generation": "quality=0.95",
    "output_validation": "share=0.1",
}
SYSTEM = (
    "You are the support agent of an online shop. Call the one tool that serves the customer, "
    "then answer the customer in one or two polite sentences."
)
INTENTS = ("order_status", "cancellation", "refund", "complaint", "other")
ENTITIES = {
    "type": "json_schema",
    "json_schema": {
        "name": "entities",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "order": {"type": ["string", "null"]},
                "product": {"type": ["string", "null"]},
            },
            "required": ["order", "product"],
            "additionalProperties": False,
        },
    },
}

# ---------------------------------------------------------------- the agent's tools

#: The shop's orders, as the tools see them.
ORDERS: dict[str, dict[str, str]] = {
    "88412": {"product": "blue kettle", "status": "shipped", "carrier": "DHL", "eta": "Friday"},
    "55120": {"product": "running shoes", "status": "processing"},
}


def lookup_order(order: str) -> dict[str, Any]:
    """An order's product and status."""
    found = ORDERS.get(order.strip().lstrip("#"))
    return {"order": order, **found} if found else {"error": f"no order {order!r}"}


def track_shipment(order: str) -> dict[str, Any]:
    """Where a shipped order is."""
    found = ORDERS.get(order.strip().lstrip("#"), {})
    if found.get("status") != "shipped":
        return {"error": f"order {order!r} has not shipped"}
    return {"order": order, "carrier": found["carrier"], "eta": found["eta"]}


def cancel_order(order: str, reason: str = "") -> dict[str, Any]:
    """Cancel an order that has not shipped."""
    found = ORDERS.get(order.strip().lstrip("#"))
    if found is None:
        return {"error": f"no order {order!r}"}
    if found["status"] == "shipped":
        return {"error": f"order {order!r} has shipped; ask for a refund on delivery"}
    return {"order": order, "cancelled": True, "reason": reason}


def refund_payment(order: str) -> dict[str, Any]:
    """Refund a delivered order."""
    return {"order": order, "refund": "started", "days": 5}


def talk_to_human(summary: str) -> dict[str, Any]:
    """Hand the conversation to a person."""
    return {"ticket": "T-1042", "summary": summary}


def _tool(function: Callable[..., Any], properties: dict[str, Any], required: list[str]) -> dict:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {
        "type": "function",
        "function": {
            "name": function.__name__,
            "description": function.__doc__,
            "parameters": parameters,
        },
    }


_ORDER = {"order": {"type": "string", "description": "the order number, digits only"}}
#: The local functions the agent executes, by name, and the tools it offers the model.
FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    f.__name__: f
    for f in (lookup_order, track_shipment, cancel_order, refund_payment, talk_to_human)
}
TOOLS = [
    _tool(lookup_order, _ORDER, ["order"]),
    _tool(track_shipment, _ORDER, ["order"]),
    _tool(cancel_order, {**_ORDER, "reason": {"type": "string"}}, ["order"]),
    _tool(refund_payment, _ORDER, ["order"]),
    _tool(talk_to_human, {"summary": {"type": "string"}}, ["summary"]),
]

# ---------------------------------------------------------------- running the steps


@dataclass
class ExecutedCall:
    """A tool call the agent executed: the function, its parsed arguments, what it returned."""

    id: str
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any]


@dataclass
class StepReport:
    step: str
    tier: str
    path: str
    cost_usd: float
    frontier_cost_usd: float
    latency_s: float
    answer: str
    calls: list[ExecutedCall] = field(default_factory=list)


def frontier_cost(prompt_tokens: int, completion_tokens: int) -> float:
    """What the step's tokens cost at the frontier model's list price."""
    from router.data import load_prices

    price_in, price_out = load_prices().get(FRONTIER, (0.0, 0.0))
    return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6


def call_step(
    client: openai.OpenAI,
    step: str,
    messages: list[dict[str, Any]],
    model: str | None = None,
    **fields: Any,
) -> tuple[StepReport, Any]:
    """One step through the sidecar (or, with ``model``, straight to that model): its report
    and the answering model's message."""
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model=model or f"cascade:{step}:{TARGETS[step]}",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=128,
        temperature=0.0,
        seed=0,
        **fields,
    )
    latency = time.perf_counter() - started
    completion = raw.parse()
    message = completion.choices[0].message
    cascade = json.loads(raw.text).get("cascade")
    if cascade is None:  # a model asked directly: one call, priced as the frontier
        usage = completion.usage
        tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        cost = frontier_cost(*tokens)
        tier, path = completion.model, "direct"
    else:
        tier, path = raw.headers["x-cascade-tier"], raw.headers["x-cascade-path"]
        cost = float(cascade["cost_usd"])
        # `usage` counts every model that ran; the frontier would have run once, on these tokens
        answered = cascade["usage"].get(tier, {})
        tokens = (answered.get("prompt_tokens", 0), answered.get("completion_tokens", 0))
    report = StepReport(
        step=step,
        tier=tier,
        path=path,
        cost_usd=cost,
        frontier_cost_usd=frontier_cost(*tokens),
        latency_s=latency,
        answer=(message.content or "").strip(),
    )
    return report, message


def execute(call: Any) -> ExecutedCall:
    """Run the local function a tool call names with its arguments; a failure is the result
    (as an agent would report it back to the model), never an exception."""
    name = call.function.name
    try:
        arguments = json.loads(call.function.arguments)
        result = FUNCTIONS[name](**arguments)
    except (ValueError, TypeError, KeyError) as exc:
        arguments = {"raw": call.function.arguments}
        result = {"error": f"{type(exc).__name__}: {exc}"}
    return ExecutedCall(call.id, name, arguments, result)


def parse_entities(text: str) -> dict[str, Any]:
    """The extraction's JSON object ({} when the answer is not one)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def run_agent(client: openai.OpenAI, message: str, model: str | None = None) -> list[StepReport]:
    """The five steps for one customer message, each through the sidecar (``model``: each sent
    to that model instead, e.g. the frontier's endpoint, for comparison)."""
    reports = []
    intent, _ = call_step(
        client,
        "intent_classification",
        model=model,
        messages=[
            {
                "role": "user",
                "content": f"Classify the customer's intent as one of: {', '.join(INTENTS)}. "
                f"Answer with the label only.\n\nCustomer: {message}",
            }
        ],
    )
    reports.append(intent)
    extraction, _ = call_step(
        client,
        "extraction",
        model=model,
        messages=[
            {
                "role": "user",
                "content": "Extract the order number and the product the customer names. "
                f"Use null when absent.\n\nCustomer: {message}",
            }
        ],
        response_format=ENTITIES,
    )
    entities = parse_entities(extraction.answer)
    reports.append(extraction)

    known = ", ".join(f"{k}: {v}" for k, v in entities.items() if v) or "nothing"
    conversation: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": f"{message}\n\n(intent: {intent.answer[:40]}; known: {known})",
        },
    ]
    selection, chosen = call_step(
        client, "tool_selection", conversation, model, tools=TOOLS, tool_choice="required"
    )
    selection.calls = [execute(call) for call in chosen.tool_calls or ()]
    if selection.calls:
        selection.answer = "; ".join(
            f"{c.name}({json.dumps(c.arguments)}) -> {json.dumps(c.result)}"
            for c in selection.calls
        )
        conversation.append(
            {
                "role": "assistant",
                "content": chosen.content,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": call.function.arguments},
                    }
                    for c, call in zip(selection.calls, chosen.tool_calls, strict=True)
                ],
            }
        )
        conversation += [
            {"role": "tool", "tool_call_id": c.id, "content": json.dumps(c.result)}
            for c in selection.calls
        ]
    reports.append(selection)

    reply, _ = call_step(
        client, "response_generation", conversation, model, tools=TOOLS, tool_choice="none"
    )
    reports.append(reply)
    check, _ = call_step(
        client,
        "output_validation",
        model=model,
        messages=[
            {
                "role": "user",
                "content": "Does this reply answer the customer without promising anything the "
                f"tools did not do? Answer yes or no.\n\nCustomer: {message}\n"
                f"Reply: {reply.answer[:300]}",
            }
        ],
    )
    reports.append(check)
    return reports


def print_reports(reports: list[StepReport]) -> None:
    print(f"{'step':<22} {'tier':<24} {'path':<24} {'cost $':>10} {'frontier $':>10} {'ms':>7}")
    for r in reports:
        print(
            f"{r.step:<22} {r.tier:<24} {r.path:<24} {r.cost_usd:>10.6f} "
            f"{r.frontier_cost_usd:>10.6f} {r.latency_s * 1000:>7.0f}"
        )
        for c in r.calls:
            print(f"{'':<22} called {c.name}({json.dumps(c.arguments)}) -> {json.dumps(c.result)}")
    cost = sum(r.cost_usd for r in reports)
    all_frontier = sum(r.frontier_cost_usd for r in reports)
    saved = 1 - cost / all_frontier if all_frontier else 0.0
    print(
        f"{'total':<72} {cost:>10.6f} {all_frontier:>10.6f} "
        f"{sum(r.latency_s for r in reports) * 1000:>7.0f}"
    )
    print(f"cost against every step on {FRONTIER}: {saved:.0%} saved")


DEFAULT_MESSAGES = (
    "Hi, I ordered the blue kettle last week (order 88412) and it still hasn't arrived.",
    "Please cancel order 55120, I bought the wrong size of running shoes.",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="local-dev-key")
    parser.add_argument(
        "--message",
        action="append",
        help="customer message (repeatable)",
    )
    parser.add_argument(
        "--model",
        help="send every step to this model instead of the cascade (e.g. the frontier's own "
        "endpoint as --base-url, to compare)",
    )
    args = parser.parse_args(argv)
    messages = args.message or list(DEFAULT_MESSAGES)
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=300)
    try:
        for message in messages:
            print(f"\ncustomer: {message}")
            print_reports(run_agent(client, message, args.model))
    except openai.APIConnectionError:
        print(
            f"error: no sidecar at {args.base_url} (start it: examples/run_local.sh)",
            file=sys.stderr,
        )
        return 3
    except openai.APIStatusError as exc:
        print(f"error: the sidecar answered {exc.status_code}: {exc.message}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
