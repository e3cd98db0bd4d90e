"""Model prices: USD per million input and output tokens."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from router.data.bundled import resources_dir
from router.errors import ConfigurationError


def load_prices(path: Path | None = None) -> dict[str, tuple[float, float]]:
    """Read a price table: model -> (input, output) USD per million tokens.

    The default is the bundled ``router/resources/prices.json``, whose format is
    ``{"models": {name: {"input_per_mtok": x, "output_per_mtok": y, ...}}}``.  A plain
    ``{name: [x, y]}`` mapping (or ``{name: {"input_per_mtok": ..., ...}}``) is accepted too.

    Raises:
        ConfigurationError: the file is missing, not JSON, or a price is not a number >= 0.
    """
    price_path = Path(path) if path is not None else resources_dir() / "prices.json"
    try:
        raw = json.loads(price_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"price file not found: {price_path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"cannot read price file {price_path}: {exc}") from exc
    table = raw.get("models", raw) if isinstance(raw, dict) else None
    if not isinstance(table, dict):
        raise ConfigurationError(f"price file {price_path}: expected a JSON object of models")
    prices: dict[str, tuple[float, float]] = {}
    for model, entry in table.items():
        if isinstance(entry, Mapping):
            pair: Any = (entry.get("input_per_mtok"), entry.get("output_per_mtok"))
        else:
            pair = entry
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise ConfigurationError(
                f"price file {price_path}: model {model!r} needs an input and an output price"
            )
        values: list[float] = []
        for value in pair:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(
                    f"price file {price_path}: model {model!r} has an invalid price {value!r} "
                    "(expected a number >= 0, USD per million tokens)"
                )
            values.append(float(value))
        prices[str(model)] = (values[0], values[1])
    return prices
