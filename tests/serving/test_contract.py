"""The sidecar's published API contract, fuzzed by Schemathesis against a live sidecar.

The sidecar (``cascade-router serve`` in its own process) runs over the real small model
(SmolLM2 on llama.cpp) and a frontier stand-in that answers any prompt (the paid API's fake,
over real HTTP).  Every operation of the OpenAPI document it serves is sent generated
requests, valid and invalid, with a fixed seed and a bounded number of examples; then the
stateful phase follows the document's links (an answer's id → ``/v1/feedback``).  Any 5xx, any
response that breaks its declared schema, status or headers, any schema-invalid request that is
accepted and any dropped connection fails the test.

What the fuzzing did (examples and stateful steps per operation and status, 5xx, failed checks,
dropped connections) is printed at the end and, when ``CONTRACT_TOTALS_FILE`` names a file,
written there as JSON (``benchmarks/bench_contract.py`` records it that way).

``schemathesis.pytest.from_fixture`` (the lazy loader) breaks on pytest 9.2 (it reads
``Node._nodeid``, which 9.2 removed), so the cases are generated from the same document built
in-process and sent to the live server; a test checks that the served document is that one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

from serving.app import create_app
from serving.settings import ServiceSettings
from tests.serving.conftest import API_KEYS, SMALL, sidecar_settings
from tests.support.openai_server import OpenAIStubServer
from tests.support.processes import LlamaServer, Sidecar

pytestmark = pytest.mark.slow

SEED = 20261202
MAX_EXAMPLES = 20
MAX_STEPS = 6
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        # by the name of the document's security scheme (FastAPI's HTTPBearer)
        "auth": {"openapi": {"HTTPBearer": {"bearer": API_KEYS[0]}}},
        "request-timeout": 60,
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "phases": {"stateful": {"max-steps": MAX_STEPS}},
        "checks": {
            # on by default; named here because the test relies on each of them
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
            "negative_data_rejection": {"enabled": True},
            "ignored_auth": {"enabled": True},
            "use_after_free": {"enabled": True},
            "ensure_resource_availability": {"enabled": True},
            # a valid request may still be refused for what no schema can say: a step the
            # router does not know (400), a request id the store never issued (404)
            "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404"]},
        },
    }
)


def _document() -> dict[str, Any]:
    """The OpenAPI document of the sidecar, built in-process (no router is loaded)."""
    return create_app(ServiceSettings(api_keys=API_KEYS)).openapi()


schema = schemathesis.openapi.from_dict(_document(), config=CONFIG)


class Tally:
    """What the fuzzing did: calls by phase, operation and status (and generation mode), the
    checks that failed and the connections dropped, by kind."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str, int]] = Counter()
        self.modes: Counter[tuple[str, str]] = Counter()
        self.failed_checks: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()

    def call(self, phase: str, case: schemathesis.Case, **kwargs: Any) -> Any:
        """Send ``case`` and count its answer; a transport error is counted, then raised."""
        try:
            response = case.call(**kwargs)
        except requests.RequestException as exc:
            self.dropped[f"{case.operation.label}: {type(exc).__name__}"] += 1
            raise
        self.calls[(phase, case.operation.label, response.status_code)] += 1
        if case.meta is not None:
            self.modes[(phase, case.meta.generation.mode.value)] += 1
        return response

    def validated(self, validate: Any) -> None:
        """Run a validation; every check it fails is counted, then the failure raised."""
        try:
            validate()
        except FailureGroup as group:
            self.failed_checks.update(type(failure).__name__ for failure in group.exceptions)
            raise

    def totals(self) -> dict[str, Any]:
        """The counts, and the configuration they came from, as JSON-ready values."""
        per_phase: dict[str, Any] = {}
        for (phase, label, status), n in sorted(self.calls.items()):
            statuses = per_phase.setdefault(phase, {}).setdefault(label, {})
            statuses[str(status)] = n
        calls = {
            phase: sum(n for (p, _, _), n in self.calls.items() if p == phase)
            for phase in ("examples", "stateful")
        }
        return {
            "seed": SEED,
            "max_examples": MAX_EXAMPLES,
            "max_steps": MAX_STEPS,
            "operations": sum(1 for _ in schema.get_all_operations()),
            "operations_fuzzed": len({label for (p, label, _) in self.calls if p == "examples"}),
            "examples": calls["examples"],
            "stateful_steps": calls["stateful"],
            "generation_modes": {f"{p} {m}": n for (p, m), n in sorted(self.modes.items())},
            "server_errors_5xx": sum(n for (_, _, s), n in self.calls.items() if s >= 500),
            "failed_checks": dict(self.failed_checks),
            "schema_violations": self.failed_checks["JsonSchemaError"],
            "dropped_connections": sum(self.dropped.values()),
            "dropped": dict(self.dropped),
            "responses": per_phase,
        }


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    """One tally for the module; printed at its end, and written to ``CONTRACT_TOTALS_FILE``."""
    counts = Tally()
    yield counts
    totals = counts.totals()
    print(f"\nschemathesis totals: {json.dumps(totals, indent=1)}")
    if os.environ.get("CONTRACT_TOTALS_FILE"):
        Path(os.environ["CONTRACT_TOTALS_FILE"]).write_text(json.dumps(totals, indent=1))


