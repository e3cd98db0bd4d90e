"""Backends from plain mappings (config files), and replay backends over the bundled data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from router.backends.base import ChatBackend
from router.backends.openai_api import OpenAIBackend
from router.backends.replay import ReplayBackend
from router.errors import (
    CascadeRouterError,
    ConfigurationError,
)

_OPENAI_KEYS = frozenset(
    {
        "model",
        "base_url",
        "api_key",
        "api_key_env",
        "timeout_s",
        "max_retries",
        "temperature",
        "logprobs",
        "max_tokens",
        "dialect",
        "provider_name",
    }
)
_REPLAY_KEYS = frozenset({"model", "paths", "latency_s"})


def replay_backend_for(
    model: str, paths: Sequence[str | Path] | None = None, samples: int = 0
) -> ReplayBackend:
    """A replay backend for ``model`` (and ``samples`` recorded extra samples of it) from the
    first file that records them (default: the bundled data).

    Raises:
        ConfigurationError: no file records answers of ``model``.
    """
    from router.data import BUNDLED_DATASETS, bundled_dataset

    candidates = list(paths) if paths else [bundled_dataset(n) for n in BUNDLED_DATASETS]
    for path in candidates:
        try:
            return ReplayBackend.from_files([path], model, samples=samples)
        except CascadeRouterError:
            continue
    names = ", ".join(Path(p).name for p in candidates)
    raise ConfigurationError(f"no recorded answers of {model!r} in {names}")


def make_backend(spec: Mapping[str, Any]) -> ChatBackend:
    """Build a backend from a plain mapping, e.g. one entry of a config file.

    ``{"kind": "openai", "model": ..., "base_url": ..., ...}`` gives an
    :class:`OpenAIBackend` (any of its constructor arguments may appear);
    ``{"kind": "replay", "model": ..., "paths": [...], "latency_s": ...}`` gives a
    :class:`ReplayBackend` loaded from files.

    Raises:
        ConfigurationError: unknown kind, missing model or paths, or unknown keys.
    """
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"backend spec must be a mapping, not {type(spec).__name__}")
    kind = spec.get("kind")
    options = {k: v for k, v in spec.items() if k != "kind"}
    if not options.get("model") or not isinstance(options.get("model"), str):
        raise ConfigurationError(f"backend spec {dict(spec)!r} needs a 'model' name")
    model = options["model"]
    if kind == "openai":
        _check_keys(options, _OPENAI_KEYS, kind, model)
        return OpenAIBackend(**options)
    if kind == "replay":
        _check_keys(options, _REPLAY_KEYS, kind, model)
        paths = options.get("paths")
        if not paths:
            raise ConfigurationError(f"replay backend for {model} needs 'paths' (outcome files)")
        return ReplayBackend.from_files(paths, model, latency_s=float(options.get("latency_s", 0)))
    raise ConfigurationError(
        f"unknown backend kind {kind!r} for model {model}; expected 'openai' or 'replay'"
    )


def _check_keys(options: Mapping[str, Any], allowed: frozenset[str], kind: str, model: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigurationError(
            f"{kind} backend for {model} has unknown key(s) {', '.join(unknown)}; "
            f"allowed: kind, {', '.join(sorted(allowed))}"
        )
