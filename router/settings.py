"""One typed settings object for the whole package, read from the environment (``CASCADE_*``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    """Configuration of cascade-router.

    Every field can be set through an environment variable with the ``CASCADE_`` prefix
    (``CASCADE_TRACKING_URI``, ``CASCADE_CACHE_DIR``, ...) or passed explicitly.
    """

    model_config = SettingsConfigDict(env_prefix="CASCADE_", extra="ignore")

    tracking_uri: str = Field(
        "sqlite:///mlflow.db",
        description="MLflow tracking store: a database URL, or a tracking server's http(s) URL "
        "(credentials from MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN)",
    )
    artifact_location: str = Field("./mlruns", description="MLflow artifact root for experiments")
    experiment: str = Field("cascade-router", description="MLflow experiment name")
    registered_model: str = Field("cascade-router", description="Model Registry name")
    champion_alias: str = Field("champion", description="alias of the production version")
    cache_dir: Path = Field(Path(".cascade-cache"), description="embedding cache folder")
    embedder: str = Field(
        "minilm", description="embedder kind: minilm | static | onnx | onnx-int8 (router.embedders)"
    )
    embed_max_seq_length: int = Field(128, ge=16, le=512, description="tokens the encoder reads")
    embed_max_chars: int = Field(1000, ge=64, description="input window: head and tail characters")
    embed_batch_size: int = Field(64, ge=1)
    embed_threads: int = Field(0, ge=0, description="onnx embedder threads; 0: onnxruntime's")
    embed_lru_size: int = Field(
        4096, ge=0, description="in-memory LRU of embeddings per Router (0: off)"
    )
    seed: int = 0
    capacity_cv_below: int = Field(
        5000,
        ge=0,
        description="train, retrain and simulate choose the boosters' capacity by cross-validation "
        "below this many training prompts (about 3x the fit time); 0: never",
    )
    test_size: float = Field(0.2, gt=0.0, lt=1.0)
    prices_path: Path | None = Field(None, description="prices JSON; default: the bundled one")
    backend_timeout_s: float = Field(30.0, gt=0.0)
    default_router: str | None = Field(
        None, description="URI or folder the module-level route() loads; default: bundled router"
    )
    progress: bool = Field(True, description="show progress bars on long work")
    feedback_url: str = Field(
        "sqlite:///cascade-feedback.db",
        description="feedback store: a SQLAlchemy URL (sqlite:///file.db or postgresql+psycopg://)",
    )
    challenger_alias: str = Field("challenger", description="alias of the version under test")
    previous_alias: str = Field("previous", description="alias of the champion before the last")
    gate_metric: str = Field("apgr", description="evaluation metric the gate compares")
    gate_margin: float = Field(0.005, ge=0.0, description="how much better a challenger must be")
    drift_window: int = Field(500, ge=10, description="latest labels per step that drift reads")
    drift_threshold: float = Field(0.1, gt=0.0, lt=1.0, description="|predicted-observed| flag")
    drift_min_labels: int = Field(50, ge=1, description="labels a step needs to be flagged")
    certificate_alpha: float = Field(
        0.05,
        gt=0.0,
        lt=1.0,
        description="false-alarm risk of the production check of a certified target (whole "
        "stream, anytime-valid)",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials_in_tracking_uri(cls, value: str) -> str:
        # a URL with a password ends up in logs, config files and process listings
        if value.startswith(("http://", "https://")) and urlsplit(value).password is not None:
            raise ValueError(
                "the tracking URI must not carry credentials: give the server's URL alone and "
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
                "MLFLOW_TRACKING_TOKEN) in the environment"
            )
        return value