@pytest.fixture(scope="module")
def any_prompt_frontier() -> Iterator[OpenAIStubServer]:
    """The frontier stand-in for generated prompts: it answers whatever it is asked."""
    with OpenAIStubServer(
        responder=lambda messages: f"A considered answer to {len(messages)} message(s)."
    ) as server:
        yield server


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
    llama: LlamaServer,
    any_prompt_frontier: OpenAIStubServer,
) -> Iterator[Sidecar]:
    workdir = tmp_path_factory.mktemp("contract")
    settings = sidecar_settings(workdir, llama.base_url, any_prompt_frontier.base_url)
    settings["upstreams"][SMALL]["max_tokens"] = 16  # generated prompts: keep answers short
    server = Sidecar(workdir, settings).start()
    yield server
    server.stop()


@schema.parametrize()
def test_every_operation_keeps_its_contract(
    case: schemathesis.Case, live: Sidecar, tally: Tally
) -> None:
    # what ``case.call_and_validate`` does, in two halves so that each answer is counted
    response = tally.call("examples", case, base_url=live.url)
    tally.validated(
        lambda: case.validate_response(response, transport_kwargs={"base_url": live.url})
    )


def test_the_served_document_is_the_fuzzed_one(live: Sidecar) -> None:
    served = requests.get(f"{live.url}/openapi.json", timeout=30)
    assert served.status_code == 200
    assert served.json() == schema.raw_schema


def test_links_lead_from_an_answer_to_its_feedback() -> None:
    paths = schema.raw_schema["paths"]
    links = paths["/v1/chat/completions"]["post"]["responses"]["200"]["links"]
    feedback = paths["/v1/feedback"]["post"]["operationId"]
    assert [link["operationId"] for link in links.values()] == [feedback]


def test_stateful_walks_follow_the_links(live: Sidecar, tally: Tally) -> None:
    served = schemathesis.openapi.from_url(f"{live.url}/openapi.json", config=CONFIG)
    seen: Counter[tuple[str, int]] = Counter()

    class Machine(served.as_state_machine()):  # type: ignore[misc]
        def call(self, case: schemathesis.Case, **kwargs: Any) -> Any:
            return tally.call("stateful", case, **kwargs)

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            seen[(case.operation.label, response.status_code)] += 1

        def validate_response(self, response: Any, case: schemathesis.Case, **kw: Any) -> None:
            tally.validated(lambda: super(Machine, self).validate_response(response, case, **kw))

    Machine.run()
    # a label for an id the sidecar really issued is stored: the link was followed
    assert seen[("POST /v1/feedback", 200)] > 0, dict(seen)
