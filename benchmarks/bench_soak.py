"""Soak with faults: Locust (headless) against a sidecar with real upstreams, for a bounded time.

    .venv/bin/python benchmarks/bench_soak.py                      # 10 minutes (the benchmark)
    .venv/bin/python benchmarks/bench_soak.py --duration 60 --out DIR --no-save   # the suite's

What runs, all on 127.0.0.1: SmolLM2-135M-Instruct on llama.cpp's server (the small tier),
``cascade-router standin`` replaying GPT-4o's recorded answers (the frontier), an MLflow
SQLite registry whose ``@champion`` alias the sidecar follows, and ``cascade-router serve``
over them with its feedback store in SQLite.  Locust's users (``soak_locustfile.py``) send
recorded MMLU-Pro prompts and label every second answer through ``/v1/feedback``.

After a warm-up under load (10 % of the duration, at least 15 s; reported apart), the faults
come in phases whose least lengths are fractions of the nominal duration: load for 15 %;
the small upstream killed (SIGKILL) for 10 %, then restarted on its port; load for 20 % from
the moment it listens again; killed and restarted again the same way; load for 20 %; then a
new router version is promoted in the registry (the alias moves), the sidecar hot-reloads it,
and the load goes on for 25 % (and at least until the nominal duration has passed).  A slow
restart lengthens the run rather than shortening the windows after it; the real moments are
in the report.

Reported (printed, and saved to benchmarks/results/soak.json unless ``--no-save``): requests,
failures (anything but a 200, apart from the 503 ``overloaded`` refusals of
``max_concurrency``, which are counted on their own), p50/p99 latency of the answered requests
in each window between the faults (by request start time: a request in flight when the
upstream dies counts in the window it started in), the cascade paths taken per window, the
sidecar's resident memory (MiB) at the start and the end of the load and its peak, and the
labels posted vs found in the feedback store (and answered requests vs stored rows).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
LOCUSTFILE = Path(__file__).with_name("soak_locustfile.py")

from tests.support.processes import LlamaServer, Sidecar, _Process, free_port  # noqa: E402

SMALL, FRONTIER = "llama-3.1-8b-instruct", "gpt-4o-2024-05-13"
REGISTERED = "soak-router"
API_KEY = "soak-key"
#: How long each phase lasts at least, as a fraction of the nominal duration; a phase that
#: follows a restart or a reload starts when that is complete, so a slow restart lengthens the
#: run instead of shortening the windows after it.
BEFORE, DOWN, BACK, AFTER_RELOAD = 0.15, 0.10, 0.20, 0.25
KILLS = 2


class Standin(_Process):
    """``cascade-router standin`` replaying the frontier's recorded answers (no fallback: the
    soak prompts are all recorded, and the frontier must not depend on the small upstream)."""

    def __init__(self, workdir: Path, data: Path) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "training.cli", "standin", "--model", FRONTIER]
        args += ["--data", str(data), "--port", str(self.port)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        super().__init__(args, env, workdir / f"standin-{self.port}.log", ROOT)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 120.0) -> Standin:
        self._start()
        self._wait(f"{self.base_url}/models", timeout_s)
        return self


def restart_small(workdir: Path, port: int, timeout_s: float) -> LlamaServer:
    """The small upstream started again on its old port (the sidecar's config is unchanged).

    It is back once it accepts connections: llama.cpp's server listens after loading the
    model, and then answers the chat requests queued by the sidecar before anything else
    (even ``GET /models`` waits behind them), so no probe request is sent.
    """
    server = LlamaServer(workdir / "llama.log", port=port)
    server._start()
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return server
        if not server.running or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the small upstream did not restart:\n{server.log()[-3000:]}")
        time.sleep(0.1)


class RssSampler(threading.Thread):
    """Samples a process's resident set size (MiB) every ``interval_s``."""

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def read(self) -> float | None:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def run(self) -> None:
        while not self.stopped.is_set():
            value = self.read()
            if value is not None:
                self.samples.append((time.time(), value))
            self.stopped.wait(self.interval_s)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


@dataclass
class Timeline:
    """The moments of the run (wall clock), in order."""

    marks: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, name: str) -> float:
        now = time.time()
        self.marks.append((name, now))
        print(f"[soak] {now - self.marks[0][1]:7.1f} s  {name}", flush=True)
        return now


