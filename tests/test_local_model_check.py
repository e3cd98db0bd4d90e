"""The test set-up stops at once, in one line, when the local model server cannot chat."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT, LlamaServer, LocalModelError, _Process, free_port

#: A server that answers GET /v1/models like llama.cpp's and dies like a build compiled for
#: another CPU on its first chat completion.
CRASHING_SERVER = """
import http.server, json, os, signal, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"object": "list", "data": []}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        os.kill(os.getpid(), signal.SIGSEGV)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class CrashingServer(LlamaServer):
    def __init__(self, log_path: Path) -> None:
        super().__init__(log_path)
        self.port = free_port()
        _Process.__init__(
            self, [sys.executable, "-c", CRASHING_SERVER, str(self.port)], {}, log_path, ROOT
        )


def test_a_server_that_crashes_on_chat_fails_the_check_in_one_line(tmp_path: Path) -> None:
    server = CrashingServer(tmp_path / "crash.log")
    with pytest.raises(LocalModelError) as caught:
        server.start(timeout_s=30)
    message = str(caught.value)
    assert "\n" not in message
    assert f"killed by {signal.SIGSEGV.name}" in message
    assert "llama-cpp-python" in message and "bootstrap.sh" in message
    assert not server.running


def test_the_real_build_answers_a_chat_completion(tmp_path: Path) -> None:
    server = LlamaServer(tmp_path / "llama.log").start()
    try:
        assert server.running
    finally:
        server.stop()
