"""A trained churn model, and what every candidate shares: metrics, calibration, folds.

Every candidate's ``fit`` returns a ``ChurnModel``: the fitted estimator, the feature spec it
was trained with, and a probability calibration fitted on the validation split (or on
cross-fitted out-of-fold predictions). ``predict_proba`` applies the same preprocessing and
calibration for training, evaluation and scoring; what is algorithm-specific (prediction,
files, explanations) is asked of the candidate named by ``algorithm``.

Class imbalance is handled by weighting (balanced class weights, ``scale_pos_weight``);
weighting inflates the predicted churn rate, which the calibration step then corrects
when it lowers the validation log loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from churn_assets.training.columns import FeatureSpec, feature_frame

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from churn_assets.training.candidates.base import Candidate
    from churn_assets.training.split import Split

# Probabilities are clipped before logit / log loss so a confident 0 or 1 stays finite.
EPS = 1e-6


@dataclass
class ChurnModel:
    """A trained (or loaded) churn model that scores raw training-set rows."""

    # The candidate (algorithm) that trained it: it predicts, saves and explains the model.
    candidate: Candidate
    feature_spec: FeatureSpec
    estimator: Any
    params: dict
    calibration: dict = field(default_factory=lambda: {"method": "none"})
    version: str | None = None
    manifest: dict = field(default_factory=dict)
    # Raw predictions for split parts the final estimator was trained on, each row predicted
    # by a cross-fitted model that did not see it (refit on train+valid). Kept in memory only:
    # ``evaluate`` uses them so validation metrics stay out-of-sample.
    held_out_raw: dict = field(default_factory=dict, repr=False)
    # Facts about the fit a candidate wants kept (a tuning study, say): saved as extra.json
    # and shown on the training asset.
    report: dict = field(default_factory=dict, repr=False)
    # On small random splits: out-of-fold raw predictions of train + valid (in that order) by
    # models with the same settings that did not see the row, and each fold's AUC. Every
    # candidate is then compared by the same K-fold cross-validation (``cv_auc``).
    cross_validation: dict = field(default_factory=dict, repr=False)
    # Threads a prediction may use (None: the estimator's own setting); see ``use_threads``.
    predict_threads: int | None = field(default=None, repr=False)

    @property
    def algorithm(self) -> str:
        return self.candidate.algorithm

    def features(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input columns as it sees them (categoricals with the training levels)."""
        return feature_frame(frame, self.feature_spec)

    def predict_raw(self, frame: pd.DataFrame) -> np.ndarray:
        """Uncalibrated churn probabilities."""
        return self.candidate.predict_raw(self, frame)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probabilities, one per row of ``frame``."""
        return apply_calibration(self.calibration, self.predict_raw(frame))

    def use_threads(self, threads: int) -> ChurnModel:
        """Predict with ``threads`` threads from now on. A service answering one row at a time
        wants one: a booster's OpenMP threads cost more to wake than a row costs to score, and
        two boosters' idle threads spin against each other (measured: an ensemble's row 5x slower)."""
        self.predict_threads = threads
        self.candidate.use_threads(self, threads)
        return self

    @property
    def matrix_dtype(self) -> str | None:
        """The dtype of the matrix ``predict_proba_matrix`` reads; None: score frames only."""
        return self.candidate.matrix_dtype_for(self)

    def predict_proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated churn probabilities of a feature matrix (``Candidate.predict_matrix``)."""
        return apply_calibration(self.calibration, self.candidate.predict_matrix(self, matrix))


# -- metrics and calibration ------------------------------------------------------------


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    probabilities = np.clip(probabilities, EPS, 1 - EPS)
    return {
        "auc": float(roc_auc_score(labels, probabilities)),
        "logloss": float(log_loss(labels, probabilities, labels=[0, 1])),
        "brier": float(brier_score_loss(labels, probabilities)),
        "average_precision": float(average_precision_score(labels, probabilities)),
        "mean_prediction": float(np.mean(probabilities)),
        "positive_rate": float(np.mean(labels)),
    }


def logit(p: np.ndarray) -> np.ndarray:
    import numpy as np

    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def _fit_calibrator(method: str, raw: np.ndarray, labels: np.ndarray) -> dict:
    import numpy as np

    if method == "none":
        return {"method": "none"}
    if method == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        fit = LogisticRegression(C=1e6, solver="lbfgs").fit(logit(raw).reshape(-1, 1), labels)
        return {"method": "sigmoid", "slope": float(fit.coef_[0, 0]), "intercept": float(fit.intercept_[0])}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        fit = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, labels)
        return {
            "method": "isotonic",
            "x": [float(v) for v in np.asarray(fit.X_thresholds_)],
            "y": [float(v) for v in np.asarray(fit.y_thresholds_)],
        }
    raise ValueError(f"Unknown calibration method {method!r}")


def apply_calibration(calibration: dict, raw: np.ndarray) -> np.ndarray:
    """Map raw probabilities through a calibration stored as plain JSON."""
    import numpy as np

    method = calibration["method"]
    if method == "none":
        calibrated = np.asarray(raw, dtype="float64")
    elif method == "sigmoid":
        z = calibration["slope"] * logit(raw) + calibration["intercept"]
        calibrated = 1.0 / (1.0 + np.exp(-z))
    elif method == "isotonic":
        calibrated = np.interp(raw, calibration["x"], calibration["y"])
    else:
        raise ValueError(f"Unknown calibration method {method!r}")
    factor = calibration.get(SAMPLE_ODDS_FACTOR)
    if factor is None:
        return calibrated
    # Trained on a sample that kept the classes at different fractions: its odds of churn
    # are the population's times (positive fraction / negative fraction); undo that.
    return calibrated * factor / (calibrated * factor + 1.0 - calibrated)