def soak_prompts(count: int = 200) -> tuple[list[list[str]], Path]:
    """The shortest MMLU-Pro prompts the frontier recorded (SmolLM2 answers them quickly)."""
    from router.data import bundled_dataset, load_outcomes

    data = bundled_dataset("mmlu_pro")
    frame = load_outcomes([data], models=[FRONTIER])
    frame = frame.assign(n=frame["prompt"].str.len()).sort_values("n").drop_duplicates("prompt")
    pairs = [[str(s), str(p)] for s, p in zip(frame["step"], frame["prompt"], strict=True)]
    return pairs[:count], Path(data)


def register_two_versions(workdir: Path) -> tuple[dict[str, str], str]:
    """An MLflow SQLite registry holding the bundled router twice; @champion on version 1.
    Returns the sidecar's registry settings and the version to promote later."""
    import mlflow

    from router.settings import RouterSettings
    from training import registry

    settings = RouterSettings(
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
        artifact_location=str(workdir / "mlruns"),
        experiment="soak",
        registered_model=REGISTERED,
    )
    folder = ROOT / "router" / "resources" / "router"
    versions = []
    client = registry.open_tracking(settings)
    for _ in range(2):
        with mlflow.start_run() as run:
            info = registry.log_router(
                folder, run=run, input_example=None, registered_model=REGISTERED
            )
        versions.append(str(info.registered_model_version))
    registry.set_alias(REGISTERED, "champion", versions[0], client)
    return {
        "tracking_uri": settings.tracking_uri,
        "artifact_location": str(settings.artifact_location),
        "registered_model": REGISTERED,
    }, versions[1]


def promote(registry_settings: dict[str, str], version: str) -> None:
    """Move @champion to ``version`` (what ``cascade-router promote`` does after its gate)."""
    from router.settings import RouterSettings
    from training import registry

    client = registry.open_tracking(RouterSettings(**registry_settings))  # type: ignore[arg-type]
    registry.set_alias(REGISTERED, "champion", version, client)


def served_version(url: str) -> str | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).json().get("router_version")
    except (httpx.HTTPError, ValueError):
        return None


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (None, None)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return round(cuts[49], 1), round(cuts[98], 1)


