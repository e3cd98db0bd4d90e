"""Agent traffic: the sidecar's overhead on tool-calling and ``json_schema`` requests, and the
validator's cost per answer.

    .venv/bin/python benchmarks/bench_agent_traffic.py                  # ~20 min, busy 2 cores
    .venv/bin/python benchmarks/bench_agent_traffic.py --requests 20    # quicker
    .venv/bin/python benchmarks/bench_agent_traffic.py --only validator # on the saved answers

* overhead: SmolLM2-135M on llama.cpp's server (llama-cpp-python) answers each request twice,
  directly and through a real sidecar (``cascade-router serve``, the bundled router, policy
  ``cascade:STEP:share=0`` so that a valid small answer is kept), in one run, paired per
  request.  Tool calling: ``tools=[get_weather]`` with ``tool_choice`` naming it (llama.cpp
  constrains the call to the tool's schema); ``json_schema``: a person's name and age.  The
  direct request is the same body in llama-cpp-python's dialect (the schema inside
  ``json_object``), as the sidecar's backend sends it.  Each prompt is first sent once, so that
  both timed calls start from the same warm prompt cache.  The sidecar's frontier is a stub over
  HTTP that answers what it is asked; a small answer the validator refuses escalates to it, and
  those requests are reported apart (they are not the overhead of one hop).
* validator: ``router.validation.validate_answer`` on the real answers gathered above (and, if
  the ``jsonschema_rs`` package is importable, its validator on the same arguments, for the
  choice of library), µs per answer over many repetitions; and the share of SmolLM2's direct
  answers it refuses.

Results go to benchmarks/results/agent_traffic.json, SmolLM2's answers to
benchmarks/results/agent_traffic_answers.jsonl (``--only validator`` re-measures on them).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
ANSWERS = RESULTS / "agent_traffic_answers.jsonl"

from tests.support.openai_server import OpenAIStubServer, obliging  # noqa: E402
from tests.support.processes import LlamaServer, Sidecar  # noqa: E402

SMALL, FRONTIER = "llama-3.1-8b-instruct", "gpt-4o-2024-05-13"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
        },
    },
}
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
CITIES = [
    "Paris",
    "Lyon",
    "Berlin",
    "Madrid",
    "Rome",
    "Lisbon",
    "Vienna",
    "Prague",
    "Warsaw",
    "Oslo",
    "Stockholm",
    "Helsinki",
    "Dublin",
    "London",
    "Edinburgh",
    "Brussels",
    "Amsterdam",
    "Zurich",
    "Geneva",
    "Milan",
    "Naples",
    "Athens",
    "Istanbul",
    "Cairo",
    "Tokyo",
    "Osaka",
    "Seoul",
    "Beijing",
    "Shanghai",
    "Mumbai",
    "Delhi",
    "Sydney",
    "Melbourne",
    "Auckland",
    "Toronto",
    "Montreal",
    "Chicago",
    "Boston",
    "Denver",
    "Seattle",
]
PEOPLE = [
    "Ann",
    "Bob",
    "Carla",
    "Dmitri",
    "Eve",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kemal",
    "Lena",
    "Marco",
    "Nadia",
    "Omar",
    "Paula",
    "Quentin",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Victor",
    "Wanda",
    "Xavier",
    "Yusuf",
    "Zoe",
    "Alba",
    "Bruno",
    "Chloe",
    "Diego",
    "Elif",
    "Felix",
    "Gina",
    "Hamid",
    "Ida",
    "Jan",
    "Kira",
    "Luca",
    "Mira",
    "Nils",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def requests(kind: str, n: int) -> list[tuple[str, dict[str, Any]]]:
    """(step, request fields) of one kind, all distinct."""
    out = []
    for i in range(n):
        if kind == "tool_call":
            city = CITIES[i % len(CITIES)]
            fields = {
                "messages": [{"role": "user", "content": f"What is the weather in {city}?"}],
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            }
            out.append(("tool_select", fields))
        else:
            name, age = PEOPLE[i % len(PEOPLE)], 20 + (7 * i) % 60
            fields = {
                "messages": [
                    {"role": "user", "content": f"{name} is {age} years old. Give name and age."}
                ],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "person", "strict": True, "schema": PERSON_SCHEMA},
                },
            }
            out.append(("extract", fields))
    return out


def as_llama_cpp_python(fields: dict[str, Any]) -> dict[str, Any]:
    """The request as the sidecar's llama-cpp-python backend sends it."""
    from router.backends.openai_api import _to_llama_cpp_python

    body = json.loads(json.dumps(fields))
    _to_llama_cpp_python(body)
    return body


