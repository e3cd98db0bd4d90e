"""Locust users of the soak run (benchmarks/bench_soak.py starts Locust with this file).

Each user sends chat completions for recorded prompts (``SOAK_PROMPTS``: a JSON list of
``[step, prompt]``) and labels every ``SOAK_FEEDBACK_EVERY``-th answer through
``/v1/feedback`` with the request id the answer came with.

* A 503 with error code ``overloaded`` is the sidecar refusing work beyond its
  ``max_concurrency``, by design: it is reported in its own row (``chat [refused]``), not as a
  failure.  Anything else that is not a 200 (another status, a dropped connection, a time-out)
  is a failure, grouped by its status and error code.
* Every request goes to ``SOAK_REQUEST_LOG`` (CSV: wall-clock start, name, status, ms, error,
  request id, cascade path, router version), so the harness can cut exact windows around the
  faults it injects (Locust's own history percentiles run over a sliding window) and count
  the labels it must find in the feedback store.

Locust patches the standard library with gevent when imported: it runs in its own process.
"""

from __future__ import annotations

import csv
import json
import os
import random
from typing import Any

from locust import HttpUser, between, events, task
from locust.env import Environment

_log: dict[str, Any] = {}


@events.test_start.add_listener
def _open_log(environment: Environment, **_: Any) -> None:
    handle = open(os.environ["SOAK_REQUEST_LOG"], "w", newline="")  # noqa: SIM115 - test_stop
    _log["file"], _log["writer"] = handle, csv.writer(handle)
    _log["writer"].writerow(
        ["start", "name", "status", "ms", "error", "request_id", "path", "version"]
    )


@events.test_stop.add_listener
def _close_log(environment: Environment, **_: Any) -> None:
    if "file" in _log:
        _log["file"].close()


@events.request.add_listener
def _log_request(
    name: str,
    response_time: float,
    response: Any,
    exception: Any,
    start_time: float,
    context: dict[str, Any],
    **_: Any,
) -> None:
    if "writer" not in _log:
        return
    headers = getattr(response, "headers", None) or {}
    _log["writer"].writerow(
        [
            f"{start_time:.3f}",
            name,
            getattr(response, "status_code", 0) or 0,
            f"{response_time:.1f}",
            type(exception).__name__ if exception else "",
            context.get("request_id") or _request_id(headers),
            headers.get("x-cascade-path", ""),
            headers.get("x-cascade-router-version", ""),
        ]
    )


def _request_id(headers: Any) -> str:
    return headers.get("x-request-id") or headers.get("x-cascade-request-id") or ""


def _error_code(response: Any) -> str:
    try:
        return str(response.json()["error"]["code"])
    except Exception:  # a dropped connection or a body that is not OpenAI's error has none
        return ""


class SidecarUser(HttpUser):
    """An agent step after another: ask, then now and then say whether the answer was good."""

    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        with open(os.environ["SOAK_PROMPTS"]) as f:
            self.prompts: list[list[str]] = json.load(f)
        self.next = random.randrange(len(self.prompts))
        self.every = int(os.environ.get("SOAK_FEEDBACK_EVERY", "2"))
        self.answered = 0
        self.client.headers["Authorization"] = f"Bearer {os.environ['SOAK_API_KEY']}"

    @task
    def chat(self) -> None:
        step, prompt = self.prompts[self.next % len(self.prompts)]
        self.next += 1
        body = {"model": f"cascade:{step}", "messages": [{"role": "user", "content": prompt}]}
        request_id = None
        with self.client.post(
            "/v1/chat/completions", json=body, name="chat", catch_response=True, timeout=120
        ) as r:
            if r.status_code == 200:
                request_id = _request_id(r.headers) or None
                r.success()
            elif r.status_code == 503 and _error_code(r) == "overloaded":
                r.request_meta["name"] = "chat [refused]"
                r.success()
            else:
                r.failure(f"HTTP {r.status_code} {_error_code(r)}".strip())
        if request_id is None:
            return
        self.answered += 1
        if self.answered % self.every:
            return
        label = {"request_id": request_id, "accepted": random.random() < 0.7, "source": "soak"}
        with self.client.post(
            "/v1/feedback",
            json=label,
            name="feedback",
            catch_response=True,
            timeout=60,
            context={"request_id": request_id},
        ) as r:
            if r.status_code == 200 and r.json().get("stored") is True:
                r.success()
            else:
                r.failure(f"HTTP {r.status_code} {_error_code(r)}".strip())