def summarise(rows: list[dict[str, str]], marks: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """Per window between consecutive marks: answered, refused, failed, p50/p99, paths."""
    t0 = marks[0][1]
    windows = []
    for (name, lo), (_, hi) in itertools.pairwise(marks):
        inside = [r for r in rows if lo <= float(r["start"]) < hi]
        chats = [r for r in inside if r["name"] == "chat"]
        ok = [r for r in chats if r["status"] == "200"]
        failed = [r for r in chats if r["status"] != "200"]
        p50, p99 = _percentiles([float(r["ms"]) for r in ok])
        windows.append(
            {
                "window": name,
                "from_s": round(lo - t0, 1),
                "to_s": round(hi - t0, 1),
                "answered": len(ok),
                "refused": sum(r["name"] == "chat [refused]" for r in inside),
                "failed": len(failed),
                "failures": dict(Counter(r["status"] + " " + r["error"] for r in failed)),
                "p50_ms": p50,
                "p99_ms": p99,
                "paths": dict(Counter(r["path"] for r in ok).most_common()),
                "versions": dict(Counter(r["version"] for r in ok)),
            }
        )
    return windows


def run_soak(
    duration_s: float,
    workdir: Path,
    users: int = 6,
    max_concurrency: int = 4,
    feedback_every: int = 2,
    warmup_s: float | None = None,
) -> dict[str, Any]:
    """Run the soak (see the module docstring) and return its report; ``warmup_s`` of load
    come first (default: 10 % of the duration, at least 15 s), measured apart."""
    warmup_s = max(15.0, 0.1 * duration_s) if warmup_s is None else warmup_s
    workdir.mkdir(parents=True, exist_ok=True)
    prompts, data = soak_prompts()
    prompts_file = workdir / "prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    registry_settings, next_version = register_two_versions(workdir)

    llama = LlamaServer(workdir / "llama.log").start()
    port = llama.port
    standin = Standin(workdir, data).start()
    sidecar = Sidecar(
        workdir,
        {
            **registry_settings,
            "feedback_url": f"sqlite:///{workdir / 'feedback.db'}",
            "api_keys": [API_KEY],
            "max_concurrency": max_concurrency,
            "reload_interval_s": 1.0,
            "small_timeout_s": 30,
            "upstreams": {
                SMALL: {"base_url": llama.base_url, "model": llama.model_alias, "max_tokens": 32},
                FRONTIER: {"base_url": standin.base_url},
            },
        },
    )
    servers: list[_Process] = [llama, standin, sidecar]
    rss: RssSampler | None = None
    timeline = Timeline()
    reloads = {"loaded": 0.0, "refused": 0.0}
    try:
        sidecar.start(timeout_s=300)
        assert sidecar.process is not None
        auth = {"Authorization": f"Bearer {API_KEY}"}
        for step, prompt in prompts[:3]:  # warm-up: the first requests build lazy clients
            body = {"model": f"cascade:{step}", "messages": [{"role": "user", "content": prompt}]}
            httpx.post(
                f"{sidecar.url}/v1/chat/completions", json=body, headers=auth, timeout=120
            ).raise_for_status()
        first_version = served_version(sidecar.url)
        rss = RssSampler(sidecar.process.pid)
        rss.start()

        log = workdir / "requests.csv"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SOAK_PROMPTS": str(prompts_file),
            "SOAK_REQUEST_LOG": str(log),
            "SOAK_API_KEY": API_KEY,
            "SOAK_FEEDBACK_EVERY": str(feedback_every),
        }
        command = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "--host", sidecar.url, "-u", str(users), "-r", str(users),
            # a bound in case this harness dies; it normally stops Locust itself (SIGTERM)
            "--run-time", f"{int(3 * duration_s + 600)}s", "--stop-timeout", "30",
            "--csv", str(workdir / "locust"), "--only-summary", "--loglevel", "WARNING",
        ]  # fmt: skip
        timeline.mark("warm-up")
        locust = subprocess.Popen(
            command, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        servers.append(_Locust(locust))
        # every path (small answers, escalations, the frontier's client) has run before the
        # measured part starts, so the memory at its start is the steady state's
        time.sleep(warmup_s)
        started = timeline.mark("before")

        def phase(since: float, fraction: float) -> None:
            time.sleep(max(0.0, since + fraction * duration_s - time.time()))

        since = started
        for k in range(1, KILLS + 1):
            phase(since, BEFORE if k == 1 else BACK)
            since = timeline.mark(f"small upstream down #{k}")
            llama.stop(signal.SIGKILL)
            phase(since, DOWN)
            llama = restart_small(workdir, port, timeout_s=max(120.0, duration_s * 0.5))
            servers[0] = llama
            since = timeline.mark(f"small upstream back #{k}")
        phase(since, BACK)
        timeline.mark("promoted, reloading")
        promote(registry_settings, next_version)
        deadline = time.monotonic() + max(60.0, duration_s * 0.2)
        while served_version(sidecar.url) != next_version:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sidecar never served version {next_version}")
            time.sleep(0.2)
        since = timeline.mark("after reload")
        phase(since, AFTER_RELOAD)
        phase(started, 1.0)  # never shorter than the nominal duration
        locust.send_signal(signal.SIGTERM)  # stops the users, writes its summary and CSVs
        output, _ = locust.communicate(timeout=120)
        timeline.mark("end")
        locust_code = locust.returncode
        rss.stop()
        metrics = httpx.get(f"{sidecar.url}/metrics", headers=auth, timeout=10).text
        for line in metrics.splitlines():
            for outcome in reloads:
                if line.startswith(f'cascade_router_reloads_total{{outcome="{outcome}"}}'):
                    reloads[outcome] = float(line.split()[-1])
    finally:
        if rss is not None:
            rss.stop()
        for server in reversed(servers):
            server.stop()

    rows = list(csv.DictReader(log.open()))
    return report(
        rows,
        timeline.marks,
        rss.samples if rss else [],
        workdir,
        {
            "duration_s": duration_s,
            "users": users,
            "max_concurrency": max_concurrency,
            "feedback_every": feedback_every,
            "warmup_s": warmup_s,
            "first_version": first_version,
            "promoted_version": next_version,
            "reloads": reloads,
            "locust_exit_code": locust_code,
            "locust_output": output.decode(errors="replace")[-4000:],
        },
    )


class _Locust(_Process):
    """The Locust process, so that the clean-up stops it like the servers."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)


def report(
    rows: list[dict[str, str]],
    marks: list[tuple[str, float]],
    rss: list[tuple[float, float]],
    workdir: Path,
    run: dict[str, Any],
) -> dict[str, Any]:
    """The soak's figures from the request log, the memory samples and the feedback store."""
    from router.feedback import FeedbackStore

    chats = [r for r in rows if r["name"] in ("chat", "chat [refused]")]
    answered = [r for r in chats if r["name"] == "chat" and r["status"] == "200"]
    labels = [r for r in rows if r["name"] == "feedback" and r["status"] == "200"]
    failed = [r for r in rows if r["name"] in ("chat", "feedback") and r["status"] != "200"]
    store = FeedbackStore(f"sqlite:///{workdir / 'feedback.db'}")
    try:
        missing_labels = [
            r["request_id"] for r in labels if store.get_feedback(r["request_id"]) is None
        ]
        missing_requests = [
            r["request_id"] for r in answered if store.get_request(r["request_id"]) is None
        ]
        counts = store.counts()
    finally:
        store.close()
    begin = dict(marks)["before"]
    in_load = [v for t, v in rss if begin <= t <= marks[-1][1]] or [v for _, v in rss]
    at_marks = {
        name: next((round(v, 1) for t, v in rss if t >= moment), None) for name, moment in marks
    }
    return {
        "run": {k: v for k, v in run.items() if k != "locust_output"},
        "totals": {
            "requests": len(rows),
            "chat": len(chats),
            "answered": len(answered),
            "refused_max_concurrency": sum(r["name"] == "chat [refused]" for r in chats),
            "failed": len(failed),
            "failures": dict(Counter(f"{r['name']} {r['status']} {r['error']}" for r in failed)),
        },
        "windows": summarise(rows, marks),
        "feedback": {
            "labels_posted": len(labels),
            "labels_stored": counts["labelled"],
            "labels_lost": len(missing_labels),
            "answers_not_stored": len(missing_requests),
            "requests_stored": counts["requests"],
        },
        "rss_mib": {
            "start": round(in_load[0], 1) if in_load else None,
            "end": round(in_load[-1], 1) if in_load else None,
            "peak": round(max(in_load), 1) if in_load else None,
            "at_marks": at_marks,
            "samples": [round(v, 1) for v in in_load],
        },
        "marks": [(name, round(t - marks[0][1], 1)) for name, t in marks],
        "locust_output": run["locust_output"],
    }


def print_report(result: dict[str, Any]) -> None:
    totals, feedback, memory = result["totals"], result["feedback"], result["rss_mib"]
    print(
        f"\nrequests {totals['requests']}  chat {totals['chat']}  answered {totals['answered']}  "
        f"refused (max_concurrency) {totals['refused_max_concurrency']}  "
        f"failed {totals['failed']} {totals['failures'] or ''}"
    )
    header = f"{'window':26s} {'from–to s':>12s} {'ok':>5s} {'refused':>7s} {'failed':>6s}"
    print(header + f" {'p50 ms':>8s} {'p99 ms':>8s}  paths")
    for w in result["windows"]:
        span = f"{w['from_s']:.0f}–{w['to_s']:.0f}"
        p50 = "-" if w["p50_ms"] is None else f"{w['p50_ms']:.0f}"
        p99 = "-" if w["p99_ms"] is None else f"{w['p99_ms']:.0f}"
        print(
            f"{w['window']:26s} {span:>12s} {w['answered']:5d} {w['refused']:7d} "
            f"{w['failed']:6d} {p50:>8s} {p99:>8s}  {w['paths']}"
        )
    print(
        f"sidecar RSS: {memory['start']} MiB at the start, {memory['end']} MiB at the end, "
        f"peak {memory['peak']} MiB"
    )
    print(
        f"labels posted {feedback['labels_posted']}, stored {feedback['labels_stored']}, "
        f"lost {feedback['labels_lost']}; answers not stored {feedback['answers_not_stored']}; "
        f"reloads {result['run']['reloads']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load [600]")
    parser.add_argument("--users", type=int, default=6, help="Locust users [6]")
    parser.add_argument("--max-concurrency", type=int, default=4, help="the sidecar's [4]")
    parser.add_argument("--feedback-every", type=int, default=2, help="label every k-th answer")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--no-save", action="store_true", help="do not write results/soak.json")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    workdir = args.out or Path(tempfile.mkdtemp(prefix="soak-"))
    # other jobs share the CPUs: the load around the run says how much of a floor the
    # latencies are
    load_start = os.getloadavg()
    result = run_soak(args.duration, workdir, args.users, args.max_concurrency, args.feedback_every)
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    print_report(result)
    text = json.dumps(result, indent=1, ensure_ascii=False)
    if args.json:
        args.json.write_text(text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "soak.json").write_text(text)


if __name__ == "__main__":
    main()