def bench_overhead(workdir: Path, n: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    llama = LlamaServer(workdir / "llama.log").start()
    frontier = OpenAIStubServer(body_responder=obliging, models=[FRONTIER]).start()
    settings = {
        "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
        "feedback_url": f"sqlite:///{workdir / 'feedback.db'}",
        "upstreams": {
            SMALL: {
                "base_url": llama.base_url,
                "model": llama.model_alias,
                "dialect": "llama-cpp-python",
            },
            FRONTIER: {"base_url": frontier.base_url},
        },
        "small_timeout_s": 120,
        "request_timeout_s": 300,
    }
    sidecar = Sidecar(workdir, settings).start()
    figures: dict[str, Any] = {}
    answers: list[dict[str, Any]] = []
    common = {"temperature": 0, "max_tokens": 48}
    try:
        with httpx.Client(timeout=300) as http:

            def direct(fields: dict[str, Any]) -> httpx.Response:
                body = {"model": llama.model_alias, **as_llama_cpp_python(fields), **common}
                return http.post(f"{llama.base_url}/chat/completions", json=body)

            def through(step: str, fields: dict[str, Any]) -> httpx.Response:
                body = {"model": f"cascade:{step}:share=0", **fields, **common}
                return http.post(f"{sidecar.url}/v1/chat/completions", json=body)

            for kind in ("tool_call", "json_schema"):
                work = requests(kind, n)
                step, fields = work[0]
                direct(fields), through(step, fields)  # warm both paths
                kept: list[tuple[float, float]] = []
                escalated: list[tuple[float, float]] = []
                for step, fields in work:
                    # llama.cpp reuses the KV cache of the previous prompt: a first call puts
                    # this prompt there, so both timed calls start from the same warm state
                    direct(fields)
                    t0 = time.perf_counter()
                    r1 = direct(fields)
                    t1 = time.perf_counter()
                    r2 = through(step, fields)
                    t2 = time.perf_counter()
                    assert r1.status_code == 200 and r2.status_code == 200, (r1.text, r2.text)
                    path = r2.headers["x-cascade-path"]
                    (kept if path == "small>verified" else escalated).append((t1 - t0, t2 - t1))
                    answers.append(
                        {
                            "kind": kind,
                            "fields": fields,
                            "message": r1.json()["choices"][0]["message"],
                            "path": path,
                        }
                    )
                figures[kind] = summary(kept, escalated)
    finally:
        sidecar.stop()
        frontier.stop()
        llama.stop()
    return figures, answers


def ms(seconds: float) -> float | None:
    return None if seconds != seconds else round(seconds * 1000, 2)  # NaN: no such request


def summary(kept: list[tuple[float, float]], escalated: list[tuple[float, float]]) -> dict:
    direct = [a for a, _ in kept]
    through = [b for _, b in kept]
    diff = [b - a for a, b in kept]
    return {
        "requests": len(kept) + len(escalated),
        "kept_small": len(kept),
        "escalated": len(escalated),
        "direct_p50_ms": ms(percentile(direct, 50)),
        "direct_p99_ms": ms(percentile(direct, 99)),
        "sidecar_p50_ms": ms(percentile(through, 50)),
        "sidecar_p99_ms": ms(percentile(through, 99)),
        "overhead_p50_ms": ms(percentile(diff, 50)),
        "overhead_p99_ms": ms(percentile(diff, 99)),
        "overhead_mean_ms": ms(statistics.fmean(diff)) if diff else None,
        "escalated_difference_p50_ms": ms(percentile([b - a for a, b in escalated], 50)),
    }


def bench_validator(answers: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    from router.backends import AssistantMessage, as_request
    from router.validation import validate_answer

    out: dict[str, Any] = {}
    for kind in ("tool_call", "json_schema"):
        mine = [a for a in answers if a["kind"] == kind]
        pairs = []
        for answer in mine:
            fields = dict(answer["fields"])
            request = as_request(fields.pop("messages"), **fields)
            message = answer["message"]
            calls = [
                {"id": c.get("id") or "call", "type": "function", "function": c["function"]}
                for c in message.get("tool_calls") or []
            ]
            parsed = AssistantMessage(content=message.get("content"), tool_calls=calls or None)
            pairs.append((request, parsed))
        verdicts = [validate_answer(r, m) for r, m in pairs]
        timings = []
        for request, message in pairs:
            t0 = time.perf_counter()
            for _ in range(repeats):
                validate_answer(request, message)
            timings.append((time.perf_counter() - t0) / repeats * 1e6)
        out[kind] = {
            "answers": len(pairs),
            "refused": sum(v.valid is False for v in verdicts),
            "refused_share": sum(v.valid is False for v in verdicts) / max(len(verdicts), 1),
            "reasons": sorted({str(v.reason)[:120] for v in verdicts if v.valid is False}),
            "validate_us_p50": percentile(timings, 50),
            "validate_us_mean": statistics.fmean(timings),
            "validate_us_max": max(timings),
        }
        out[kind].update(compare_libraries(pairs, kind, repeats))
    return out


def compare_libraries(pairs: list[tuple[Any, Any]], kind: str, repeats: int) -> dict[str, Any]:
    """The schema check alone with jsonschema and, when importable, jsonschema_rs (µs)."""
    import jsonschema

    schema = WEATHER["function"]["parameters"] if kind == "tool_call" else PERSON_SCHEMA
    values = []
    for _, message in pairs:
        text = message.tool_calls[0].function.arguments if message.tool_calls else message.text
        try:
            values.append(json.loads(text))
        except ValueError:
            continue
    out: dict[str, Any] = {}
    validators: dict[str, Any] = {"jsonschema": jsonschema.Draft202012Validator(schema)}
    try:
        import jsonschema_rs  # type: ignore[import-not-found]

        validators["jsonschema_rs"] = jsonschema_rs.validator_for(schema)
    except ImportError:
        out["jsonschema_rs"] = "not installed"
    for name, validator in validators.items():
        t0 = time.perf_counter()
        for _ in range(repeats):
            for value in values:
                validator.is_valid(value)
        out[f"{name}_is_valid_us"] = (time.perf_counter() - t0) / (repeats * len(values)) * 1e6
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="paired requests per kind")
    parser.add_argument("--repeats", type=int, default=2000, help="validator repetitions")
    parser.add_argument("--only", choices=["validator"], help="re-measure the validator only")
    args = parser.parse_args()
    started = time.time()
    path = RESULTS / "agent_traffic.json"
    report = json.loads(path.read_text()) if args.only and path.exists() else {}
    if args.only:
        answers = [json.loads(line) for line in ANSWERS.read_text().splitlines()]
    else:
        with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
            report["overhead"], answers = bench_overhead(Path(tmp), args.requests)
        RESULTS.mkdir(parents=True, exist_ok=True)
        ANSWERS.write_text("".join(json.dumps(a) + "\n" for a in answers))
        report["overhead_command"] = " ".join(["benchmarks/bench_agent_traffic.py", *sys.argv[1:]])
        report["overhead_recorded"] = time.strftime("%Y-%m-%d %H:%M")
    report["validator"] = bench_validator(answers, args.repeats)
    report["validator_command"] = " ".join(["benchmarks/bench_agent_traffic.py", *sys.argv[1:]])
    report["validator_recorded"] = time.strftime("%Y-%m-%d %H:%M")
    report["machine"] = f"{platform.machine()}, {platform.python_version()}"
    report["seconds"] = round(time.time() - started, 1)
    path.write_text(json.dumps(report, indent=2, allow_nan=False))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
