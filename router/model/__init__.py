"""The learned part of a router: calibrated acceptance models per tier and the fitted policy.

:class:`CascadeModel` is the estimator (``fit(table, embedder)``); :class:`AcceptanceModel` is
one calibrated LightGBM booster; :class:`PreAnswerMembers` are the linear and nearest-neighbour
estimators averaged with the pre-answer boosters.
"""

from __future__ import annotations

from router.model.acceptance import AcceptanceModel, LinearScore
from router.model.calibration import ProbabilityCalibrator
from router.model.cascade import (
    FORMAT_VERSION,
    NEIGHBOURS_FILE,
    POST_BLEND_GRID,
    READABLE_FORMATS,
    CascadeModel,
)
from router.model.members import (
    LinearAcceptance,
    NeighbourAcceptance,
    PreAnswerMembers,
    choose_members,
    fit_members,
)
from router.model.single_row import SingleRowPredictor
from router.model.splits import FitSplits
from router.model.table_features import OpinionInputs, TableFeatures, subset_features

__all__ = [
    "FORMAT_VERSION",
    "NEIGHBOURS_FILE",
    "POST_BLEND_GRID",
    "READABLE_FORMATS",
    "AcceptanceModel",
    "CascadeModel",
    "FitSplits",
    "LinearAcceptance",
    "LinearScore",
    "NeighbourAcceptance",
    "OpinionInputs",
    "PreAnswerMembers",
    "ProbabilityCalibrator",
    "SingleRowPredictor",
    "TableFeatures",
    "choose_members",
    "fit_members",
    "subset_features",
]
