"""The data files that ship inside the package (``router/resources``)."""

from __future__ import annotations

from pathlib import Path

from router.errors import ConfigurationError

BUNDLED_DATASETS: dict[str, str] = {
    "mmlu_pro": "mmlu_pro.parquet",
    "gsm8k": "gsm8k.parquet",
    "routerbench": "routerbench.parquet",
    # SmolLM2-135M-Instruct's answers and extra samples, recorded here (cascade-router record)
    "routerbench_smollm2": "routerbench_smollm2.parquet",
    # BFCL tool-selection questions answered by SmolLM2-135M and Gemma-3-270M, graded by BFCL's
    # checker (cascade-router record --bfcl; the requests and grades in tools_bfcl.jsonl.gz)
    "tools": "tools.parquet",
}


def resources_dir() -> Path:
    """The package's resource folder (``router/resources``)."""
    return Path(__file__).resolve().parent.parent / "resources"


def bundled_data_dir() -> Path:
    """Return the folder of the data files shipped with the package (``router/resources/data``)."""
    return resources_dir() / "data"


def bundled_dataset(name: str) -> Path:
    """Return the path of a bundled dataset: ``mmlu_pro``, ``gsm8k``, ``routerbench``,
    ``routerbench_smollm2`` or ``tools``.

    Raises:
        ConfigurationError: ``name`` is not one of the bundled datasets.
    """
    try:
        filename = BUNDLED_DATASETS[name]
    except KeyError:
        available = ", ".join(sorted(BUNDLED_DATASETS))
        raise ConfigurationError(
            f"unknown bundled dataset {name!r}; available: {available}"
        ) from None
    return bundled_data_dir() / filename
