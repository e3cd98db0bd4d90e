"""Per embedder: routing quality, decision latency, SDK batch throughput, memory.

    python benchmarks/bench_embedders.py                        # everything, every kind
    python benchmarks/bench_embedders.py --only speed           # latency/throughput/RSS only
    python benchmarks/bench_embedders.py --only quality --kinds static --runs gsm8k_mixtral_gpt4
    python benchmarks/bench_embedders.py --render               # print the README tables

Quality: the router-core runs of ``bench_router.py`` (same data, same seeded splits, same
target and bootstrap), retrained with each embedder. Speed: one router per embedder trained
on 4,000 MMLU-Pro prompts (as ``bench_router.py --only overhead``), then, each embedder in a
fresh process pinned to one thread (torch, onnxruntime, LightGBM, BLAS): p50/p99 of one
``Router.decide`` at a time on short and on long inputs (LRU off: every input is new), the
same on a repeated input (LRU hit), ``decide_batch`` throughput, and the process's resident
memory once the router is loaded and warm. Results: ``results/embedders.json``.

Missing artefacts are built first (``cascade-router embedders build ...``) into
``CASCADE_CACHE_DIR``. For the sidecar, :func:`process_memory` and :func:`drive` measure a
running server's memory and decisions per second (see their docstrings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
if str(ROOT.parent) not in sys.path:  # this checkout's packages, not an installed copy
    sys.path.insert(0, str(ROOT.parent))
RESULTS = ROOT / "results"
OUT = RESULTS / "embedders.json"
KINDS = ("minilm", "onnx", "onnx-int8", "static")
SHORT = (
    "Book me a table for two at 7pm tomorrow.",
    "What's the weather in Paris?",
    "Cancel my last order please.",
    "Translate 'good morning' to German.",
)


# ---------------------------------------------------------------------- helpers for anyone
def process_memory(pid: int | None = None) -> dict[str, float]:
    """Resident memory of a process in MiB: now (VmRSS) and its peak so far (VmHWM). Linux."""
    fields: dict[str, float] = {}
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[{"VmRSS": "rss_mib", "VmHWM": "peak_rss_mib"}[key]] = round(
                int(value.split()[0]) / 1024, 1
            )
    return fields


async def drive(
    call: Callable[[int], Awaitable[Any]], n_requests: int, concurrency: int = 32
) -> dict[str, float]:
    """Send ``n_requests`` through ``call(i)`` with ``concurrency`` clients; decisions/s, p50/p99.

    For the sidecar: ``call`` posts request ``i`` to ``/v1/route`` (e.g. with one shared
    ``httpx.AsyncClient``), and :func:`process_memory` (server pid) gives its memory.
    """
    latencies: list[float] = []
    next_index = iter(range(n_requests))

    async def client() -> None:
        for i in next_index:
            t = time.perf_counter()
            await call(i)
            latencies.append(1000 * (time.perf_counter() - t))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "requests": n_requests,
        "concurrency": concurrency,
        "per_s": round(n_requests / wall, 1),
        **_percentiles(latencies),
    }


def _percentiles(times_ms: Sequence[float]) -> dict[str, float]:
    import numpy as np

    return {
        "p50_ms": round(statistics.median(times_ms), 3),
        "p99_ms": round(float(np.percentile(times_ms, 99)), 3),
        "n": len(times_ms),
    }


# ---------------------------------------------------------------------- building
def ensure_artefacts(kinds: Sequence[str], cache_dir: Path) -> dict[str, str]:
    """Build the missing artefacts of ``kinds``; returns artefact name -> sha256."""
    from router.embedders import ONNX_ARTEFACT, ONNX_INT8_ARTEFACT, STATIC_ARTEFACT, artefact_root
    from router.embedders.build import build_onnx, build_static

    wanted = {"static": STATIC_ARTEFACT, "onnx": ONNX_ARTEFACT, "onnx-int8": ONNX_INT8_ARTEFACT}
    hashes = {}
    for kind in kinds:
        if kind not in wanted:
            continue
        folder = artefact_root(cache_dir) / wanted[kind]
        if not (folder / "artefact.json").exists():
            print(f"building {folder}")
            if kind == "static":
                build_static(cache_dir)
            else:
                build_onnx(cache_dir, int8=kind == "onnx-int8")
        hashes[wanted[kind]] = json.loads((folder / "artefact.json").read_text())["sha256"]
    return hashes


# ---------------------------------------------------------------------- quality
def quality(
    kinds: Sequence[str],
    runs: Sequence[str],
    save: Callable[[dict[str, Any]], None] = lambda results: None,
) -> dict[str, dict[str, Any]]:
    """The bench_router runs retrained with each embedder (same splits, target, bootstrap).

    ``save`` receives ``{"quality": ...}`` after every run, so an interrupted run keeps its
    finished parts.
    """
    sys.path.insert(0, str(ROOT))
    from bench_router import RUNS, _headline

    from router.policy import Target
    from router.settings import RouterSettings
    from training.pipeline import TrainConfig, train_and_evaluate

    out: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        settings = RouterSettings(embedder=kind, progress=False)
        for name in runs:
            spec = RUNS[name]
            config = TrainConfig(
                data=spec["data"],
                tiers=spec["tiers"],
                target=Target(quality_ratio=0.95),
                output_dir=RESULTS / "embedders" / kind / name,
                bootstrap=200,
            )
            t = time.perf_counter()
            result = train_and_evaluate(config, settings, log=lambda m, k=kind, n=name: None)
            head = _headline(result.report)
            head["embedder"] = result.model.embedder_name_
            head["roc_auc"] = result.report.get("roc_auc")
            head["timings"] = result.report["timings"]
            head["wall_s"] = round(time.perf_counter() - t, 1)
            out.setdefault(kind, {})[name] = head
            save({"quality": {kind: {name: head}}})
            print(
                f"[{kind}] {name}: cascade APGR {head['cascade_apgr']} "
                f"router (pre) {head['router_pre_answer_apgr']} ({head['wall_s']} s)",
                flush=True,
            )
    return out


# ---------------------------------------------------------------------- speed (per process)
def speed_router(kind: str) -> Path:
    """A router per embedder trained as bench_router's overhead router (4,000 MMLU-Pro)."""
    from router.settings import RouterSettings
    from training.pipeline import TrainConfig, train_and_evaluate

    folder = RESULTS / "embedders" / kind / "speed_router"
    if not (folder / "router.json").exists():
        result = train_and_evaluate(
            TrainConfig(
                tiers=["llama-3.1-8b-instruct", "gpt-4o-2024-05-13"],
                sample=4000,
                bootstrap=0,
                baselines=False,
                output_dir=RESULTS / "embedders" / kind / "speed",
            ),
            RouterSettings(embedder=kind, progress=False),
            log=lambda m: None,
        )
        result.model.save(folder)
    return folder


