"""An agent of five LLM steps that gets cascading by pointing the openai client at the sidecar.

Each step names its policy in the model name (``cascade:STEP:TARGET``); the sidecar answers
with the small model where the router trusts it and escalates the rest.  For every step the
agent prints which tier answered, the path, the cost and the latency, next to what the same
step would have cost sent to the frontier model.

    python examples/agent.py --base-url http://127.0.0.1:8000/v1 --api-key local-dev-key

(`examples/run_local.sh` starts the small model, the frontier stand-in and the sidecar first.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import openai

FRONTIER = "gpt-4o-2024-05-13"
TOOLS = ["lookup_order", "cancel_order", "refund_payment", "track_shipment", "talk_to_human"]

#: (step kind, per-step target, prompt template); {message} and the earlier outputs fill it.
STEPS: list[tuple[str, str, str]] = [
    (
        "intent_classification",
        "share=0.2",
        "Classify the customer's intent as one of: order_status, cancellation, refund, "
        "complaint, other. Answer with the label only.\n\nCustomer: {message}",
    ),
    (
        "entity_extraction",
        "quality=0.95",
        'Extract the order number and the product from the message as JSON like {{"order": '
        '"...", "product": "..."}}. Use null when absent.\n\nCustomer: {message}',
    ),
    (
        "tool_selection",
        "quality=0.95",
        "Intent: {intent_classification}\nEntities: {entity_extraction}\n"
        f"Choose the one tool to call from {', '.join(TOOLS)}. Answer with the tool name only.",
    ),
    (
        "response_generation",
        "quality=0.95",
        "Write a short, polite reply to the customer. Intent: {intent_classification}. "
        "Entities: {entity_extraction}. Tool called: {tool_selection}.\n\nCustomer: {message}",
    ),
    (
        "output_validation",
        "share=0.1",
        "Does this reply answer the customer without promising anything the tool cannot do? "
        "Answer yes or no.\n\nCustomer: {message}\nReply: {response_generation}",
    ),
]


@dataclass
class StepReport:
    step: str
    tier: str
    path: str
    cost_usd: float
    frontier_cost_usd: float
    latency_s: float
    answer: str


def frontier_cost(prompt_tokens: int, completion_tokens: int) -> float:
    """What the step's tokens cost at the frontier model's list price."""
    from router.data import load_prices

    price_in, price_out = load_prices().get(FRONTIER, (0.0, 0.0))
    return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6


def run_step(client: openai.OpenAI, step: str, target: str, prompt: str) -> StepReport:
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model=f"cascade:{step}:{target}",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=128,
    )
    latency = time.perf_counter() - started
    completion = raw.parse()
    cascade = json.loads(raw.text)["cascade"]
    tier = raw.headers["x-cascade-tier"]
    # `usage` counts every model that ran; the frontier would have run once, on these tokens
    answered = cascade["usage"].get(tier, {})
    return StepReport(
        step=step,
        tier=tier,
        path=raw.headers["x-cascade-path"],
        cost_usd=float(cascade["cost_usd"]),
        frontier_cost_usd=frontier_cost(
            answered.get("prompt_tokens", 0), answered.get("completion_tokens", 0)
        ),
        latency_s=latency,
        answer=(completion.choices[0].message.content or "").strip(),
    )


def run_agent(client: openai.OpenAI, message: str) -> list[StepReport]:
    """The five steps for one customer message, each through the sidecar."""
    outputs: dict[str, str] = {"message": message}
    reports = []
    for step, target, template in STEPS:
        report = run_step(client, step, target, template.format(**outputs))
        outputs[step] = report.answer[:300]
        reports.append(report)
    return reports


def print_reports(reports: list[StepReport]) -> None:
    print(f"{'step':<22} {'tier':<24} {'path':<24} {'cost $':>10} {'frontier $':>10} {'ms':>7}")
    for r in reports:
        print(
            f"{r.step:<22} {r.tier:<24} {r.path:<24} {r.cost_usd:>10.6f} "
            f"{r.frontier_cost_usd:>10.6f} {r.latency_s * 1000:>7.0f}"
        )
    cost = sum(r.cost_usd for r in reports)
    all_frontier = sum(r.frontier_cost_usd for r in reports)
    saved = 1 - cost / all_frontier if all_frontier else 0.0
    print(
        f"{'total':<72} {cost:>10.6f} {all_frontier:>10.6f} "
        f"{sum(r.latency_s for r in reports) * 1000:>7.0f}"
    )
    print(f"cost against every step on {FRONTIER}: {saved:.0%} saved")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="local-dev-key")
    parser.add_argument(
        "--message",
        action="append",
        help="customer message (repeatable)",
    )
    args = parser.parse_args(argv)
    messages = args.message or [
        "Hi, I ordered the blue kettle last week (order 88412) and it still hasn't arrived.",
        "Please cancel order 55120, I bought the wrong size of running shoes.",
    ]
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=120)
    try:
        for message in messages:
            print(f"\ncustomer: {message}")
            print_reports(run_agent(client, message))
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
