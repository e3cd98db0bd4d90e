"""Fail fast when the local llama.cpp build cannot chat: ``python -m tests.support.check_llama``.

``scripts/test.sh`` runs it before the suite: a broken build (one compiled for another CPU, say)
would otherwise show up as a dozen unrelated-looking failures ten minutes later.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.support.processes import LlamaServer, LocalModelError, gemma3_gguf, smollm2_gguf


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cascade-llama-check-") as tmp:
        for gguf, alias in (
            (smollm2_gguf(), "smollm2-135m-instruct"),
            (gemma3_gguf(), "gemma-3-270m"),
        ):
            server = LlamaServer(Path(tmp) / f"{alias}.log", gguf=gguf, model_alias=alias)
            try:
                server.start()
            except LocalModelError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            finally:
                server.stop()
            print(f"llama.cpp answers chat completions with {gguf.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
