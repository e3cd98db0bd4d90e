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
import statistics
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


def _replay_prompts() -> list[tuple[str, str]]:
    """Prompts both bundled tiers recorded (the replay upstreams answer them)."""
    from router.data import bundled_dataset, load_outcomes

    tiers = ["llama-3.1-8b-instruct", "gpt-4o-2024-05-13"]
    frame = load_outcomes([bundled_dataset("mmlu_pro")], models=tiers)
    both = frame.groupby("prompt")["model"].nunique()
    chosen = frame[frame["prompt"].isin(both[both == 2].index)].drop_duplicates("prompt")
    return [(str(s), str(p)) for s, p in zip(chosen["step"], chosen["prompt"], strict=True)]


def _quantiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49] * 1000, 2), "p99_ms": round(cuts[98] * 1000, 2)}


def bench_sidecar(requests_per_endpoint: int = 400) -> dict[str, Any]:
    """Two sidecars over the bundled replay upstreams, tracing off and on (OTLP/HTTP to a live
    Phoenix); the same requests alternate between them (the order flips every pair)."""
    import tempfile

    import httpx

    from tests.support.phoenix import Phoenix, phoenix_executable
    from tests.support.processes import Sidecar

    prompts = _replay_prompts()
    workdir = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    phoenix = Phoenix(phoenix_executable(), workdir).start()
    sidecars: dict[str, Sidecar] = {}
    try:
        for mode in ("off", "on"):
            folder = workdir / mode
            folder.mkdir()
            sidecar = Sidecar(folder, {"feedback_url": f"sqlite:///{folder / 'feedback.db'}"})
            if mode == "on":
                sidecar.env |= {
                    "OTEL_TRACES_EXPORTER": "otlp",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.url,
                    "OTEL_SERVICE_NAME": "cascade-router-bench",
                }
            sidecars[mode] = sidecar.start(timeout_s=300)
        bodies = {
            "chat/completions": lambda step, text: {
                "model": f"cascade:{step}",
                "messages": [{"role": "user", "content": text}],
            },
            "route": lambda step, text: {"step": step, "input": text},
        }
        result: dict[str, Any] = {}
        with httpx.Client(timeout=120) as client:
            for endpoint, body in bodies.items():
                times: dict[str, list[float]] = {"off": [], "on": []}
                for i in range(requests_per_endpoint + 20):
                    step, text = prompts[i % len(prompts)]
                    order = ("off", "on") if i % 2 == 0 else ("on", "off")
                    for mode in order:
                        started = time.perf_counter()
                        response = client.post(
                            f"{sidecars[mode].url}/v1/{endpoint}", json=body(step, text)
                        )
                        elapsed = time.perf_counter() - started
                        response.raise_for_status()
                        if i >= 20:  # the first requests warm both up
                            times[mode].append(elapsed)
                paired = [b - a for a, b in zip(times["off"], times["on"], strict=True)]
                result[endpoint] = {
                    "off": _quantiles(times["off"]),
                    "on": _quantiles(times["on"]),
                    "paired_difference_ms": {
                        "median": round(statistics.median(paired) * 1000, 3),
                        "mean": round(statistics.mean(paired) * 1000, 3),
                    },
                    "requests": len(paired),
                }
        sidecars.pop("on").stop()  # its lifespan's end flushes the last batch
        result["spans_stored"] = _stored_spans(phoenix)
    finally:
        for sidecar in sidecars.values():
            sidecar.stop()
        phoenix.stop()
    return result


def _stored_spans(phoenix: Any) -> int:
    """How many spans the receiver holds, once its (asynchronous) ingestion has settled."""
    import httpx

    def count_pages() -> int:
        # the endpoint returns at most 1,000 spans a page, and a cursor to the next one
        params: dict[str, Any] = {"limit": 1000}
        total = 0
        while True:
            response = httpx.get(
                f"{phoenix.url}/v1/projects/default/spans/otlpv1", params=params, timeout=60
            )
            response.raise_for_status()
            body = response.json()
            total += len(body["data"])
            if not body.get("next_cursor"):
                return total
            params = {"limit": 1000, "cursor": body["next_cursor"]}

    count, deadline = -1, time.monotonic() + 60
    while time.monotonic() < deadline:
        now = count_pages()
        if now == count:
            break
        count = now
        time.sleep(2)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["helpers", "sidecar"], help="run one part")
    parser.add_argument("--no-save", action="store_true", help="do not write results")
    parser.add_argument("--requests", type=int, default=400, help="per endpoint and mode")
    args = parser.parse_args()
    path = RESULTS / "tracing.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    # other jobs share the CPUs: the load around the run says how much of a floor the
    # latencies are
    load_start = os.getloadavg()
    if args.only in (None, "helpers"):
        results["helpers"] = bench_helpers()
        h = results["helpers"]
        print(
            f"span helpers per request: off {h['off_us_per_request']:.2f} µs, "
            f"on (SDK, batch, dropping exporter) {h['on_us_per_request']:.1f} µs"
        )
    if args.only in (None, "sidecar"):
        results["sidecar"] = bench_sidecar(args.requests)
        for endpoint in ("chat/completions", "route"):
            r = results["sidecar"][endpoint]
            print(
                f"/v1/{endpoint}: off p50 {r['off']['p50_ms']} ms p99 {r['off']['p99_ms']} ms; "
                f"on p50 {r['on']['p50_ms']} ms p99 {r['on']['p99_ms']} ms; paired "
                f"difference median {r['paired_difference_ms']['median']} ms"
            )
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
