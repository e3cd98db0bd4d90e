"""A CascadeModel on disk: ``router.json`` (parameters, fitted state, LightGBM as text) and npz
arrays (the policy's calibration outcomes, the neighbour index); nothing pickled.

The parameters written are the model's ``get_params()``; a few are written in a JSON form of
their own (:data:`_ENCODE`).  Every format since the first still loads:

1. acceptance models, policy;
2. second opinions (peers, answer kinds, opinion models);
3. pre-answer members beside the boosters (``neighbours.npz``), the pre/post blend;
4. self-samples as an opinion source;
5. a multiple-choice answer read with its picked option's text (before: the bare answer);
6. cross-fitted models: every choice made out of fold, kNN alone possible as the pre-answer
   estimate, a blend weight of 1, ``folds``/``capacity_cv_below`` instead of
   ``val_fraction``/``cal_fraction``, the record of the choices (``cv_results``), and the
   validator's verdict read as an answer feature by models trained on data that records it
   (``answer_validity``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router.errors import RouterLoadError
from router.features import StepVocabulary
from router.model.acceptance import AcceptanceModel
from router.model.members import PreAnswerMembers
from router.opinions.agreement import AgreementScorer
from router.policy import CascadePolicy, Target

if TYPE_CHECKING:
    from router.model.cascade import CascadeModel

FORMAT_VERSION = 6  # the newest, the one written
READABLE_FORMATS = tuple(range(1, FORMAT_VERSION + 1))
NEIGHBOURS_FILE = "neighbours.npz"
#: parameters of older formats that no longer exist (the calibration split's shares)
_RETIRED = ("val_fraction", "cal_fraction")
#: parameter values that reproduce what a model of an older format did, where the parameter's
#: default has changed since: (first format with today's default, parameter, older value)
_OLDER_DEFAULTS = ((5, "answer_option_text", False),)

_ENCODE: dict[str, Callable[[CascadeModel], Any]] = {
    "target": lambda m: str(m.target_),
    "peers": lambda m: {"0": list(m.peer_models)} if m.peer_models else {},
    "answer_kinds": lambda m: m.normaliser_registry().to_dict()["steps"],
    "acceptance_params": lambda m: dict(m.get_params()["acceptance_params"] or {}),
}
_DECODE: dict[str, Callable[[Any], Any]] = {
    "target": Target.parse,
    "peers": lambda peers: {int(i): p for i, p in peers.items()},
}


def save_model(model: CascadeModel, path: Path) -> Path:
    """Write ``model`` (fitted) to the folder ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    params = {
        name: _ENCODE[name](model) if name in _ENCODE else value
        for name, value in model.get_params().items()
        if name != "tiers"
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "tiers": list(model.tiers_),
        "params": params,
        "embedder": model.embedder_ref_,
        "embedder_name": model.embedder_name_,
        "steps": list(model.steps_.steps),
        "tier_weights": model.tier_weights_.tolist(),
        "mean_output_tokens": model.mean_output_tokens_,
        "policy": model.policy_.to_dict(),
        "pre_models": [m.to_dict() for m in model.pre_models_],
        "post_models": {
            str(i): [a.to_dict(), b.to_dict()] for i, (a, b) in model.post_models_.items()
        },
        "opinion_models": {
            name: [a.to_dict(), b.to_dict()] for name, (a, b) in model.opinion_models_.items()
        },
        "agreement_threshold": model.scorer_.threshold,
        "pre_members": model.pre_members_.to_dict(),
        "post_blend": model.post_blend_,
        "cv_results": model.cv_results_,
        "answer_validity": bool(model.answer_validity_),
    }
    (path / NEIGHBOURS_FILE).unlink(missing_ok=True)
    if model.pre_members_.arrays():
        np.savez_compressed(path / NEIGHBOURS_FILE, **model.pre_members_.arrays())  # type: ignore[arg-type]
    (path / "router.json").write_text(json.dumps(meta, default=_json_default))
    np.savez_compressed(path / "calibration.npz", **model.policy_.calibration_arrays())  # type: ignore[arg-type]
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_model(cls: type[CascadeModel], path: Path, num_threads: int = 1) -> CascadeModel:
    """Read a model written by :func:`save_model` in any readable format."""
    meta_path = path / "router.json"
    if not meta_path.exists():
        raise RouterLoadError(f"no saved router at {path} (router.json missing)")
    try:
        meta = json.loads(meta_path.read_text())
        version = meta.get("format_version")
        if version not in READABLE_FORMATS:
            raise RouterLoadError(
                f"router at {path} has format {version}; this version reads formats "
                f"{', '.join(map(str, READABLE_FORMATS))}: retrain it or upgrade cascade-router"
            )
        model = cls(tiers=tuple(meta["tiers"]), **_params(meta["params"], version))
        model.validate_params()
        model.embedder_ref_ = meta["embedder"]
        model.embedder_name_ = meta["embedder_name"]
        model.steps_ = StepVocabulary(tuple(meta["steps"]))
        model.tier_weights_ = np.asarray(meta["tier_weights"], dtype=np.float64)
        model.mean_output_tokens_ = list(meta["mean_output_tokens"])
        model.pre_models_ = [AcceptanceModel.from_dict(d, num_threads) for d in meta["pre_models"]]
        model.post_models_ = {
            int(i): (
                AcceptanceModel.from_dict(a, num_threads),
                AcceptanceModel.from_dict(b, num_threads),
            )
            for i, (a, b) in meta["post_models"].items()
        }
        model.opinion_models_ = {
            # formats 2-5 keyed the peers' models by their tier ("0")
            ("peers" if key == "0" else key): (
                AcceptanceModel.from_dict(a, num_threads),
                AcceptanceModel.from_dict(b, num_threads),
            )
            for key, (a, b) in meta.get("opinion_models", {}).items()
        }
        model.scorer_ = AgreementScorer(
            model.normaliser_registry(),
            float(meta.get("agreement_threshold", AgreementScorer.threshold)),
        )
        with np.load(path / "calibration.npz", allow_pickle=False) as arrays:
            model.policy_ = CascadePolicy.from_dict(meta["policy"], dict(arrays))
        model.post_blend_ = float(meta.get("post_blend", 0.0))  # formats 1-2: no blend
        if not 0.0 <= model.post_blend_ <= 1.0:
            raise ValueError(f"post_blend {model.post_blend_} is outside [0, 1]")
        model.pre_members_ = PreAnswerMembers()  # formats 1-2: the boosters alone
        if "pre_members" in meta:
            neighbours = None
            if (path / NEIGHBOURS_FILE).exists():
                with np.load(path / NEIGHBOURS_FILE, allow_pickle=False) as arrays:
                    neighbours = dict(arrays)
            model.pre_members_ = PreAnswerMembers.from_dict(meta["pre_members"], neighbours)
        model.cv_results_ = dict(meta.get("cv_results", {}))
        model.answer_validity_ = bool(meta.get("answer_validity", False))  # formats 1-5: no
    except RouterLoadError:
        raise
    except (KeyError, ValueError, OSError, TypeError) as exc:
        raise RouterLoadError(f"router at {path} is damaged or incompatible: {exc}") from exc
    return model


def _params(stored: dict[str, Any], version: int) -> dict[str, Any]:
    """Constructor arguments from a saved router's ``params``."""
    params = {k: v for k, v in stored.items() if k not in _RETIRED}
    for name, decode in _DECODE.items():
        if name in params:
            params[name] = decode(params[name])
    for since, name, older in _OLDER_DEFAULTS:
        if version < since:
            params.setdefault(name, older)
    return params
