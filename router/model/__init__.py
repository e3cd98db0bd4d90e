"""The learned part of a router: calibrated acceptance models per tier and the fitted policy.

:class:`CascadeModel` is the estimator (``fit(table, embedder)``); :class:`AcceptanceModel` is
one calibrated LightGBM booster, cross-fitted over :class:`Folds`; :class:`PreAnswerMembers`
are the linear and nearest-neighbour estimators averaged with (or instead of) the pre-answer
boosters; :class:`OutOfFold` holds a fitted model's out-of-fold outcomes (``oof_``).
"""

from __future__ import annotations

from router.model.acceptance import AcceptanceModel, LinearScore
from router.model.calibration import ProbabilityCalibrator
from router.model.cascade import CascadeModel, has_answers
from router.model.crossfit import CAPACITY_GRID, POST_BLEND_GRID, CrossFit, cross_fit
from router.model.folds import Folds
from router.model.members import (
    CrossFitMembers,
    LinearAcceptance,
    MemberChoice,
    NeighbourAcceptance,
    PreAnswerMembers,
    choose_members,
    cross_fit_members,
)
from router.model.oof import OutOfFold
from router.model.persistence import FORMAT_VERSION, NEIGHBOURS_FILE, READABLE_FORMATS
from router.model.single_row import SingleRowPredictor
from router.model.table_features import OpinionInputs, TableFeatures, subset_features

__all__ = [
    "CAPACITY_GRID",
    "FORMAT_VERSION",
    "NEIGHBOURS_FILE",
    "POST_BLEND_GRID",
    "READABLE_FORMATS",
    "AcceptanceModel",
    "CascadeModel",
    "CrossFit",
    "CrossFitMembers",
    "Folds",
    "LinearAcceptance",
    "LinearScore",
    "MemberChoice",
    "NeighbourAcceptance",
    "OpinionInputs",
    "OutOfFold",
    "PreAnswerMembers",
    "ProbabilityCalibrator",
    "SingleRowPredictor",
    "TableFeatures",
    "choose_members",
    "cross_fit",
    "cross_fit_members",
    "has_answers",
    "subset_features",
]
