"""The sidecar: /v1/route throughput and latency, and the overhead on chat.

    .venv/bin/python benchmarks/bench_sidecar.py                 # everything (~4 min)
    .venv/bin/python benchmarks/bench_sidecar.py --only route
    .venv/bin/python benchmarks/bench_sidecar.py --only overhead
    .venv/bin/python benchmarks/bench_sidecar.py --only route --embedder static

* ``--embedder KIND`` serves the router trained with that embedder by bench_embedders.py
  (``results/embedders/KIND/speed_router``, 4,000 MMLU-Pro prompts; its artefact is built into
  the cache first if missing); without it the sidecar serves the bundled MiniLM router.  The
  sidecar's resident memory (now and peak) is recorded after the route run.

* route: a real sidecar (``cascade-router serve``, bundled router) in its own process; an asyncio
  load generator in this process sends distinct inputs (no cache can answer them).  Closed loop
  with 1-32 concurrent clients (decisions/s, p50/p99), then open loop at fixed rates (p50/p99).
  Short inputs are ≤ 30 tokens, long ones MMLU-Pro prompts of ≈ 300 tokens.
* overhead: the same short prompts sent to SmolLM2-135M on llama.cpp directly and through the
  sidecar with a policy that keeps the small answer (``cascade:STEP:share=0``); the paired
  per-request difference is the sidecar's cost (two embeddings, boosters, one HTTP hop, the
  feedback-store write).

The load generator shares the 2 cores with the server, so it is kept lean: keep-alive HTTP/1.1
connections written over asyncio streams (httpx's pool costs more CPU per request than the
decision being measured).  Figures are still a floor.  Results go to
benchmarks/results/sidecar.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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

from tests.support.processes import LlamaServer, Sidecar  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def inputs() -> dict[str, list[tuple[str, str]]]:
    """(step, text) pairs: long MMLU-Pro prompts and short (≤ 30 token) questions."""
    from router.data import bundled_dataset, load_outcomes

    frame = load_outcomes([bundled_dataset("mmlu_pro")], models=["gpt-4o-2024-05-13"])
    frame = frame.drop_duplicates("prompt")
    long = [(str(s), str(p)) for s, p in zip(frame["step"], frame["prompt"], strict=True)]
    short = []
    for step, prompt in long:
        question = prompt.split("\n")[0].removeprefix("Question:").strip()
        words = question.split()
        if 4 <= len(words) <= 20:
            short.append((step, question))
    return {"short": short, "long": long}


class Connection:
    """One keep-alive HTTP/1.1 connection posting JSON to ``/v1/route``; reconnects if dropped."""

    def __init__(self, url: str) -> None:
        host_port = url.removeprefix("http://").split("/")[0]
        self.host, port = host_port.split(":")
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def route(self, step: str, text: str) -> str:
        """One decision: its HTTP status, or ``"dropped"`` when the connection broke."""
        body = json.dumps({"step": step, "input": text}).encode()
        head = (
            f"POST /v1/route HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None
            self.writer.write(head + body)
            status_line = await self.reader.readline()
            length = 0
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await self.reader.readexactly(length)
            return status_line.split(b" ")[1].decode()
        except (OSError, asyncio.IncompleteReadError, IndexError) as exc:
            print(f"transport error: {exc!r}", file=sys.stderr)
            await self.close()
            return "dropped"

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def closed_loop(
    url: str, items: list[tuple[str, str]], clients: int, seconds: float, offset: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}  # by status ("503", "dropped", ...)
    counter = iter(range(offset, offset + 10**9))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        connection = Connection(url)
        while time.perf_counter() < deadline:
            step, text = items[next(counter) % len(items)]
            started = time.perf_counter()
            status = await connection.route(step, text)
            if status != "200":
                errors[status] = errors.get(status, 0) + 1
            latencies.append(time.perf_counter() - started)
        await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "decisions_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


async def open_loop(
    url: str, items: list[tuple[str, str]], rate: float, seconds: float, offset: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}  # by status ("503", "dropped", ...)
    n = int(rate * seconds)
    idle: list[Connection] = []

    async def one(i: int) -> None:
        step, text = items[(offset + i) % len(items)]
        connection = idle.pop() if idle else Connection(url)
        started = time.perf_counter()
        status = await connection.route(step, text)
        if status != "200":
            errors[status] = errors.get(status, 0) + 1
        latencies.append(time.perf_counter() - started)
        idle.append(connection)

    tasks = []
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    for connection in idle:
        await connection.close()
    return {
        "rate_per_s": rate,
        "requests": n,
        "errors": errors,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def embedder_settings(kind: str | None) -> dict[str, Any]:
    """Sidecar settings serving the speed router of ``kind`` (None: the bundled router)."""
    if kind is None:
        return {}
    from benchmarks.bench_embedders import ensure_artefacts
    from router.settings import RouterSettings

    folder = RESULTS / "embedders" / kind / "speed_router"
    if not (folder / "router.json").exists():
        raise SystemExit(f"no router for {kind}: run benchmarks/bench_embedders.py --only speed")
    cache_dir = Path(RouterSettings().cache_dir).resolve()
    ensure_artefacts([kind], cache_dir)
    # OpenAI-compatible upstreams, as in production (never called by /v1/route): without them
    # the sidecar answers from the bundled replay data, ~300 MiB that is no part of the router
    nowhere = {"base_url": "http://127.0.0.1:9/v1", "model": "unused"}
    tiers = json.loads((folder / "router.json").read_text())["tiers"]
    return {
        "model_uri": str(folder),
        "cache_dir": str(cache_dir),
        "upstreams": {tier: nowhere for tier in tiers},
    }


def bench_route(workdir: Path, seconds: float, kind: str | None) -> dict[str, Any]:
    from benchmarks.bench_embedders import process_memory

    data = inputs()
    settings = {"feedback_url": f"sqlite:///{workdir / 'fb.db'}", **embedder_settings(kind)}
    sidecar = Sidecar(workdir, settings).start()
    if kind is None:  # the router that ships in the package, with whatever embedder it has
        from router.registry import bundled_router_path

        meta = json.loads((bundled_router_path() / "router.json").read_text())
        out: dict[str, Any] = {"embedder": f"{meta['embedder']['kind']} (bundled router)"}
    else:
        out = {"embedder": kind}
    out |= {"closed_loop": {}, "open_loop": {}}
    offset = 0
    try:
        asyncio.run(closed_loop(sidecar.url, data["short"], 4, 2.0, 10**6))  # warm-up
        for kind in ("short", "long"):
            rows = []
            for clients in (1, 4, 16, 32):
                row = asyncio.run(closed_loop(sidecar.url, data[kind], clients, seconds, offset))
                offset += row["requests"]
                rows.append(row)
                print(f"route {kind:5s} clients={clients:2d}: {row}", flush=True)
            out["closed_loop"][kind] = rows
        rows = []
        for rate in (10, 25, 50):
            row = asyncio.run(open_loop(sidecar.url, data["long"], rate, seconds, offset))
            offset += row["requests"]
            rows.append(row)
            print(f"route long rate={rate}/s: {row}", flush=True)
        out["open_loop"]["long"] = rows
        out["sidecar_memory"] = process_memory(sidecar.process.pid if sidecar.process else None)
        problems = [
            line
            for line in sidecar.log().splitlines()
            if '"level": "warning"' in line or '"level": "error"' in line or "Error" in line
        ]
        if problems:
            print("sidecar log warnings/errors:\n" + "\n".join(problems[-20:]), flush=True)
        print(f"sidecar memory: {out['sidecar_memory']}", flush=True)
    finally:
        sidecar.stop()
    return out


def bench_overhead(workdir: Path, n: int, kind: str | None) -> dict[str, Any]:
    data = inputs()["short"][:n]
    llama = LlamaServer(workdir / "llama.log").start()
    settings = {
        **{k: v for k, v in embedder_settings(kind).items() if k != "upstreams"},
        "feedback_url": f"sqlite:///{workdir / 'fb-overhead.db'}",
        "upstreams": {
            "llama-3.1-8b-instruct": {
                "base_url": llama.base_url,
                "model": llama.model_alias,
                "max_tokens": 16,
            },
            "gpt-4o-2024-05-13": {"base_url": llama.base_url, "model": llama.model_alias},
        },
        "small_timeout_s": 60,
    }
    sidecar = Sidecar(workdir, settings).start()
    direct, through = [], []
    try:
        with httpx.Client(timeout=120) as http:

            def ask_llama(messages: list[dict[str, str]]) -> httpx.Response:
                body = {
                    "model": llama.model_alias,
                    "messages": messages,
                    "max_tokens": 16,
                    "temperature": 0,
                }
                return http.post(f"{llama.base_url}/chat/completions", json=body)

            for _, text in data[:3]:  # warm both paths
                ask_llama([{"role": "user", "content": text}])
            for step, text in data:
                messages = [{"role": "user", "content": text}]
                # llama.cpp reuses the KV cache of the previous prompt: a first call puts this
                # prompt there, so both timed calls below start from the same warm state
                ask_llama(messages)
                t0 = time.perf_counter()
                r1 = ask_llama(messages)
                t1 = time.perf_counter()
                r2 = http.post(
                    f"{sidecar.url}/v1/chat/completions",
                    json={"model": f"cascade:{step}:share=0", "messages": messages},
                )
                t2 = time.perf_counter()
                assert r1.status_code == 200 and r2.status_code == 200, (r1.text, r2.text)
                assert r2.headers["x-cascade-path"] == "small>verified"
                direct.append(t1 - t0)
                through.append(t2 - t1)
    finally:
        sidecar.stop()
        llama.stop()
    diff = [b - a for a, b in zip(direct, through, strict=True)]
    return {
        "requests": len(diff),
        "direct_p50_ms": percentile(direct, 50) * 1000,
        "direct_p99_ms": percentile(direct, 99) * 1000,
        "sidecar_p50_ms": percentile(through, 50) * 1000,
        "sidecar_p99_ms": percentile(through, 99) * 1000,
        "overhead_p50_ms": percentile(diff, 50) * 1000,
        "overhead_p99_ms": percentile(diff, 99) * 1000,
        "overhead_mean_ms": statistics.fmean(diff) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["route", "overhead"])
    parser.add_argument("--seconds", type=float, default=10.0, help="per load point")
    parser.add_argument("--requests", type=int, default=100, help="overhead: paired requests")
    parser.add_argument(
        "--embedder", choices=["minilm", "static", "onnx", "onnx-int8"], help="route: embedder"
    )
    args = parser.parse_args()
    path = RESULTS / "sidecar.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.only in (None, "route"):
            key = args.embedder or "bundled"
            results.setdefault("route", {})[key] = bench_route(workdir, args.seconds, args.embedder)
            results["route"][key]["command"] = " ".join(
                ["python benchmarks/bench_sidecar.py", *sys.argv[1:]]
            )
        if args.only in (None, "overhead"):
            key = args.embedder or "bundled"
            row = bench_overhead(workdir, args.requests, args.embedder)
            row["embedder"] = args.embedder or "minilm (bundled router)"
            row["command"] = " ".join(["python benchmarks/bench_sidecar.py", *sys.argv[1:]])
            results.setdefault("overhead", {})[key] = row
            print(f"overhead: {row}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
