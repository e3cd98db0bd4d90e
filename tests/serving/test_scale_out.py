"""Replicas behind a real load balancer: ``examples/scale-out/run.sh`` starts two
``cascade-router serve`` processes sharing a real PostgreSQL store and a real MLflow server
(basic auth, artifacts over HTTP), behind HAProxy; the upstream models are an OpenAI-protocol
stand-in over real HTTP that records every call.

* a promotion reaches every replica within the reload interval (and a rollback too);
* a replica SIGKILLed under mixed traffic loses no request but the ones whose response had
  already started (none are re-sendable by any balancer), counted exactly; every feedback label
  a replica acknowledged is in the store; the model calls the balancer's retries repeated are
  counted (the reason chat completions are retried is in examples/scale-out/haproxy.cfg).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from router.data import bundled_dataset, load_outcomes
from router.feedback import FeedbackStore
from router.registry import bundled_router_path, registry_client
from router.settings import RouterSettings
from tests.support.openai_server import OpenAIStubServer
from tests.support.scale_out import MixedTraffic, ScaleOutProfile
from tests.support.services import MlflowServer, PostgresServer
from training.registry import log_router, open_tracking, promote_version, rollback

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
NAME = "scale-out-router"
API_KEY = "scale-out-key"
RELOAD_S = 2.0
SMALL, FRONTIER = "llama-3.1-8b-instruct", "gpt-4o-2024-05-13"


def _report(name: str, values: dict[str, object]) -> None:
    """One JSON line per measurement (shown with ``pytest -s``)."""
    print(f"\n[scale-out] {name} {json.dumps(values, sort_keys=True)}")


@dataclass
class Deployment:
    profile: ScaleOutProfile
    settings: RouterSettings  # the registry and the store the replicas share
    upstream: OpenAIStubServer
    versions: list[str]


def _register(settings: RouterSettings) -> str:
    open_tracking(settings)
    with mlflow.start_run() as run:
        info = log_router(bundled_router_path(), run=run, input_example=None, registered_model=NAME)
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def deployment(
    mlflow_server: MlflowServer, postgres: PostgresServer, tmp_path_factory, cache_dir: Path
) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("scale-out")
    feedback_url = postgres.create_database("scale_out")
    settings = RouterSettings(
        tracking_uri=mlflow_server.url,
        experiment=NAME,
        registered_model=NAME,
        feedback_url=feedback_url,
        cache_dir=cache_dir,
    )
    with pytest.MonkeyPatch.context() as patch:  # the registry's credentials, for the module
        for key, value in mlflow_server.client_env.items():
            patch.setenv(key, value)
        first = _register(settings)
        promote_version(NAME, first, client=registry_client(settings.tracking_uri))
        # both tiers on one OpenAI-protocol server; a small delay keeps requests in flight
        with OpenAIStubServer(
            responder=lambda messages: "The answer is (B).", models=[SMALL, FRONTIER], delay_s=0.1
        ) as upstream:
            base = {
                k: v for k, v in os.environ.items() if not k.startswith(("CASCADE_", "MLFLOW_"))
            }
            env = {
                **base,
                **mlflow_server.client_env,
                "PYTHON": sys.executable,
                "PYTHONPATH": str(ROOT),
                "CASCADE_CACHE_DIR": str(cache_dir),
                "CASCADE_FEEDBACK_URL": feedback_url,
                "CASCADE_TRACKING_URI": mlflow_server.url,
                "CASCADE_REGISTERED_MODEL": NAME,
                "CASCADE_RELOAD_INTERVAL_S": str(RELOAD_S),
                "CASCADE_API_KEYS": json.dumps([API_KEY]),
                "CASCADE_UPSTREAMS": json.dumps(
                    {tier: {"base_url": upstream.base_url} for tier in (SMALL, FRONTIER)}
                ),
            }
            with ScaleOutProfile(workdir / "profile", env, replicas=2) as profile:
                yield Deployment(profile, settings, upstream, [first])


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    frame = load_outcomes([bundled_dataset("mmlu_pro")], models=[FRONTIER])
    return [p.split("\n")[0] for p in frame["prompt"].drop_duplicates().head(400)]


def _wait_for_version(profile: ScaleOutProfile, version: str, timeout_s: float) -> list[float]:
    """Seconds until each replica served ``version``."""
    start = time.monotonic()
    reached: dict[int, float] = {}
    while len(reached) < len(profile.replica_urls):
        for i, seen in enumerate(profile.serving_versions()):
            if seen == version and i not in reached:
                reached[i] = time.monotonic() - start
        assert time.monotonic() - start < timeout_s, f"not every replica serves {version}"
        time.sleep(0.05)
    return [round(reached[i], 2) for i in sorted(reached)]


def test_every_replica_serves_a_promotion_and_a_rollback(deployment: Deployment) -> None:
    profile, settings = deployment.profile, deployment.settings
    assert profile.serving_versions() == [deployment.versions[0]] * 2
    assert all(s.startswith("UP") for s in profile.server_states().values())
    client = registry_client(settings.tracking_uri)
    second = _register(settings)
    deployment.versions.append(second)
    promote_version(NAME, second, client=client)
    promoted = _wait_for_version(profile, second, timeout_s=RELOAD_S + 30)
    rollback(NAME, client=client)
    rolled_back = _wait_for_version(profile, deployment.versions[0], timeout_s=RELOAD_S + 30)
    _report(
        "promotion",
        {"reload_interval_s": RELOAD_S, "promotion_s": promoted, "rollback_s": rolled_back},
    )
    # a replica looks every RELOAD_S seconds, then downloads and loads the version (~1 s here)
    assert max(promoted + rolled_back) <= RELOAD_S + 10.0


def test_a_replica_killed_under_load_loses_nothing(deployment: Deployment, prompts) -> None:
    profile, upstream = deployment.profile, deployment.upstream
    calls_before = len(upstream.requests)
    with MixedTraffic(profile.lb_url, clients=6, prompts=prompts, api_key=API_KEY) as traffic:
        time.sleep(3.0)
        killed_at = profile.kill_replica(0)
        time.sleep(4.0)
    outcomes = traffic.outcomes
    failed = [o for o in outcomes if not o.ok]
    in_flight = [o for o in outcomes if o.in_flight_at(killed_at)]
    # what no balancer can re-send: a response that had begun when its replica died
    unretryable = [o for o in failed if o.response_started and o.in_flight_at(killed_at)]
    calls = Counter(
        (body["model"], body["messages"][-1]["content"])
        for body in upstream.requests[calls_before:]
    )
    repeated = sum(n - 1 for n in calls.values() if n > 1)
    repeated_prompts = {content for (_, content), n in calls.items() if n > 1}
    acknowledged = [o.labelled for o in outcomes if o.kind == "feedback" and o.ok and o.labelled]
    answered_chats = [o.request_id for o in outcomes if o.kind == "chat" and o.ok]
    with FeedbackStore(deployment.settings.feedback_url) as store:
        missing_labels = [
            (rid, accepted)
            for rid, accepted in acknowledged
            if (label := store.get_feedback(rid)) is None or label.accepted != accepted
        ]
        missing_requests = [rid for rid in answered_chats if store.get_request(str(rid)) is None]
    states = profile.server_states()
    _report(
        "kill",
        {
            "requests": len(outcomes),
            "by_kind": dict(Counter(o.kind for o in outcomes)),
            "in_flight_at_kill": len(in_flight),
            "failed": len(failed),
            "failed_unretryable": len(unretryable),
            "failed_kinds": dict(Counter(o.kind for o in failed)),
            "errors": sorted({str(o.error)[:80] for o in failed}),
            "model_calls_repeated": repeated,
            "requests_with_repeated_calls": len(repeated_prompts),
            "labels_acknowledged": len(acknowledged),
            "labels_missing": len(missing_labels),
            "states_after": states,
        },
    )
    assert len(outcomes) > 20 and in_flight, "the kill must happen under load"
    assert failed == unretryable, [o for o in failed if o not in unretryable]
    assert all(o.kind == "stream" for o in unretryable)  # JSON answers are sent in one piece
    assert not missing_labels and not missing_requests
    assert states["r1"].startswith("DOWN") and states["r2"].startswith("UP"), states
    # each repeated model call belongs to a chat request the dead replica held when it died,
    # which had called the small model, the frontier model or both
    held = sum(o.kind in ("chat", "stream") for o in in_flight)
    assert len(repeated_prompts) <= held and repeated <= 2 * held


def test_the_profile_starts_its_own_database_and_registry(tmp_path: Path, prompts) -> None:
    """``run.sh`` with nothing configured: its own PostgreSQL and MLflow server, one replica
    (serving the bundled router until something is registered), HAProxy; SIGTERM stops all."""
    import httpx
    import psycopg

    mine = ("CASCADE_", "MLFLOW_", "PG")
    env = {k: v for k, v in os.environ.items() if not k.startswith(mine)}
    env |= {"PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "PGPASSWORD": "profile-pass"}
    env["CASCADE_CACHE_DIR"] = os.environ["CASCADE_CACHE_DIR"]
    profile = ScaleOutProfile(tmp_path / "standalone", env, replicas=1).start()
    try:
        state = profile.state
        assert state["CASCADE_TRACKING_URI"].startswith("http://127.0.0.1:")
        assert (
            "@" in state["CASCADE_FEEDBACK_URL"]
            and "profile-pass" not in state["CASCADE_FEEDBACK_URL"]
        )
        ready = httpx.get(f"{profile.replica_urls[0]}/readyz", timeout=10).json()
        assert ready["router_version"] == "bundled"
        frame = load_outcomes([bundled_dataset("mmlu_pro")], models=[SMALL, FRONTIER])
        prompt = str(frame["prompt"].iloc[0])
        chat = httpx.post(
            f"{profile.lb_url}/v1/chat/completions",
            json={"model": "cascade", "messages": [{"role": "user", "content": prompt}]},
            timeout=60,
        )
        assert chat.status_code == 200, chat.text
        request_id = chat.headers["x-cascade-request-id"]
        label = httpx.post(
            f"{profile.lb_url}/v1/feedback",
            json={"request_id": request_id, "accepted": True},
            timeout=30,
        )
        assert label.status_code == 200, label.text
        conninfo = state["CASCADE_FEEDBACK_URL"].replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, password="profile-pass") as conn:
            row = conn.execute(
                "SELECT accepted FROM feedback WHERE request_id = %s", (request_id,)
            ).fetchone()
        assert row == (True,)
        pids = [*profile.replica_pids, int(state["HAPROXY_PID"])]
    finally:
        profile.stop()
    for pid in pids:  # everything the script started is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{state['CASCADE_TRACKING_URI']}/health", timeout=2)
