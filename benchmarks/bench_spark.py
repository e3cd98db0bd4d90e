"""Scoring a large table of step inputs through ``mlflow.pyfunc.spark_udf`` on ``local[2]``, next
to the same router in process.

    python benchmarks/bench_spark.py                 # 100,000 rows, the bundled router
    python benchmarks/bench_spark.py --rows 200000

Rows: the prompts of every bundled dataset (MMLU-Pro, GSM8K, RouterBench, RouterBench-SmolLM2;
15,581 distinct inputs with their step kinds), repeated with a line ``(request k)`` appended
until there are ``--rows`` distinct inputs, so that no cache answers a repeat.  The router is
the one that ships in the package (static embedder), logged to a local registry and scored
as ``models:/NAME/1`` through :func:`training.scoring.spark_score` (``env_manager="local"``:
executors run this interpreter).

In process, one thread: ``Router.decide_batch`` over batches of ``--batch`` rows, and the
pyfunc model's ``predict`` over the same batches (what every Spark task runs on its
partition).  On Spark: a ``local[2]`` session (two executor cores, each a Python worker),
the table in ``--partitions`` partitions, the UDF's output written to Spark's ``noop`` sink
(every row scored, nothing collected), twice (the first pays for starting the Python workers
and loading the model in each); then the decisions collected and compared with the SDK's.
Results: ``benchmarks/results/spark.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "spark.json"
NAME = "spark-bench"


def step_inputs(rows: int) -> pd.DataFrame:
    """``rows`` distinct (step, input) pairs from every bundled dataset's prompts."""
    from router.data import bundled_dataset, load_outcomes

    frames = []
    for name in ("mmlu_pro", "gsm8k", "routerbench", "routerbench_smollm2"):
        frame = load_outcomes([bundled_dataset(name)])
        step = frame["step"] if "step" in frame.columns else frame["task"]
        frames.append(pd.DataFrame({"step": step.astype(str), "input": frame["prompt"]}))
    base = pd.concat(frames).drop_duplicates("input").reset_index(drop=True)
    k = np.arange(rows)
    picked = base.iloc[k % len(base)].reset_index(drop=True)
    picked["input"] = [f"{text}\n(request {i})" for text, i in zip(picked["input"], k, strict=True)]
    return picked


def timed(action: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = action()
    return out, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()

    import mlflow

    from router.model import CascadeModel
    from router.pyfunc import predict_frame
    from router.registry import bundled_router_path
    from router.sdk import Router
    from router.settings import RouterSettings
    from tests.support.services import LocalSpark
    from training.registry import log_router, open_tracking
    from training.scoring import score_frame, spark_score

    frame, build_s = timed(lambda: step_inputs(args.rows))
    print(f"{len(frame)} rows ({frame['input'].nunique()} distinct) in {build_s:.1f} s", flush=True)
    result: dict[str, Any] = {"rows": len(frame), "batch": args.batch}

    # in process, one thread
    model = CascadeModel.load(bundled_router_path(), num_threads=1)
    router = Router(model, lru_size=0)
    router.decide_batch(list(frame["step"][:256]), list(frame["input"][:256]))  # warm

    def decide_all() -> list[Any]:
        out = []
        for i in range(0, len(frame), args.batch):
            part = frame.iloc[i : i + args.batch]
            out.extend(router.decide_batch(list(part["step"]), list(part["input"])))
        return out

    decisions, decide_s = timed(decide_all)
    result["decide_batch"] = {
        "seconds": round(decide_s, 1),
        "rows_per_s": round(len(frame) / decide_s),
    }
    print(f"decide_batch: {result['decide_batch']}", flush=True)
    expected = predict_frame(Router(model, lru_size=0), frame.head(2000))

    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        settings = RouterSettings(
            tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}",
            artifact_location=str(Path(tmp) / "mlruns"),
            experiment=NAME,
        )
        open_tracking(settings)
        with mlflow.start_run() as run:
            info = log_router(
                bundled_router_path(), run=run, input_example=None, registered_model=NAME
            )
        uri = f"models:/{NAME}/{info.registered_model_version}"
        scored, pyfunc_s = timed(
            lambda: score_frame(
                frame, uri, batch_size=args.batch, tracking_uri=settings.tracking_uri
            )
        )
        result["pyfunc_predict"] = {
            "seconds": round(pyfunc_s, 1),
            "rows_per_s": round(len(frame) / pyfunc_s),
        }
        print(f"pyfunc predict: {result['pyfunc_predict']}", flush=True)
        same = scored["tier"].tolist() == [d.tier for d in decisions]
        result["pyfunc_equals_decide_batch"] = same

        with LocalSpark(cores=2, driver_memory="2g", pythonpath=[ROOT]) as spark:
            result["spark_session_start_s"] = round(spark.startup_s, 1)
            data = spark.session.createDataFrame(frame.assign(row=np.arange(len(frame))))
            data = data.repartition(args.partitions).cache()
            data.count()
            runs = []
            for attempt in range(2):
                out = spark_score(spark.session, data, uri, tracking_uri=settings.tracking_uri)
                _, seconds = timed(
                    lambda out=out: out.write.format("noop").mode("overwrite").save()
                )
                runs.append(
                    {"seconds": round(seconds, 1), "rows_per_s": round(len(frame) / seconds)}
                )
                print(f"spark_udf run {attempt + 1}: {runs[-1]}", flush=True)
            result["spark_udf"] = runs
            sample = spark_score(
                spark.session, data.where("row < 2000"), uri, tracking_uri=settings.tracking_uri
            )
            got = sample.select("row", "decision.*").toPandas().sort_values("row")
        result["spark_equals_sdk_on_2000_rows"] = bool(
            got["tier"].tolist() == expected["tier"].tolist()
            and got["action"].tolist() == expected["action"].tolist()
            and np.allclose(got["p_accept"], expected["p_accept"].astype(float), atol=1e-9)
        )
    result["ratio_spark_to_decide_batch"] = round(
        result["spark_udf"][-1]["rows_per_s"] / result["decide_batch"]["rows_per_s"], 2
    )
    result["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_1min": round(os.getloadavg()[0], 1),
    }
    result["command"] = " ".join(["python benchmarks/bench_spark.py", *sys.argv[1:]])
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
