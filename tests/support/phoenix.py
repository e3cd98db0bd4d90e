"""A real OTLP receiver for the tracing tests: Arize Phoenix, in a venv of its own.

No OpenTelemetry Collector, Jaeger or Tempo build installs from the registries this project
may use; Phoenix (``arize-phoenix`` on PyPI, maintained, Apache-2.0) is a genuine OTLP
server: it accepts OTLP/HTTP protobuf at ``POST /v1/traces`` and OTLP/gRPC on a second port,
stores the spans in SQLite and serves them back, OTLP-shaped, at
``GET /v1/projects/{project}/spans/otlpv1``.  ``scripts/install_phoenix.sh`` installs it once
(cached); :class:`Phoenix` runs it on free loopback ports with nothing fetched from outside.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import ROOT, _Process, free_port


def phoenix_executable(timeout_s: float = 1500.0) -> Path:
    """The ``phoenix`` executable, installed by ``scripts/install_phoenix.sh`` if needed.

    Raises:
        RuntimeError: the install failed (its output tells why).
    """
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_phoenix.sh"), sys.executable],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if done.returncode != 0:
        raise RuntimeError(f"installing Phoenix failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


class Phoenix(_Process):
    """``phoenix serve`` on 127.0.0.1 with its database in ``workdir``."""

    def __init__(self, executable: Path, workdir: Path) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        env = {
            **os.environ,
            "PHOENIX_WORKING_DIR": str(workdir),
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.http_port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_TELEMETRY_ENABLED": "false",  # no usage reports
            "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",  # no downloads from outside
        }
        for name in [k for k in env if k.startswith("OTEL_")]:
            del env[name]  # Phoenix traces itself when told to: not into itself
        env.pop("PYTHONPATH", None)
        super().__init__([str(executable), "serve"], env, workdir / "phoenix.log", workdir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def start(self, timeout_s: float = 240.0) -> Phoenix:
        """Start it and wait until it answers (its database migrations take a while)."""
        self._start()
        self._wait(f"{self.url}/healthz", timeout_s)
        return self

    def spans(
        self, trace_id: str, want: int, timeout_s: float = 30.0, project: str = "default"
    ) -> list[dict[str, Any]]:
        """The stored spans of one trace (OTLP JSON shape), once ``want`` have arrived (Phoenix
        ingests asynchronously) or the time is up."""
        deadline = time.monotonic() + timeout_s
        while True:
            response = httpx.get(
                f"{self.url}/v1/projects/{project}/spans/otlpv1",
                params={"limit": 1000},
                timeout=10,
            )
            response.raise_for_status()
            found = [s for s in response.json()["data"] if s["trace_id"] == trace_id]
            if len(found) >= want or time.monotonic() > deadline:
                return found
            time.sleep(0.25)


def attribute_values(span: dict[str, Any]) -> dict[str, Any]:
    """A stored span's attributes as plain Python values (OTLP's ``AnyValue`` unwrapped)."""
    return {a["key"]: _plain(a["value"]) for a in span.get("attributes", [])}


def _plain(value: dict[str, Any]) -> Any:
    # Phoenix names every field of the AnyValue, the unused ones null
    if value.get("array_value") is not None:
        return [_plain(v) for v in value["array_value"].get("values", [])]
    if value.get("kvlist_value") is not None:
        return {kv["key"]: _plain(kv["value"]) for kv in value["kvlist_value"].get("values", [])}
    if value.get("int_value") is not None:
        return int(value["int_value"])
    for key in ("string_value", "double_value", "bool_value", "bytes_value"):
        if value.get(key) is not None:
            return value[key]
    return None
