"""ServiceSettings: config file < environment < flags; clear errors for bad values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from router.errors import ConfigurationError
from serving.settings import ServiceSettings
from tests.support.processes import ROOT


def test_defaults_serve_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CASCADE_PORT", "CASCADE_UPSTREAMS", "CASCADE_API_KEYS", "CASCADE_MODEL_URI"):
        monkeypatch.delenv(var, raising=False)
    settings = ServiceSettings.load()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.model_uri is None and settings.upstreams == {} and settings.api_keys == []


def test_file_then_environment_then_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "sidecar.toml"
    config.write_text(
        'port = 9001\nworkers = 2\napi_keys = ["from-file"]\n'
        '[upstreams."gpt-4o-2024-05-13"]\nbase_url = "http://frontier/v1"\n'
        'api_key_env = "OPENAI_API_KEY"\n'
    )
    monkeypatch.setenv("CASCADE_WORKERS", "3")
    settings = ServiceSettings.load(config, port=9100)
    assert settings.port == 9100  # flag beats file
    assert settings.workers == 3  # environment beats file
    assert [k.get_secret_value() for k in settings.api_keys] == ["from-file"]
    assert settings.upstreams["gpt-4o-2024-05-13"]["base_url"] == "http://frontier/v1"
    assert "from-file" not in repr(settings)  # keys are secrets
    as_json = tmp_path / "sidecar.json"
    as_json.write_text(json.dumps({"port": 9002}))
    monkeypatch.delenv("CASCADE_WORKERS")
    assert ServiceSettings.load(as_json).port == 9002


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("port = 'many'", ".toml", "port"),
        ("workers = 0", ".toml", "workers"),
        ("[upstreams.x]\napi_key = 'sk-secret'", ".toml", "environment variable"),
        ("[upstreams.x]\nbase_url = 'u'\ncolour = 'red'", ".toml", "unknown key"),
        ("port = ", ".toml", "not valid"),
        ("{", ".json", "not valid"),
        ("port: 1", ".yaml", ".toml or .json"),
        ("log_level = 'loud'", ".toml", "log_level"),
    ],
)
def test_bad_settings_name_the_field(
    tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    config = tmp_path / f"bad{suffix}"
    config.write_text(content)
    with pytest.raises(ConfigurationError, match=message) as info:
        ServiceSettings.load(config)
    assert "sk-secret" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        ServiceSettings.load(tmp_path / "nope.toml")


def test_serve_with_a_bad_config_exits_2_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("port = 'many'")
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2
    assert "port" in done.stderr and "Traceback" not in done.stderr


def test_upstreams_must_cover_every_tier(tmp_path: Path) -> None:
    from serving.holder import build_backends

    settings = ServiceSettings(upstreams={"small": {"base_url": "http://127.0.0.1:1/v1"}})
    with pytest.raises(ConfigurationError, match="no upstream configured for tier"):
        build_backends(("small", "frontier"), settings)
    backends = build_backends(
        ("small", "frontier"),
        ServiceSettings(
            upstreams={"small": {"base_url": "http://a/v1"}, "frontier": {"model": "gpt-x"}},
            small_timeout_s=3,
            request_timeout_s=40,
        ),
    )
    assert backends["small"].model == "small"
    assert backends["frontier"].model == "gpt-x"
    assert backends["small"].timeout_s == 3 and backends["frontier"].timeout_s == 40  # type: ignore[attr-defined]
