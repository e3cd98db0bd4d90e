"""Certified operating points: Learn-then-Test over the policy's path, with valid p-values.

:mod:`.pvalues` (betting and Hoeffding-Bentkus p-values), :mod:`.ltt` (the path, its outcomes,
fixed-sequence testing), :mod:`.certificate` (what a certificate says), :mod:`.table` (the
per-request lookup table), :mod:`.certified` (a fitted policy's certified points),
:mod:`.confidence` (anytime-valid confidence sequences for monitoring in production).
"""

from __future__ import annotations

from router.policy.certify.certificate import Certificate, target_phrase
from router.policy.certify.certified import GLOBAL, CertifiedPoints, TestingRows, short
from router.policy.certify.confidence import BettingConfidenceSequence, BettingTest
from router.policy.certify.ltt import (
    CandidatePath,
    PathMeans,
    PathOutcomes,
    boundary,
    certify_outcomes,
)
from router.policy.certify.pvalues import METHODS, hb_pvalues, wsr_pvalues
from router.policy.certify.table import CertificateTable

__all__ = [
    "GLOBAL",
    "METHODS",
    "BettingConfidenceSequence",
    "BettingTest",
    "CandidatePath",
    "Certificate",
    "CertificateTable",
    "CertifiedPoints",
    "PathMeans",
    "PathOutcomes",
    "TestingRows",
    "boundary",
    "certify_outcomes",
    "hb_pvalues",
    "short",
    "target_phrase",
    "wsr_pvalues",
]
