"""Second opinions on the first tier's answer: where they come from and how they agree."""

from __future__ import annotations

from router.opinions.agreement import AGREEMENT_COLUMNS, N_AGREEMENT, AgreementScorer
from router.opinions.sources import (
    MAX_SAMPLES,
    SAMPLE_SEPARATOR,
    OpinionSource,
    check_samples,
    sample_model_names,
)

__all__ = [
    "AGREEMENT_COLUMNS",
    "MAX_SAMPLES",
    "N_AGREEMENT",
    "SAMPLE_SEPARATOR",
    "AgreementScorer",
    "OpinionSource",
    "check_samples",
    "sample_model_names",
]
