"""Calibrated LightGBM estimate of P(an answer is accepted | features)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from router.errors import ConfigurationError, NotFittedError
from router.model.calibration import ProbabilityCalibrator
from router.model.single_row import SingleRowPredictor

if TYPE_CHECKING:
    from router.model.folds import Folds


class LinearScore:
    """A logistic-regression score on the dense features, stacked under the booster.

    Trees split one feature at a time, so a direction spread over hundreds of embedding
    dimensions is hard for them to find on a few thousand rows; a linear model finds it.
    The booster sees this score as one more feature, computed out of fold on its own rows.
    """

    def __init__(self, C: float = 0.05, folds: int = 5, seed: int = 0) -> None:
        self.C = C
        self.folds = folds
        self.seed = seed

    def _model(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=1000)

    def fit_out_of_fold(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fit on all rows; return each row's score from a model that did not see it."""
        from sklearn.model_selection import StratifiedKFold

        X = np.nan_to_num(np.asarray(X, dtype=np.float64))
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        Z = (X - self.mean_) / self.scale_
        oof = np.zeros(len(Z))
        folds = StratifiedKFold(self.folds, shuffle=True, random_state=self.seed)
        for fit_idx, held in folds.split(Z, y):
            oof[held] = self._model().fit(Z[fit_idx], y[fit_idx]).decision_function(Z[held])
        full = self._model().fit(Z, y)
        self.coef_ = np.asarray(full.coef_[0], dtype=np.float64)
        self.intercept_ = float(full.intercept_[0])
        return oof

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.nan_to_num(np.asarray(X, dtype=np.float64))
        return ((X - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def to_dict(self) -> dict[str, Any]:
        return {
            "C": self.C,
            "folds": self.folds,
            "seed": self.seed,
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearScore:
        lin = cls(data["C"], data["folds"], data["seed"])
        lin.mean_ = np.asarray(data["mean"], dtype=np.float64)
        lin.scale_ = np.asarray(data["scale"], dtype=np.float64)
        lin.coef_ = np.asarray(data["coef"], dtype=np.float64)
        lin.intercept_ = float(data["intercept"])
        return lin


class AcceptanceModel:
    """LightGBM classifier with early stopping, then calibration on scores it never fitted.

    Two ways to fit it:

    * ``fit_folds(X, y, folds)`` (what :class:`~router.model.CascadeModel` does): one booster per
      fold, early-stopped inside the fold's training part, scores the held-out fold; the
      calibrator is fitted on those out-of-fold scores; the final booster is refit on every row
      for the folds' mean number of rounds (scaled to the larger data).  Returns the out-of-fold
      probabilities: no row is scored by a booster that saw it.
    * ``fit(X, y, eval_set=(X_val, y_val), calibration_set=(X_cal, y_cal))``: the booster learns
      on ``X``, stops early on ``eval_set`` and the calibrator is fitted on ``calibration_set``.
    """

    def __init__(
        self,
        n_estimators: int = 1500,
        learning_rate: float = 0.03,
        num_leaves: int = 15,
        min_child_samples: int = 40,
        feature_fraction: float = 0.3,
        bagging_fraction: float = 0.8,
        lambda_l2: float = 1.0,
        early_stopping_rounds: int = 100,
        calibration: str = "isotonic",
        categorical_features: tuple[int, ...] = (0,),
        linear_stack: bool = False,
        linear_C: float = 0.05,
        seed: int = 0,
        num_threads: int = 1,
        max_bin: int = 63,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.lambda_l2 = lambda_l2
        self.early_stopping_rounds = early_stopping_rounds
        self.calibration = calibration
        self.categorical_features = categorical_features
        self.linear_stack = linear_stack
        self.linear_C = linear_C
        self.seed = seed
        self.num_threads = num_threads
        self.max_bin = max_bin

    def _params(self) -> dict[str, Any]:
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "max_bin": self.max_bin,
            "verbosity": -1,
        }

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        eval_set: tuple[np.ndarray, np.ndarray],
        calibration_set: tuple[np.ndarray, np.ndarray],
    ) -> AcceptanceModel:
        """Train the booster with early stopping, then fit the calibrator."""
        import lightgbm as lgb

        y = np.asarray(y, dtype=np.float64)
        # a prepared single-row predictor belongs to the old booster: rebuilt on first use
        self._fast: SingleRowPredictor | bool | None = False
        X_val, y_val = eval_set
        X_cal, y_cal = calibration_set
        self.base_rate_ = float(np.mean(y)) if len(y) else 0.5
        self.n_features_in_ = int(X.shape[1])
        if len(np.unique(y)) < 2:
            # one class only: the honest estimate is the base rate
            self.linear_: LinearScore | None = None
            self.booster_ = None
            self.best_iteration_ = 0
            self.calibrator_ = None
            return self
        categorical = [i for i in self.categorical_features if i < X.shape[1]]
        self.linear_ = None
        if self.linear_stack:
            dense = self._dense_columns(X.shape[1])
            self.linear_ = LinearScore(self.linear_C, seed=self.seed)
            oof = self.linear_.fit_out_of_fold(X[:, dense], y.astype(int))
            X = np.column_stack([X, oof])
            X_val = self._with_linear(X_val)
        train = lgb.Dataset(X, label=y, categorical_feature=categorical, free_raw_data=True)
        valid = lgb.Dataset(X_val, label=np.asarray(y_val, dtype=np.float64), reference=train)
        self.booster_ = lgb.train(
            self._params(),
            train,
            num_boost_round=self.n_estimators,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
        )
        self.best_iteration_ = int(
            self.booster_.best_iteration or self.booster_.current_iteration()
        )
        self.calibrator_ = ProbabilityCalibrator(self.calibration).fit(
            self.decision_function(X_cal), np.asarray(y_cal)
        )
        return self

    def fit_folds(
        self, X: np.ndarray, y: np.ndarray, folds: Folds, inner_val: float = 0.15
    ) -> np.ndarray:
        """Cross-fit: out-of-fold calibrated probabilities of every row (booster and calibrator
        fitted without the row); the final booster is refit on all rows and calibrated on every
        out-of-fold score."""
        import lightgbm as lgb

        if self.linear_stack:
            raise ConfigurationError("linear_stack is only available with fit(), not fit_folds()")
        y = np.asarray(y, dtype=np.float64)
        if len(y) != len(X) or len(y) != len(folds):
            raise ValueError("X, y and folds differ in length")
        self._fast = False
        self.linear_ = None
        self.base_rate_ = float(np.mean(y)) if len(y) else 0.5
        self.n_features_in_ = int(X.shape[1])
        if len(np.unique(y)) < 2:
            self.booster_ = None
            self.best_iteration_ = 0
            self.calibrator_ = None
            self.fold_iterations_: list[int] = []
            return np.full(len(y), self.base_rate_)
        categorical = [i for i in self.categorical_features if i < X.shape[1]]
        params = self._params()
        data = lgb.Dataset(
            X,
            label=y,
            categorical_feature=categorical,
            params=params | {"feature_pre_filter": False},
            free_raw_data=False,
        ).construct()
        raw = np.zeros(len(y))
        rounds: list[int] = []
        rng = np.random.default_rng(self.seed)
        for k in range(folds.k):
            train, held = folds.train(k), folds.held(k)
            perm = rng.permutation(train)
            n_val = max(1, round(inner_val * len(perm)))
            val, fit_rows = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            if len(np.unique(y[fit_rows])) < 2:
                # a fold whose training part has one class: its base rate, as a margin
                rate = float(np.clip(y[fit_rows].mean(), 1e-6, 1 - 1e-6))
                raw[held] = np.log(rate / (1 - rate))
                continue
            booster = lgb.train(
                params,
                data.subset(fit_rows.tolist()),
                num_boost_round=self.n_estimators,
                valid_sets=[data.subset(val.tolist())],
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
            )
            best = int(booster.best_iteration or booster.current_iteration())
            rounds.append(best)
            raw[held] = booster.predict(X[held], num_iteration=best, raw_score=True)
        self.fold_iterations_ = rounds
        # the refit sees k/(k-1) times the rows of a fold's booster: as many more rounds
        scale = folds.k / max(folds.k - 1, 1)
        self.best_iteration_ = max(1, round(float(np.mean(rounds or [1])) * scale))
        self.booster_ = lgb.train(params, data, num_boost_round=self.best_iteration_)
        self.calibrator_ = ProbabilityCalibrator(self.calibration).fit(raw, y)
        return cross_calibrated(raw, y, folds, self.calibration)

    def _dense_columns(self, n_columns: int) -> np.ndarray:
        return np.array([i for i in range(n_columns) if i not in self.categorical_features])

    def _with_linear(self, X: np.ndarray) -> np.ndarray:
        """The input features plus the stacked linear score, as the booster was trained."""
        if getattr(self, "linear_", None) is None:
            return X
        assert self.linear_ is not None
        score = self.linear_.score(X[:, self._dense_columns(X.shape[1])])
        return np.column_stack([X, score])

    def _check_fitted(self) -> None:
        if not hasattr(self, "base_rate_"):
            raise NotFittedError("AcceptanceModel is not fitted: call fit() first")

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Raw booster margin (uncalibrated); one row goes through LightGBM's single-row path."""
        self._check_fitted()
        if self.booster_ is None:
            return np.zeros(len(X))
        if len(X) == 1:
            fast = self._single_row()
            if fast is not None:
                return np.array([fast.predict(self._with_linear(X)[0])])
        return np.asarray(
            self.booster_.predict(
                self._with_linear(X),
                num_iteration=self.best_iteration_,
                raw_score=True,
                num_threads=self.num_threads,
            ),
            dtype=np.float64,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_fast", None)  # a C handle: rebuilt on first use after unpickling
        return state

    def _single_row(self) -> SingleRowPredictor | None:
        """The prepared single-row predictor, built on first use (None: C API unavailable)."""
        if getattr(self, "_fast", False) is False:
            self._fast = SingleRowPredictor.create(
                self.booster_, self.best_iteration_, self.num_threads
            )
        fast = self._fast
        return fast if isinstance(fast, SingleRowPredictor) else None

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, shape (n, 2): columns P(rejected), P(accepted)."""
        p = self.predict_accept(X)
        return np.column_stack([1.0 - p, p])

    def predict_accept(self, X: np.ndarray) -> np.ndarray:
        """Calibrated P(accepted), shape (n,)."""
        self._check_fitted()
        if self.booster_ is None or self.calibrator_ is None:
            return np.full(len(X), self.base_rate_)
        return self.calibrator_.transform(self.decision_function(X))

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to predict again, as JSON-able data (the booster as text)."""
        self._check_fitted()
        linear = getattr(self, "linear_", None)
        return {
            "params": {
                k: getattr(self, k)
                for k in (
                    "n_estimators",
                    "learning_rate",
                    "num_leaves",
                    "min_child_samples",
                    "feature_fraction",
                    "bagging_fraction",
                    "lambda_l2",
                    "early_stopping_rounds",
                    "calibration",
                    "linear_stack",
                    "linear_C",
                    "seed",
                    "max_bin",
                )
            }
            | {"categorical_features": list(self.categorical_features)},
            "base_rate": self.base_rate_,
            "n_features_in": self.n_features_in_,
            "best_iteration": self.best_iteration_,
            "booster": None if self.booster_ is None else self.booster_.model_to_string(),
            "linear": linear.to_dict() if linear is not None else None,
            "calibrator": None if self.calibrator_ is None else self.calibrator_.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], num_threads: int = 1) -> AcceptanceModel:
        params = dict(data["params"])
        params["categorical_features"] = tuple(params.get("categorical_features", (0,)))
        model = cls(**params, num_threads=num_threads)
        model.base_rate_ = float(data["base_rate"])
        model.n_features_in_ = int(data["n_features_in"])
        model.best_iteration_ = int(data["best_iteration"])
        model.booster_ = None
        if data["booster"] is not None:
            import lightgbm as lgb

            model.booster_ = lgb.Booster(model_str=data["booster"])
        model.linear_ = LinearScore.from_dict(data["linear"]) if data.get("linear") else None
        model.calibrator_ = (
            ProbabilityCalibrator.from_dict(data["calibrator"]) if data["calibrator"] else None
        )
        return model


def cross_calibrated(raw: np.ndarray, y: np.ndarray, folds: Folds, method: str) -> np.ndarray:
    """Out-of-fold probabilities from out-of-fold scores: each fold's rows calibrated by a map
    fitted on the other folds' rows.  A calibrator fitted on all rows and applied to them would
    carry every row's own label back into its probability (isotonic steps are label means): the
    estimates every choice and the certificate are made from would look better than new
    traffic will."""
    out = np.empty(len(raw), dtype=np.float64)
    for k in range(folds.k):
        train, held = folds.train(k), folds.held(k)
        if len(np.unique(y[train])) < 2:  # nothing to map: the other folds' rate
            out[held] = float(np.clip(np.mean(y[train]), 1e-6, 1 - 1e-6))
            continue
        calibrator = ProbabilityCalibrator(method).fit(raw[train], y[train])
        out[held] = calibrator.transform(raw[held])
    return out
