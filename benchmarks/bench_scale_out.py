"""Sidecar replicas behind HAProxy: throughput with 1 and 2 replicas, a replica killed under load,
and the time a promotion takes to reach every replica.

    python benchmarks/bench_scale_out.py                       # everything (~10 min here)
    python benchmarks/bench_scale_out.py --only throughput
    python benchmarks/bench_scale_out.py --only kill

The profile is the documented one, started by its own script (``examples/scale-out/run.sh
--replicas 2``) against a PostgreSQL server and an MLflow tracking server started here (the
tests' ``tests/support/services.py``); both replicas serve the router that ships in the package
(static embedder) from the registry's ``@champion``.

* throughput: ``/v1/route`` decisions per second through the balancer, closed loop (the
  asyncio load generator of ``bench_sidecar.py``, keep-alive connections, every input new),
  short and MMLU-Pro-length inputs, with one replica (the second put in maintenance through
  HAProxy's runtime API, idle) and with two, alternated ``--rounds`` times; and one replica
  without the balancer.  Load generator, HAProxy and replicas share this machine's cores.
* kill: mixed traffic (chat completions, decisions, streamed chat completions, feedback
  labels) from ``--clients`` threads through the balancer, the first replica SIGKILLed after
  ``--kill-after`` seconds; failures as clients saw them (and whether a replica's response had
  begun), model calls made twice (the upstream is an OpenAI-protocol stand-in that records
  calls and answers after ``--upstream-delay`` seconds, a model's latency), feedback labels
  acknowledged and found in PostgreSQL.  ``--kills`` times (each on a fresh profile) with chat
  completions retried (the profile's default), and as often with
  ``CASCADE_LB_NO_CHAT_RETRY=1``.
* promotion: the seconds from moving ``@champion`` until each replica serves the new version
  (replicas check every ``reload_interval_s``, 5 s in ``replica.toml``), ``--promotions`` times.

Results: ``benchmarks/results/scale_out.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "scale_out.json"
NAME = "scale-out-bench"
SMALL, FRONTIER = "llama-3.1-8b-instruct", "gpt-4o-2024-05-13"

from benchmarks.bench_sidecar import closed_loop, inputs  # noqa: E402
from tests.support.openai_server import OpenAIStubServer  # noqa: E402
from tests.support.scale_out import MixedTraffic, ScaleOutProfile  # noqa: E402
from tests.support.services import MlflowServer, PostgresServer, haproxy_command  # noqa: E402


def register_bundled(settings: Any) -> str:
    import mlflow

    from router.registry import bundled_router_path
    from training.registry import log_router, open_tracking

    open_tracking(settings)
    with mlflow.start_run() as run:
        info = log_router(bundled_router_path(), run=run, input_example=None, registered_model=NAME)
    return str(info.registered_model_version)


def profile_env(
    mlflow_url: str, feedback_url: str, upstream: OpenAIStubServer | None, **extra: str
) -> dict[str, str]:
    mine = ("CASCADE_", "MLFLOW_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(mine)}
    env |= {
        "PYTHON": sys.executable,
        "PYTHONPATH": str(ROOT),
        "CASCADE_FEEDBACK_URL": feedback_url,
        "CASCADE_TRACKING_URI": mlflow_url,
        "CASCADE_REGISTERED_MODEL": NAME,
        "CASCADE_LOG_LEVEL": "warning",
        **extra,
    }
    if "CASCADE_CACHE_DIR" in os.environ:
        env["CASCADE_CACHE_DIR"] = os.environ["CASCADE_CACHE_DIR"]
    if upstream is not None:
        env["CASCADE_UPSTREAMS"] = json.dumps(
            {tier: {"base_url": upstream.base_url} for tier in (SMALL, FRONTIER)}
        )
    return env


def set_replica(profile: ScaleOutProfile, name: str, enabled: bool) -> None:
    verb = "enable" if enabled else "disable"
    haproxy_command(profile.state["LB_SOCKET"], f"{verb} server replicas/{name}")


def throughput(profile: ScaleOutProfile, seconds: float, rounds: int, clients: int) -> dict:
    data = inputs()
    offset = 0
    rows: list[dict[str, Any]] = []

    def run(url: str, kind: str) -> dict[str, Any]:
        nonlocal offset
        row = asyncio.run(closed_loop(url, data[kind], clients, seconds, offset))
        offset += row["requests"]
        return row

    asyncio.run(closed_loop(profile.lb_url, data["short"], 8, 2.0, 10**6))  # warm both
    for round_ in range(rounds):
        for kind in ("short", "long"):
            for replicas in (1, 2):
                set_replica(profile, "r2", enabled=replicas == 2)
                time.sleep(1.0)
                row = run(profile.lb_url, kind) | {"replicas": replicas, "round": round_}
                rows.append(row | {"kind": kind, "via": "haproxy"})
                print(f"throughput {kind} replicas={replicas}: {row}", flush=True)
            set_replica(profile, "r2", enabled=True)
            direct = run(profile.replica_urls[0], kind) | {"replicas": 1, "round": round_}
            rows.append(direct | {"kind": kind, "via": "direct"})
            print(f"throughput {kind} direct: {direct}", flush=True)
    summary: dict[str, Any] = {}
    for kind in ("short", "long"):
        for label, via, replicas in (
            ("1 replica", "haproxy", 1),
            ("2 replicas", "haproxy", 2),
            ("1 replica, no balancer", "direct", 1),
        ):
            picked = [
                r["decisions_per_s"]
                for r in rows
                if r["kind"] == kind and r["via"] == via and r["replicas"] == replicas
            ]
            summary[f"{kind}: {label}"] = round(statistics.median(picked), 1)
        ratio = summary[f"{kind}: 2 replicas"] / summary[f"{kind}: 1 replica"]
        summary[f"{kind}: ratio 2/1"] = round(ratio, 2)
    return {"clients": clients, "seconds": seconds, "rows": rows, "median": summary}


def kill(profile: ScaleOutProfile, upstream: OpenAIStubServer, feedback_url: str, args) -> dict:
    from router.data import bundled_dataset, load_outcomes
    from router.feedback import FeedbackStore

    frame = load_outcomes([bundled_dataset("mmlu_pro")], models=[FRONTIER])
    prompts = [p.split("\n")[0] for p in frame["prompt"].drop_duplicates().head(2000)]
    before = len(upstream.requests)
    with MixedTraffic(profile.lb_url, clients=args.clients, prompts=prompts) as traffic:
        time.sleep(args.kill_after)
        killed_at = profile.kill_replica(0)
        time.sleep(args.kill_after)
    outcomes = traffic.outcomes
    failed = [o for o in outcomes if not o.ok]
    in_flight = [o for o in outcomes if o.in_flight_at(killed_at)]
    calls = Counter(
        (body["model"], body["messages"][-1]["content"]) for body in upstream.requests[before:]
    )
    acknowledged = [o.labelled for o in outcomes if o.kind == "feedback" and o.ok and o.labelled]
    with FeedbackStore(feedback_url) as store:
        lost = sum(
            1
            for rid, accepted in acknowledged
            if (label := store.get_feedback(rid)) is None or label.accepted != accepted
        )
    return {
        "requests": len(outcomes),
        "by_kind": dict(Counter(o.kind for o in outcomes)),
        "in_flight_at_kill": dict(Counter(o.kind for o in in_flight)),
        "failed": dict(Counter(o.kind for o in failed)),
        "failed_status": dict(Counter(str(o.status) for o in failed)),
        "failed_after_response_began": sum(o.response_started for o in failed),
        "failed_other": sum(not o.response_started for o in failed),
        "errors": sorted({str(o.error)[:100] for o in failed}),
        "model_calls": sum(calls.values()),
        "model_calls_repeated": sum(n - 1 for n in calls.values() if n > 1),
        "labels_acknowledged": len(acknowledged),
        "labels_lost": lost,
        "lb_states_after": profile.server_states(),
    }


def _totals(runs: list[dict[str, Any]]) -> dict[str, int]:
    """Sums over the kill runs of what is counted."""
    keys = ("requests", "failed_after_response_began", "failed_other", "model_calls")
    keys += ("model_calls_repeated", "labels_acknowledged", "labels_lost")
    totals = {k: sum(int(r[k]) for r in runs) for k in keys}
    totals["chat_in_flight_at_kill"] = sum(
        int(r["in_flight_at_kill"].get("chat", 0)) + int(r["in_flight_at_kill"].get("stream", 0))
        for r in runs
    )
    totals["failed"] = sum(sum(r["failed"].values()) for r in runs)
    return totals


def promotion(profile: ScaleOutProfile, settings: Any, versions: list[str], times: int) -> dict:
    from router.registry import registry_client
    from training.registry import promote_version

    client = registry_client(settings.tracking_uri)
    rows = []
    for k in range(times):
        target = versions[(k + 1) % len(versions)]
        promote_version(NAME, target, client=client)
        start = time.monotonic()
        reached: dict[int, float] = {}
        while len(reached) < len(profile.replica_urls):
            for i, seen in enumerate(profile.serving_versions()):
                if seen == target and i not in reached:
                    reached[i] = round(time.monotonic() - start, 2)
            if time.monotonic() - start > 120:
                raise SystemExit(f"version {target} did not reach every replica in 120 s")
            time.sleep(0.05)
        rows.append([reached[i] for i in sorted(reached)])
        print(f"promotion to {target}: {rows[-1]} s", flush=True)
    every = [t for row in rows for t in row]
    return {
        "reload_interval_s": 5.0,
        "seconds_per_replica": rows,
        "all_replicas_s": {
            "median": round(statistics.median(max(r) for r in rows), 2),
            "max": max(every),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["throughput", "kill", "promotion"])
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput point")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--route-clients", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8, help="kill: client threads")
    parser.add_argument("--kill-after", type=float, default=5.0)
    parser.add_argument("--kills", type=int, default=3, help="kills per retry setting")
    parser.add_argument("--upstream-delay", type=float, default=0.5, help="model latency (s)")
    parser.add_argument("--promotions", type=int, default=4)
    args = parser.parse_args()
    from router.settings import RouterSettings

    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_1min_at_start": round(os.getloadavg()[0], 1),
    }
    command = " ".join(["python benchmarks/bench_scale_out.py", *sys.argv[1:]])
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-out-") as tmp,
        PostgresServer() as postgres,
        MlflowServer() as mlflow_server,
        OpenAIStubServer(
            responder=lambda messages: "The answer is (B).",
            models=[SMALL, FRONTIER],
            delay_s=args.upstream_delay,
        ) as upstream,
    ):
        work = Path(tmp)
        settings = RouterSettings(
            tracking_uri=mlflow_server.url, experiment=NAME, registered_model=NAME
        )
        from router.registry import registry_client
        from training.registry import promote_version

        versions = [register_bundled(settings), register_bundled(settings)]
        promote_version(NAME, versions[0], client=registry_client(settings.tracking_uri))
        if args.only in (None, "throughput", "promotion"):
            url = postgres.create_database("bench_main")
            # upstream model servers as in production (a router without them would load the
            # bundled replay data with every version it swaps in)
            env = profile_env(mlflow_server.url, url, upstream)
            with ScaleOutProfile(work / "main", env, replicas=2) as profile:
                if args.only in (None, "throughput"):
                    results["throughput"] = throughput(
                        profile, args.seconds, args.rounds, args.route_clients
                    ) | {"command": command}
                if args.only in (None, "promotion"):
                    results["promotion"] = promotion(
                        profile, settings, versions, args.promotions
                    ) | {"command": command}
        if args.only in (None, "kill"):
            results["kill"] = {"command": command, "upstream_delay_s": args.upstream_delay}
            n = 0
            for label, extra in (
                ("chat retried (default)", {}),
                ("chat not retried", {"CASCADE_LB_NO_CHAT_RETRY": "1"}),
            ):
                runs = []
                for _ in range(args.kills):
                    n += 1
                    url = postgres.create_database(f"bench_kill_{n}")
                    env = profile_env(mlflow_server.url, url, upstream, **extra)
                    with ScaleOutProfile(work / f"kill-{n}", env) as profile:
                        row = kill(profile, upstream, url, args)
                    runs.append(row)
                    print(f"kill, {label}: {json.dumps(row)}", flush=True)
                results["kill"][label] = {"runs": runs, "total": _totals(runs)}
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
