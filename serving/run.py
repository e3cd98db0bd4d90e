"""Run the sidecar under uvicorn (what ``cascade-router serve`` calls)."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from serving.settings import ServiceSettings

#: Set in the environment of worker processes: they rebuild the settings from it.
_ENV_PREFIX = "CASCADE_"


def _export(settings: ServiceSettings) -> dict[str, str]:
    """The settings as ``CASCADE_*`` variables, for uvicorn's worker processes."""
    env: dict[str, str] = {}
    for name in settings.model_fields_set | {"api_keys", "upstreams"}:
        value: Any = getattr(settings, name)
        if name == "api_keys":
            value = [k.get_secret_value() for k in value]
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        env[f"{_ENV_PREFIX}{name.upper()}"] = text
    return env


def app_factory() -> Any:
    """The app of a worker process (settings from the environment)."""
    from serving.app import create_app
    from serving.logs import configure_logging

    settings = ServiceSettings()
    configure_logging(settings.log_level)
    return create_app(settings)


def prepare_stores(settings: ServiceSettings) -> None:
    """Create or migrate the tracking and feedback databases once, before workers race to."""
    from mlflow.exceptions import MlflowException

    from router.feedback import FeedbackStore
    from router.registry import registry_client

    # an unreachable registry is no error here: each worker falls back to the bundled router
    with contextlib.suppress(MlflowException):
        registry_client(settings.tracking_uri).search_registered_models(max_results=1)
    FeedbackStore(settings.feedback_url).close()


def serve(settings: ServiceSettings) -> None:
    """Serve until interrupted; with ``workers > 1`` each worker loads its own router."""
    import uvicorn

    from serving.app import create_app
    from serving.logs import configure_logging

    configure_logging(settings.log_level)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        "limit_concurrency": None,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)
        return
    prepare_stores(settings)
    os.environ.update(_export(settings))
    uvicorn.run("serving.run:app_factory", factory=True, workers=settings.workers, **common)
