"""Where the first tier's second opinions come from.

An :class:`OpinionSource` is one way to buy cheap opinions on the first tier's answer, asked in
parallel with it:

* ``peers``: other cheap models answering the same input (recorded data: their rows);
* ``samples``: ``k`` extra samples of the first tier's own model at a temperature (OpenAI ``n``;
  recorded data: rows of the models :func:`sample_model_names` names, e.g. written by
  ``cascade-router record --samples K``).

The router learns one opinion-aware acceptance model per source, and the policy decides per
request which source to ask, if any (:class:`~router.policy.Operating`).
"""

from __future__ import annotations

from dataclasses import dataclass

from router.errors import ConfigurationError

#: How extra samples of a model are named in recorded data: ``<model>#s1``, ``<model>#s2``, …
SAMPLE_SEPARATOR = "#s"
MAX_SAMPLES = 16


def sample_model_names(model: str, k: int) -> tuple[str, ...]:
    """The recorded-data model names of ``k`` extra samples of ``model``."""
    return tuple(f"{model}{SAMPLE_SEPARATOR}{i}" for i in range(1, k + 1))


def check_samples(samples: int, temperature: float) -> None:
    """Refuse a sample count or temperature that cannot give useful self-samples."""
    if not isinstance(samples, int) or not 0 <= samples <= MAX_SAMPLES:
        raise ConfigurationError(f"samples must be an integer in [0, {MAX_SAMPLES}], got {samples}")
    if samples and not 0.0 < float(temperature) <= 2.0:
        raise ConfigurationError(
            f"sample_temperature must lie in (0, 2] (samples at temperature 0 all agree), "
            f"got {temperature}"
        )


@dataclass(frozen=True)
class OpinionSource:
    """One source of second opinions for the first tier."""

    name: str  # "peers" or "samples"
    #: the recorded-data models that stand for its opinions, one per opinion
    models: tuple[str, ...]
    #: samples only: the sampling temperature (None for peers)
    temperature: float | None = None

    @property
    def is_samples(self) -> bool:
        return self.name == "samples"

    @property
    def size(self) -> int:
        """How many opinions one request buys from this source."""
        return len(self.models)

    def label(self) -> str:
        """Short text for paths and reports: ``peers(phi-3-mini)`` or ``samples(k=3)``."""
        if self.is_samples:
            return f"samples(k={self.size})"
        return f"peers({', '.join(self.models)})"
