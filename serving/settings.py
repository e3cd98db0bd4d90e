"""The sidecar's typed settings: the library's :class:`RouterSettings` plus what a service needs.

Read, highest priority first, from: explicit overrides (CLI flags), ``CASCADE_*`` environment
variables, an optional TOML or JSON config file, then the defaults below.  Lists and mappings in
the environment are JSON (``CASCADE_API_KEYS='["key-1","key-2"]'``).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator

from router.errors import ConfigurationError
from router.settings import RouterSettings

#: Keys an upstream entry may carry (the OpenAIBackend arguments plus ``kind``); ``api_key`` is
#: refused on purpose: upstream keys come from the environment only (``api_key_env``).
UPSTREAM_KEYS = frozenset(
    {
        "kind",
        "model",
        "base_url",
        "api_key_env",
        "timeout_s",
        "max_retries",
        "temperature",
        "logprobs",
        "max_tokens",
        "dialect",
        "provider_name",
        "paths",
        "latency_s",
    }
)


class ServiceSettings(RouterSettings):
    """Configuration of ``cascade-router serve`` (environment prefix ``CASCADE_``)."""

    host: str = Field("127.0.0.1", description="interface to bind")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    model_uri: str | None = Field(
        None,
        description="router to serve: folder, runs:/… or models:/NAME@ALIAS; default: the "
        "registry's @champion, else the bundled router",
    )
    upstreams: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="tier name → backend: {kind: openai, model, base_url, api_key_env, "
        "timeout_s, dialect, …}; empty: answer from the bundled recorded outcomes (replay)",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="bearer keys clients must send; empty disables auth (logged loudly)",
    )
    default_step: str = Field("default", description="step kind when a request names none")
    request_timeout_s: float = Field(60.0, gt=0, description="per-request deadline")
    max_concurrency: int = Field(64, ge=1, description="requests in flight before 503")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="request body limit (413)")
    upstream_retries: int = Field(2, ge=0, le=10, description="top-tier retries on failure")
    retry_backoff_s: float = Field(0.25, ge=0, description="first retry wait; doubles after")
    small_timeout_s: float = Field(
        20.0, gt=0, description="default timeout of the tiers below the top (then escalate)"
    )
    reload_interval_s: float = Field(
        10.0, ge=0, description="how often to check the registry alias (0: never)"
    )
    batch_max_wait_ms: float = Field(
        2.0,
        ge=0,
        le=100,
        description="longest wait of a /v1/route micro-batch for requests already admitted",
    )
    batch_max_size: int = Field(64, ge=1, le=4096, description="largest decision micro-batch")
    readiness_timeout_s: float = Field(2.0, gt=0, description="upstream probe timeout")
    log_level: str = Field("info", description="debug | info | warning | error")
    trace_content: bool | None = Field(
        None,
        description="record prompts and answers on the trace spans (None: as "
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT says; tracing itself is on when "
        "OTEL_TRACES_EXPORTER names an exporter)",
    )

    @field_validator("upstreams")
    @classmethod
    def _check_upstreams(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for tier, spec in value.items():
            if not isinstance(spec, dict):
                raise ValueError(f"upstream {tier!r} must be a mapping")
            if "api_key" in spec:
                raise ValueError(
                    f"upstream {tier!r}: put its key in an environment variable and name it "
                    "with api_key_env (keys are never read from config)"
                )
            unknown = sorted(set(spec) - UPSTREAM_KEYS)
            if unknown:
                raise ValueError(
                    f"upstream {tier!r} has unknown key(s) {', '.join(unknown)}; allowed: "
                    f"{', '.join(sorted(UPSTREAM_KEYS))}"
                )
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("log_level must be debug, info, warning or error")
        return value.lower()

    @classmethod
    def load(cls, config_file: Path | str | None = None, **overrides: Any) -> ServiceSettings:
        """Settings from a config file (TOML or JSON), the environment and ``overrides``.

        Raises:
            ConfigurationError: unreadable file or invalid values (names the field).
        """
        values: dict[str, Any] = read_config_file(Path(config_file)) if config_file else {}
        try:
            from_env = cls()
            values.update({k: getattr(from_env, k) for k in from_env.model_fields_set})
            values.update({k: v for k, v in overrides.items() if v is not None})
            return cls(**values)
        except ValidationError as exc:
            raise ConfigurationError(describe_validation_error(exc)) from exc


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a ``.toml`` or ``.json`` config file."""
    if not path.is_file():
        raise ConfigurationError(f"config file {path} does not exist")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            raise ConfigurationError(f"config file {path}: use a .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"config file {path} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"config file {path} must hold a mapping of settings")
    return data


def describe_validation_error(exc: ValidationError) -> str:
    """One line per invalid setting: ``field: message``."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"{where}: {error['msg']}")
    return "invalid settings: " + "; ".join(lines)