def speed_child(kind: str, folder: Path, n: int) -> dict[str, Any]:
    """Runs in a fresh process with every thread pool at one thread (see main)."""
    memory_start = process_memory()
    import numpy as np

    from router.embedders import build_embedder
    from router.model import CascadeModel
    from router.sdk import Router
    from router.settings import RouterSettings

    if kind == "minilm":
        import torch

        torch.set_num_threads(1)
    settings = RouterSettings()
    t = time.perf_counter()
    model = CascadeModel.load(folder, num_threads=1)
    base = build_embedder(model.embedder_ref_, cache_dir=settings.cache_dir, threads=1)
    router = Router(model, embedder=base, lru_size=0)
    router.decide("math", "warm-up: load every model and tokenizer")
    load_s = time.perf_counter() - t
    memory_loaded = process_memory()

    from router.data import OutcomeTable, bundled_dataset, load_outcomes  # pandas: after RSS

    tiers = list(model.tiers)
    frame = load_outcomes([bundled_dataset("mmlu_pro")], models=tiers)
    tokenizer = _tokenizer()
    prompts = OutcomeTable.from_long(frame, tiers).sample(4000, seed=5).prompts
    # long: MMLU-Pro prompts of about 300 tokens (250-400); the router reads their window
    long = [x for x in prompts if 250 <= len(tokenizer.encode(x).ids) <= 400][:n]
    if len(long) < n:
        raise RuntimeError(f"only {len(long)} MMLU-Pro prompts of 250-400 tokens")
    short = [SHORT[i % len(SHORT)] + f" (#{i})" for i in range(n)]

    def timed(fn: Callable[[Any], Any], inputs: Sequence[Any]) -> dict[str, float]:
        times = []
        for x in inputs:
            t0 = time.perf_counter()
            fn(x)
            times.append(1000 * (time.perf_counter() - t0))
        return _percentiles(times)

    res: dict[str, Any] = {
        "embedder": model.embedder_name_,
        "threads": 1,
        "load_s": round(load_s, 2),
        "short_tokens_median": int(np.median([len(tokenizer.encode(x).ids) for x in short])),
        "long_tokens_median": int(np.median([len(tokenizer.encode(x).ids) for x in long])),
        "decision_short": timed(lambda x: router.decide("intent", x), short),
        "decision_long": timed(lambda x: router.decide("math", x), long),
        "embedding_only_short": timed(lambda x: base.encode([x]), short),
        "embedding_only_long": timed(lambda x: base.encode([x]), long),
    }
    cached = Router(model, embedder=base, lru_size=1024)
    cached.decide("math", long[0])
    res["decision_long_lru_hit"] = timed(lambda x: cached.decide("math", x), [long[0]] * n)
    X = model.input_matrix(["math"], [long[0]], base.encode([long[0]]))
    res["boosters_only"] = timed(lambda _: model.pre_probabilities(X), range(n))
    res["batch"] = {}
    for label, inputs in (("short", short), ("long", long)):
        for size in (1, 32, 128):
            batches = [inputs[i : i + size] for i in range(0, len(inputs) - size + 1, size)]
            t0 = time.perf_counter()
            done = 0
            for batch in batches:
                done += len(router.decide_batch(["math"] * len(batch), batch))
            res["batch"][f"{label}_x{size}_per_s"] = round(done / (time.perf_counter() - t0), 1)
    res["memory_loaded"] = memory_loaded
    res["memory_start"] = memory_start
    res["memory_end"] = process_memory()
    return res


