"""Is the static embedder's artefact the same bytes whatever CPU kernels build it?

    python benchmarks/bench_static_build.py                 # three kernel configurations
    python benchmarks/bench_static_build.py --configs native

Builds ``static-minilm-v2`` (``router.embedders.build.build_static``) in a fresh process per
configuration, each in its own empty cache folder, and reports the artefact's sha256 and the
build time.  The configurations force the code paths a different machine would take: torch's
vectorised kernels (``ATEN_CPU_CAPABILITY``: none, AVX2, AVX-512), MKL's instruction set
(``MKL_ENABLE_INSTRUCTIONS``), OpenBLAS's kernels (``OPENBLAS_CORETYPE``, numpy's SVD) and the
thread count.  The bundled router records one sha256: every configuration must reproduce it.
Appends one JSON line per configuration to ``benchmarks/results/static_build.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "static_build.jsonl"

CONFIGS: dict[str, dict[str, str]] = {
    "native": {},
    "scalar-sse42-haswell-1t": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "OPENBLAS_CORETYPE": "Haswell",
        "OMP_NUM_THREADS": "1",
    },
    "avx2-sandybridge-2t": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "OPENBLAS_CORETYPE": "Sandybridge",
        "OMP_NUM_THREADS": "2",
    },
}

SCRIPT = """
import json, sys, time
from router.embedders.build import build_static
start = time.perf_counter()
folder = build_static(sys.argv[1])
meta = json.loads((folder / "artefact.json").read_text())
print(json.dumps({"sha256": meta["sha256"], "build_s": round(time.perf_counter() - start, 1)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    shas = set()
    for name in args.configs:
        with tempfile.TemporaryDirectory(prefix="static-build-") as cache:
            env = {**os.environ, "PYTHONPATH": str(ROOT), **CONFIGS[name]}
            begin = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", SCRIPT, cache],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
        row |= {
            "config": name,
            "env": CONFIGS[name],
            "wall_s": round(time.perf_counter() - begin, 1),
            "cpus": os.cpu_count(),
            "load_1min": round(os.getloadavg()[0], 1),
            "command": f"python benchmarks/bench_static_build.py --configs {name}",
        }
        shas.add(row["sha256"])
        print(json.dumps(row), flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as out:
            out.write(json.dumps(row) + "\n")
    print(f"{len(shas)} distinct sha256 over {len(args.configs)} configurations")
    return 0 if len(shas) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
