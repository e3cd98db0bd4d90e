"""Schemathesis' totals: the contract test of the suite, run as it is, its counts recorded.

    .venv/bin/python benchmarks/bench_contract.py          # minutes (SmolLM2 answers the fuzz)

Runs ``tests/serving/test_contract.py`` under pytest (its configuration, seed and bounds are
the only ones: nothing is repeated here), with ``CONTRACT_TOTALS_FILE`` naming where the test
writes what the fuzzing did: operations, examples sent, stateful steps, responses per operation
and status, 5xx, failed checks (schema violations among them) and dropped connections.  The
pytest outcome and the machine's load before and after go beside them in
``benchmarks/results/contract.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TEST = "tests/serving/test_contract.py"


def run_contract(workdir: Path) -> dict[str, Any]:
    """Run the contract test once; its totals, pytest's exit code and summary line, the time."""
    totals_file = workdir / "totals.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONTRACT_TOTALS_FILE": str(totals_file)}
    command = [sys.executable, "-m", "pytest", TEST, "-q", "-p", "no:cacheprovider"]
    command += ["--basetemp", str(workdir / "pytest")]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0:
        print(done.stdout[-6000:], file=sys.stderr)
    if not totals_file.exists():
        raise RuntimeError(f"the contract test wrote no totals:\n{done.stdout[-4000:]}")
    return {
        "totals": json.loads(totals_file.read_text()),
        "pytest": {
            "exit_code": done.returncode,
            "summary": lines[-1] if lines else "",
            "failed": [line for line in lines if line.startswith(("FAILED", "ERROR"))],
            "seconds": round(elapsed, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-save", action="store_true", help="do not write results")
    args = parser.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-contract-") as folder:
        result = run_contract(Path(folder))
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    t = result["totals"]
    print(
        f"{result['pytest']['summary']} in {result['pytest']['seconds']} s: "
        f"{t['operations']} operations, {t['examples']} examples, "
        f"{t['stateful_steps']} stateful steps; 5xx {t['server_errors_5xx']}, "
        f"schema violations {t['schema_violations']}, failed checks {t['failed_checks']}, "
        f"dropped connections {t['dropped_connections']}"
    )
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "contract.json").write_text(json.dumps(result, indent=1))
    if result["pytest"]["exit_code"] != 0:
        sys.exit(result["pytest"]["exit_code"])


if __name__ == "__main__":
    main()