def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    from router.embedders import packaged_minilm_path

    tok = Tokenizer.from_file(str(packaged_minilm_path() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def speed(kinds: Sequence[str], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in kinds:
        folder = speed_router(kind)
        env = os.environ | {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        cmd = [sys.executable, __file__, "--child", kind, str(folder), "--n", str(n)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} speed run failed:\n{proc.stderr[-3000:]}")
        out[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = out[kind]
        print(
            f"[{kind}] short p50 {r['decision_short']['p50_ms']} ms, long p50 "
            f"{r['decision_long']['p50_ms']} ms, batch x32 long {r['batch']['long_x32_per_s']}/s, "
            f"RSS {r['memory_loaded']['rss_mib']} MiB",
            flush=True,
        )
    if "minilm" in out:
        base = out["minilm"]
        for r in out.values():
            r["ratio_to_minilm"] = {
                key: round(r[key]["p50_ms"] / base[key]["p50_ms"], 4)
                for key in ("decision_short", "decision_long")
            }
    return out


# ---------------------------------------------------------------------- report
def render(results: dict[str, Any]) -> str:
    """The Markdown tables of benchmarks/README.md."""
    lines = []
    q = results.get("quality", {})
    if q:
        runs = list(dict.fromkeys(run for kind in KINDS for run in q.get(kind, {})))
        lines += [
            "| embedder | " + " | ".join(runs) + " |",
            "| --- |" + " --- |" * len(runs),
        ]
        for kind in KINDS:
            if kind not in q:
                continue
            cells = []
            for run in runs:
                h = q[kind].get(run)
                if not h:
                    cells.append("—")
                    continue
                ref = q.get("minilm", {}).get(run)
                delta = (
                    f" (Δ {h['cascade_apgr'] - ref['cascade_apgr']:+.3f})"
                    if ref and kind != "minilm"
                    else ""
                )
                ci = h.get("cascade_ci")
                ci_s = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
                cells.append(
                    f"{h['cascade_apgr']:.3f}{ci_s}{delta} / {h['router_pre_answer_apgr']:.3f}"
                )
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        lines.append("")
    s = results.get("speed", {})
    if s:
        lines += [
            "| embedder | short p50 / p99 ms | long p50 / p99 ms | × MiniLM (short, long p50) "
            "| LRU hit p50 ms | batch ×32 decisions/s (short, long) | RSS loaded MiB |",
            "| --- | --- | --- | --- | ---: | --- | ---: |",
        ]
        for kind in KINDS:
            if kind not in s:
                continue
            r = s[kind]
            ds, dl, ratio = r["decision_short"], r["decision_long"], r.get("ratio_to_minilm", {})
            lines.append(
                f"| {kind} | {ds['p50_ms']:.2f} / {ds['p99_ms']:.2f} | "
                f"{dl['p50_ms']:.2f} / {dl['p99_ms']:.2f} | "
                f"{ratio.get('decision_short', float('nan')):.3f}, "
                f"{ratio.get('decision_long', float('nan')):.3f} | "
                f"{r['decision_long_lru_hit']['p50_ms']:.3f} | "
                f"{r['batch']['short_x32_per_s']:,.0f}, {r['batch']['long_x32_per_s']:,.0f} | "
                f"{r['memory_loaded']['rss_mib']:.0f} |"
            )
    return "\n".join(lines)


def save(update: dict[str, Any]) -> None:
    """Merge ``update`` into results/embedders.json (per section and embedder; runs add up)."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    latest: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {}
    for key, value in update.items():
        if key not in ("quality", "speed"):
            latest[key] = value
            continue
        for kind, per_kind in value.items():
            latest.setdefault(key, {}).setdefault(kind, {}).update(per_kind)
    OUT.write_text(json.dumps(latest, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["quality", "speed"], default=None)
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--runs", nargs="*", default=None, help="bench_router run names")
    parser.add_argument("--n", type=int, default=300, help="requests per latency measurement")
    parser.add_argument("--render", action="store_true", help="print the tables and stop")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "ROUTER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(speed_child(args.child[0], Path(args.child[1]), args.n)))
        return
    if args.render:
        print(render(json.loads(OUT.read_text())))
        return
    results: dict[str, Any] = {}  # this run's figures, merged into OUT by save()
    from router.settings import RouterSettings

    sys.path.insert(0, str(ROOT))
    from bench_router import RUNS

    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }
    results["artefacts"] = ensure_artefacts(args.kinds, RouterSettings().cache_dir)
    if args.only in (None, "quality"):
        quality(args.kinds, args.runs or list(RUNS), save=save)
    if args.only in (None, "speed"):
        results["speed"] = speed(args.kinds, args.n)
        results["speed_command"] = " ".join(["python benchmarks/bench_embedders.py", *sys.argv[1:]])
    save(results)
    print(render(json.loads(OUT.read_text())))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
