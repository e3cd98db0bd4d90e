"""Fail fast when the local llama.cpp build cannot chat: ``python -m tests.support.check_llama``.

``scripts/test.sh`` runs it before the suite: a broken build (one compiled for another CPU, say)
would otherwise show up as a dozen unrelated-looking failures ten minutes later.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.support.processes import LlamaServer, LocalModelError


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cascade-llama-check-") as tmp:
        server = LlamaServer(Path(tmp) / "llama.log")
        try:
            server.start()
        except LocalModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            server.stop()
    print(f"llama.cpp answers chat completions with {server.gguf.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
