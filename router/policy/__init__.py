"""The cascade policy: when to skip, accept or escalate, fitted to a target the user states.

At each tier ``i`` below the top the policy

* **skips** tier ``i`` when its pre-answer acceptance probability is hopeless
  (below ``skip_threshold``: on the calibration split, nearly all such answers were escalated);
* otherwise calls it, then **escalates** when the expected gain of the next tier,
  ``P(next accepted | x, answer) - P(this accepted | x, answer)``, exceeds ``lam`` times the next
  tier's relative cost, or when the validator refused the answer (a tool call or JSON that does
  not fit the request, :mod:`router.validation`); else **accepts**.

At the first tier, a model trained with opinion sources may also buy **second opinions**, asked
in parallel with the first answer: a cheap peer's answer to the same input, or ``k`` extra
samples of the first tier's own model.  Each source has a fitted band of the pre-answer
probability (where its opinion can change the decision); a request buys the opinions of the
first source whose band holds its pre-answer probability, and none outside every band.  There
the answer-aware probabilities that also see the agreement between the answers replace the plain
ones, and the opinions' cost is charged.

``lam`` is one Lagrangian weight on cost: sweeping it traces the quality–cost curve, and fitting
a :class:`Target` picks it on calibration outcomes, per step kind where the data allows.  The
point is **certified** (:mod:`router.policy.certify`): Learn-then-Test picks the cheapest point
whose target holds, with probability at least ``1 - delta``, on new traffic from the
calibration distribution, and a target it cannot certify is refused with the best one it can.
"""

from __future__ import annotations

from router.policy.cascade_policy import CascadePolicy
from router.policy.certify import Certificate
from router.policy.fitting import choose_operating_point, lambda_grid, opinion_bands
from router.policy.rules import Band, Operating, escalates, first_called, skips, verdict
from router.policy.signals import CascadeSignals
from router.policy.target import Target
from router.policy.walk import Outcome, fit_skip_threshold, walk_recorded

__all__ = [
    "Band",
    "CascadePolicy",
    "CascadeSignals",
    "Certificate",
    "Operating",
    "Outcome",
    "Target",
    "choose_operating_point",
    "escalates",
    "first_called",
    "fit_skip_threshold",
    "lambda_grid",
    "opinion_bands",
    "skips",
    "verdict",
    "walk_recorded",
]
