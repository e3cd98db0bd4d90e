"""``route``: one step input through the cascade, from the shell."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from router.backends import ChatBackend, OpenAIBackend, replay_backend_for
from router.errors import ConfigurationError
from training.cli.common import handle_errors, key_env, load_settings
from training.cli.reports import print_route


def tier_backends(
    router_tiers: tuple[str, ...], specs: list[str] | None, replay: list[str] | None
) -> list[ChatBackend]:
    """A backend per tier: ``MODEL=BASE_URL`` specs, the rest replayed from recorded data."""
    from training.pipeline import resolve_data_paths

    chosen: dict[str, ChatBackend] = {}
    for spec in specs or []:
        model, sep, url = spec.partition("=")
        if not sep or not url:
            raise ConfigurationError(f"--backend {spec!r}: use MODEL=BASE_URL")
        if model not in router_tiers:
            raise ConfigurationError(
                f"--backend names {model!r}, not a tier of this router ({', '.join(router_tiers)})"
            )
        chosen[model] = OpenAIBackend(model=model, base_url=url, api_key_env=key_env(model))
    paths = resolve_data_paths(replay) if replay else None
    for tier in router_tiers:
        if tier not in chosen:
            try:
                chosen[tier] = replay_backend_for(tier, paths)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{exc}: pass --backend {tier}=URL") from None
    return [chosen[t] for t in router_tiers]


@handle_errors
def route(
    input: Annotated[
        str, typer.Option("--input", "-i", help="the step input text ('-' reads stdin)")
    ],
    step: Annotated[
        str, typer.Option("--step", "-s", help="step kind, e.g. intent or math")
    ] = "default",
    router_uri: Annotated[
        str | None,
        typer.Option(
            "--router", help="folder or MLflow URI (default models:/cascade-router@champion)"
        ),
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            help="MODEL=BASE_URL of an "
            "OpenAI-compatible server (vllm serve, llama.cpp, OpenAI); key from "
            "CASCADE_KEY_<MODEL>; repeatable",
        ),
    ] = None,
    replay: Annotated[
        list[str] | None,
        typer.Option(
            "--replay",
            help="answer the other tiers from recorded outcomes (default: the bundled data)",
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="override the router's target")
    ] = None,
    decide_only: Annotated[
        bool, typer.Option("--decide-only", help="print the decision, call no model")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Route one step input through the cascade and show the decision and the answer."""
    from router.sdk import Router

    text = sys.stdin.read() if input == "-" else input
    if not text.strip():
        raise ConfigurationError("--input is empty")
    router = Router.load(router_uri, settings=load_settings())
    if decide_only:
        decision = router.decide(step, text, target=target)
        print(json.dumps(decision.to_json_dict(), indent=2) if json_out else decision)
        return
    router = router.with_backends(tier_backends(router.tiers, backend, replay))
    result = router.route(step, text, target=target)
    if json_out:
        print(json.dumps(result.to_json_dict(), indent=2, default=str))
        return
    print_route(result)
