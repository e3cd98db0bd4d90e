"""What tracing costs per request: the span helpers alone, and the sidecar end to end.

    .venv/bin/python benchmarks/bench_tracing.py --only helpers     # seconds
    .venv/bin/python benchmarks/bench_tracing.py --only sidecar     # minutes (Phoenix starts)

* helpers: one request's worth of span work (a SERVER span, the route span, two decisions,
  two model calls with their upstream headers) in-process, tracing off (no provider: the
  router's default) and on (the SDK with a batch processor and an exporter that drops the
  spans).  CPU time per request, best of several repeats (the machine is shared).
* sidecar: two sidecars over the same replay upstreams, one with tracing off and one
  exporting over OTLP/HTTP to a real receiver (Phoenix); the same requests alternate between
  them, so both see the same machine load.  p50/p99 latency per endpoint and the paired
  difference.

Results go to benchmarks/results/tracing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def one_request(tracing: Any, backends: Sequence[Any], scope: dict[str, Any]) -> None:
    """The span work of one escalated chat request, as the sidecar does it."""
    from router.tracing import trace_headers

    request = {"messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 64}
    with tracing.server_span(scope) as server:
        with tracing.route_span("intent") as route:
            with tracing.decision_span("intent", "pre") as decide:
                tracing.end_decision_span(decide, action="call", tier="small", p_accept=0.4)
            with tracing.model_call(
                backends[0], role="small", tier="small", request=request
            ) as call:
                trace_headers()
                tracing.end_model_call(
                    call, response_model="small", input_tokens=10, output_tokens=5
                )
            with tracing.decision_span("intent", "post") as decide:
                tracing.end_decision_span(
                    decide, action="escalate", tier="small", p_accept=0.2, gain=0.3
                )
            with tracing.model_call(
                backends[1], role="frontier", tier="frontier", request=request
            ) as call:
                trace_headers()
                tracing.end_model_call(
                    call, response_model="frontier", input_tokens=10, output_tokens=9
                )
            tracing.end_route_span(
                route,
                tier="frontier",
                path="small→escalated→frontier",
                p_accept=0.4,
                cost_usd=0.01,
                router_version="1",
            )
        tracing.end_server_span(server, scope, 200, "chatcmpl-1")


def cpu_us_per_call(call: Callable[[], None], number: int, repeats: int) -> float:
    """Best-of-``repeats`` process CPU time per call, in microseconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(number):
            call()
        best = min(best, (time.process_time() - start) / number)
    return best * 1e6


def bench_helpers(number: int = 20_000, repeats: int = 7) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from router.backends import OpenAIBackend
    from router.tracing import Tracing

    class Dropping(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    backends = [
        OpenAIBackend("small", base_url="http://127.0.0.1:8081/v1"),
        OpenAIBackend("frontier", base_url="http://127.0.0.1:8082/v1"),
    ]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "scheme": "http",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")],
    }
    off = Tracing()
    assert not off.enabled
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    on = Tracing(provider)
    result = {
        "off_us_per_request": cpu_us_per_call(
            lambda: one_request(off, backends, scope), number, repeats
        ),
        "on_us_per_request": cpu_us_per_call(
            lambda: one_request(on, backends, scope), number // 10, repeats
        ),
        "spans_per_request": 6,
        "number": number,
        "repeats": repeats,
    }
    provider.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["helpers", "sidecar"], help="run one part")
    parser.add_argument("--no-save", action="store_true", help="do not write results")
    args = parser.parse_args()
    path = RESULTS / "tracing.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if args.only in (None, "helpers"):
        results["helpers"] = bench_helpers()
        h = results["helpers"]
        print(
            f"span helpers per request: off {h['off_us_per_request']:.2f} µs, "
            f"on (SDK, batch, dropping exporter) {h['on_us_per_request']:.1f} µs"
        )
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0],
    }
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