SAMPLE_ODDS_FACTOR = "sample_odds_factor"


def correct_for_sampling(model: ChurnModel, odds_factor: float | None) -> ChurnModel:
    """``model`` trained on a class-stratified sample (training/spark_sample.py) whose kept
    fractions differ by class: its probabilities are mapped back to the population's odds
    (``TrainingSample.odds_factor``). The factor is part of the calibration, so every scoring
    path (batch, Spark, serving) and the saved model apply it. Rank order, hence AUC, is kept."""
    if odds_factor is not None:
        model.calibration = {**model.calibration, SAMPLE_ODDS_FACTOR: float(odds_factor)}
    return model


def choose_calibration(raw: np.ndarray, labels: np.ndarray, seed: int, folds: int = 5) -> dict:
    """Pick none / sigmoid / isotonic by cross-validated log loss on the validation split.

    Cross-validating inside the validation rows keeps the choice honest: fitted and scored
    on the same rows, isotonic regression would always look best.
    """
    import numpy as np
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    scarcer_class = min(int(labels.sum()), int(len(labels) - labels.sum()))
    if scarcer_class < 2:
        # One row of a class cannot sit on both sides of a fold: a fitted calibrator would
        # see one class only. Nothing to choose between, so the scores stay as they are.
        return {"method": "none", "cv_logloss": {}, "skipped": f"the validation split has {scarcer_class} row(s) of a class"}
    folds = max(2, min(folds, scarcer_class))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores: dict[str, float] = {}
    for method in ("none", "sigmoid", "isotonic"):
        out_of_fold = np.empty(len(labels))
        for fit_rows, score_rows in splitter.split(raw, labels):
            calibrator = _fit_calibrator(method, raw[fit_rows], labels[fit_rows])
            out_of_fold[score_rows] = apply_calibration(calibrator, raw[score_rows])
        scores[method] = float(log_loss(labels, np.clip(out_of_fold, EPS, 1 - EPS), labels=[0, 1]))
    best = min(scores, key=lambda m: (scores[m], m != "none"))
    chosen = _fit_calibrator(best, raw, labels)
    chosen["cv_logloss"] = {m: round(v, 6) for m, v in scores.items()}
    return chosen


def evaluate(model: ChurnModel, split: Split) -> dict[str, float]:
    """Validation and test metrics of the calibrated model, flattened for the registry."""
    label = model.feature_spec.roles.label_column
    metrics: dict[str, float] = {}
    for name in ("valid", "test"):
        part = split.parts()[name]
        held_out = model.held_out_raw.get(name)
        if held_out is not None and len(held_out) == len(part):
            probabilities = apply_calibration(model.calibration, held_out)
        else:
            probabilities = model.predict_proba(part)
        for metric, value in binary_metrics(part[label].to_numpy(), probabilities).items():
            metrics[f"{name}_{metric}"] = value
    if model.cross_validation:
        import numpy as np
        from sklearn.metrics import roc_auc_score

        pool = train_and_valid(split)
        metrics["cv_auc"] = float(roc_auc_score(pool[label].to_numpy(), model.cross_validation["raw"]))
        metrics["cv_auc_std"] = float(np.std(model.cross_validation["fold_aucs"]))
    elif not cross_validates(split):
        # Out of time (or too large for folds), the selection score is the validation AUC;
        # cv_auc records it so every version has one comparable number (cv_auc_std stays NULL).
        metrics["cv_auc"] = metrics["valid_auc"]
    return metrics


def calibrate(model: ChurnModel, split: Split, seed: int) -> ChurnModel:
    label = model.feature_spec.roles.label_column
    raw = model.predict_raw(split.valid)
    model.calibration = choose_calibration(raw, split.valid[label].to_numpy(), seed)
    return model


# -- folds ----------------------------------------------------------------------------

# Small random splits (one snapshot, up to this many train + valid rows) compare candidates by
# K-fold cross-validation over train + valid: one validation split of a few hundred rows is
# too noisy to choose between models that differ by less than its standard error.
CV_FOLDS = 5
# One-snapshot tables up to this many train + valid rows compare candidates by 5-fold CV (larger
# ones by their validation rows: five refits of every candidate would cost too much).
CV_MAX_ROWS = 100_000


def cross_validates(split: Split) -> bool:
    """Whether candidates on this split are compared by K-fold CV over train + valid."""
    return split.strategy != "out_of_time" and len(split.train) + len(split.valid) <= CV_MAX_ROWS


def cross_validation_record(raw: np.ndarray, labels: np.ndarray,
                            folds: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """What ``ChurnModel.cross_validation`` holds: the pooled out-of-fold predictions and fold AUCs."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    return {"raw": np.asarray(raw, dtype="float64"),
            "fold_aucs": [float(roc_auc_score(labels[held], raw[held])) for _, held in folds]}


def train_and_valid(split: Split) -> pd.DataFrame:
    """The rows tuning may look at (train, then valid), in a fixed order."""
    import pandas as pd

    return pd.concat([split.train, split.valid], ignore_index=True)


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified K-fold (fit rows, held-out rows) position pairs."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(np.zeros(len(labels)), labels)]
