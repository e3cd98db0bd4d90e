"""The scale-out profile (``examples/scale-out/run.sh``) driven from Python, and mixed client
traffic through its load balancer with every outcome recorded (for the tests and the benchmark).

:class:`ScaleOutProfile` runs the profile's own script in a subprocess (PostgreSQL and the MLflow
server are the caller's when ``CASCADE_FEEDBACK_URL`` / ``CASCADE_TRACKING_URI`` are in its
environment, else the script starts its own), waits for ``state.env`` and exposes the
balancer's URL, each replica's URL and process id, and HAProxy's view of the replicas.

:class:`MixedTraffic` runs client threads against the balancer, each sending in turn a chat
completion (JSON), a decision (``/v1/route``), a streamed chat completion and a feedback label
for its last answered chat completion; every request carries a distinct prompt, so the model
calls an upstream received tell which requests reached a model twice.  Clients never retry:
each :class:`Outcome` is what an application sees.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.services import ServiceError, haproxy_command, log_tail, parse_server_states

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "scale-out" / "run.sh"


class ScaleOutProfile:
    """``examples/scale-out/run.sh --replicas N`` in its own session; stopped with SIGTERM."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str],
        replicas: int = 2,
        lb_port: int | None = None,
    ) -> None:
        from tests.support.services import free_port

        self.workdir, self.replicas = workdir, replicas
        self.lb_port = lb_port or free_port()
        self.env = env
        self.state: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "run.log"

    def start(self, timeout_s: float = 900.0) -> ScaleOutProfile:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = ["bash", str(SCRIPT), "--replicas", str(self.replicas)]
        args += ["--port", str(self.lb_port), "--dir", str(self.workdir)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ready = self.workdir / "ready"
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                what = "exited" if self.process.poll() is not None else "timed out"
                self.stop()
                raise ServiceError(f"{SCRIPT} {what}; log {self.log_path}: {self._logs()}")
            time.sleep(0.25)
        for line in (self.workdir / "state.env").read_text().splitlines():
            key, _, value = line.partition("=")
            self.state[key] = " ".join(shlex.split(value))
        return self

    def _logs(self) -> str:
        parts = [log_tail(self.log_path, 8)]
        for path in sorted(self.workdir.glob("replica-*.log")):
            parts.append(f"{path.name}: {log_tail(path, 4)}")
        return " || ".join(parts)

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM the script (it stops what it started), SIGKILL its session if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def __enter__(self) -> ScaleOutProfile:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def lb_url(self) -> str:
        return self.state["LB_URL"]

    @property
    def replica_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.state["REPLICA_PORTS"].split()]

    @property
    def replica_pids(self) -> list[int]:
        return [int(p) for p in self.state["REPLICA_PIDS"].split()]

    def kill_replica(self, index: int) -> float:
        """SIGKILL replica ``index`` (0-based): no shutdown, its connections reset.  Returns the
        monotonic time of the kill."""
        killed_at = time.monotonic()
        os.kill(self.replica_pids[index], signal.SIGKILL)
        return killed_at

    def server_states(self) -> dict[str, str]:
        """HAProxy's check status of each replica (``r1``, ``r2``, ...)."""
        return parse_server_states(haproxy_command(self.state["LB_SOCKET"], "show stat"))

    def serving_versions(self, headers: dict[str, str] | None = None) -> list[str | None]:
        """The router version each replica serves now (its ``/readyz``), None if it is down."""
        versions: list[str | None] = []
        for url in self.replica_urls:
            try:
                body = httpx.get(f"{url}/readyz", headers=headers, timeout=2.0).json()
                versions.append(body.get("router_version"))
            except (httpx.HTTPError, ValueError):
                versions.append(None)
        return versions


@dataclass
class Outcome:
    """One client request through the balancer, as the client saw it."""

    kind: str  # chat | stream | route | feedback
    status: int | None  # None: no HTTP response reached the client
    complete: bool  # the whole answer arrived
    started_at: float  # time.monotonic()
    ended_at: float
    request_id: str | None = None  # the sidecar's id of a chat completion
    labelled: tuple[str, bool] | None = None  # feedback: (request id, accepted)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.complete

    @property
    def response_started(self) -> bool:
        """A replica's answer (200 and headers) reached the client before it broke: what no
        balancer can re-send.  An error status made by the balancer itself does not count."""
        return self.status == 200

    def in_flight_at(self, moment: float) -> bool:
        return self.started_at <= moment <= self.ended_at


class MixedTraffic:
    """``clients`` threads sending chat, decision, streamed-chat and feedback requests in turn."""

    KINDS = ("chat", "route", "stream", "feedback")

    def __init__(
        self,
        url: str,
        clients: int,
        prompts: list[str],
        api_key: str | None = None,
        step: str = "default",
    ) -> None:
        self.url, self.clients, self.prompts, self.step = url, clients, prompts, step
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in range(clients)]

    def __enter__(self) -> MixedTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _prompt(self, client: int, n: int) -> str:
        base = self.prompts[(client * 7919 + n) % len(self.prompts)]
        return f"{base}\n\n(request {client}-{n})"  # distinct: an upstream sees each once

    def _run(self, client: int) -> None:
        answered: list[str] = []
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=60.0) as http:
            n = 0
            while not self._stop.is_set():
                kind = self.KINDS[n % len(self.KINDS)]
                if kind == "feedback" and not answered:
                    kind = "route"
                outcome = self._one(http, kind, self._prompt(client, n), answered, n)
                if outcome.kind == "chat" and outcome.ok and outcome.request_id:
                    answered.append(outcome.request_id)
                with self._lock:
                    self.outcomes.append(outcome)
                n += 1

    def _one(
        self, http: httpx.Client, kind: str, prompt: str, answered: list[str], n: int
    ) -> Outcome:
        start = time.monotonic()
        status: int | None = None
        messages = [{"role": "user", "content": prompt}]
        try:
            if kind == "route":
                r = http.post("/v1/route", json={"step": self.step, "input": prompt})
                status = r.status_code
                return Outcome(kind, status, "tier" in r.json(), start, time.monotonic())
            if kind == "feedback":
                request_id, accepted = answered.pop(), n % 3 != 0
                r = http.post("/v1/feedback", json={"request_id": request_id, "accepted": accepted})
                status = r.status_code
                return Outcome(
                    kind, status, True, start, time.monotonic(), labelled=(request_id, accepted)
                )
            body: dict[str, Any] = {"model": f"cascade:{self.step}", "messages": messages}
            if kind == "chat":
                r = http.post("/v1/chat/completions", json=body)
                status = r.status_code
                complete = bool(r.json().get("choices"))
                request_id = r.headers.get("x-cascade-request-id")
                return Outcome(kind, status, complete, start, time.monotonic(), request_id)
            with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                status = r.status_code
                done = any(line.strip() == "data: [DONE]" for line in r.iter_lines())
            return Outcome(kind, status, done, start, time.monotonic())
        except (httpx.HTTPError, ValueError, json.JSONDecodeError) as exc:
            return Outcome(kind, status, False, start, time.monotonic(), error=repr(exc)[:200])
