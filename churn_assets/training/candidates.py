"""Candidate models: logistic regression and random forest baselines, and XGBoost.

Every candidate is a ``ChurnModel``: the fitted estimator, the feature spec it was trained
with, and a probability calibration fitted on the validation split. ``predict_proba``
applies the same preprocessing and calibration for training, evaluation and scoring.

Class imbalance is handled by weighting (balanced class weights, ``scale_pos_weight``);
weighting inflates the predicted churn rate, which the calibration step then corrects
when it lowers the validation log loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from churn_assets.training.columns import FeatureSpec, categorical_text, feature_frame

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from churn_assets.training.split import Split

LOGISTIC_REGRESSION = "logistic_regression"
RANDOM_FOREST = "random_forest"
XGBOOST = "xgboost"
MISSING_CATEGORY = "__missing__"
# Probabilities are clipped before logit / log loss so a confident 0 or 1 stays finite.
EPS = 1e-6


@dataclass
class ChurnModel:
    """A trained (or loaded) churn model that scores raw training-set rows."""

    algorithm: str
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

    @property
    def booster(self):
        """The xgboost Booster for XGBoost models, else None."""
        return self.estimator if self.algorithm == XGBOOST else None

    def features(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input columns as it sees them (categoricals with the training levels)."""
        return feature_frame(frame, self.feature_spec)

    def dmatrix(self, frame: pd.DataFrame):
        """An xgboost DMatrix of ``frame`` for the booster (e.g. for pred_contribs SHAP)."""
        import xgboost as xgb

        return xgb.DMatrix(self.features(frame), enable_categorical=True,
                           nthread=self.params.get("nthread", 2))

    def predict_raw(self, frame: pd.DataFrame) -> np.ndarray:
        """Uncalibrated churn probabilities."""
        if self.algorithm == XGBOOST:
            return self.estimator.predict(self.dmatrix(frame))
        features = self.features(frame)
        return self.estimator.predict_proba(sklearn_input(features, self.feature_spec))[:, 1]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probabilities, one per row of ``frame``."""
        return apply_calibration(self.calibration, self.predict_raw(frame))


def sklearn_input(features: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Categoricals as plain strings with an explicit missing level, for sklearn encoders."""
    out = features.copy()
    for name in spec.roles.categorical:
        out[name] = categorical_text(features[name]).fillna(MISSING_CATEGORY).astype(object)
    return out


def _sklearn_preprocessor(spec: FeatureSpec, *, scale: bool, one_hot: bool):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    categories = [spec.categories[name] + [MISSING_CATEGORY] for name in spec.roles.categorical]
    if one_hot:
        encoder = OneHotEncoder(categories=categories, handle_unknown="ignore", sparse_output=False)
    else:
        encoder = OrdinalEncoder(
            categories=categories, handle_unknown="use_encoded_value", unknown_value=-1
        )
    numeric_steps = [("impute", SimpleImputer(strategy="median", add_indicator=True))]
    if scale:
        numeric_steps.append(("scale", StandardScaler()))
    transformers = []
    if spec.roles.categorical:
        transformers.append(("categorical", encoder, list(spec.roles.categorical)))
    if spec.roles.numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), list(spec.roles.numeric)))
    return ColumnTransformer(transformers, remainder="drop")


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


def _logit(p: np.ndarray) -> np.ndarray:
    import numpy as np

    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def _fit_calibrator(method: str, raw: np.ndarray, labels: np.ndarray) -> dict:
    import numpy as np

    if method == "none":
        return {"method": "none"}
    if method == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        fit = LogisticRegression(C=1e6, solver="lbfgs").fit(_logit(raw).reshape(-1, 1), labels)
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
        return np.asarray(raw, dtype="float64")
    if method == "sigmoid":
        z = calibration["slope"] * _logit(raw) + calibration["intercept"]
        return 1.0 / (1.0 + np.exp(-z))
    if method == "isotonic":
        return np.interp(raw, calibration["x"], calibration["y"])
    raise ValueError(f"Unknown calibration method {method!r}")


def choose_calibration(raw: np.ndarray, labels: np.ndarray, seed: int, folds: int = 5) -> dict:
    """Pick none / sigmoid / isotonic by cross-validated log loss on the validation split.

    Cross-validating inside the validation rows keeps the choice honest: fitted and scored
    on the same rows, isotonic regression would always look best.
    """
    import numpy as np
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    folds = max(2, min(folds, int(labels.sum()), int(len(labels) - labels.sum())))
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
    return metrics


def calibrate(model: ChurnModel, split: Split, seed: int) -> ChurnModel:
    label = model.feature_spec.roles.label_column
    raw = model.predict_raw(split.valid)
    model.calibration = choose_calibration(raw, split.valid[label].to_numpy(), seed)
    return model


# -- baselines ------------------------------------------------------------------------


def train_logistic_regression(
    split: Split, spec: FeatureSpec, *, C: float = 1.0, max_iter: int = 500, seed: int = 42
) -> ChurnModel:
    """Balanced logistic regression on scaled numerics and one-hot categoricals."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    params = {"C": C, "max_iter": max_iter, "class_weight": "balanced", "solver": "lbfgs"}
    pipeline = Pipeline([
        ("prepare", _sklearn_preprocessor(spec, scale=True, one_hot=True)),
        ("model", LogisticRegression(random_state=seed, **params)),
    ])
    features = sklearn_input(feature_frame(split.train, spec), spec)
    pipeline.fit(features, split.train[spec.roles.label_column].to_numpy())
    model = ChurnModel(LOGISTIC_REGRESSION, spec, pipeline, {**params, "seed": seed})
    return calibrate(model, split, seed)


def train_random_forest(
    split: Split,
    spec: FeatureSpec,
    *,
    n_estimators: int = 100,
    max_depth: int | None = 10,
    min_samples_leaf: int = 5,
    max_rows_per_tree: int = 50_000,
    n_jobs: int = 2,
    seed: int = 42,
) -> ChurnModel:
    """Balanced random forest on ordinal-encoded categoricals; each tree sees at most
    ``max_rows_per_tree`` bootstrap rows so the forest stays fast on large training sets."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    rows = len(split.train)
    max_samples = None if rows <= max_rows_per_tree else max_rows_per_tree / rows
    params = {
        "n_estimators": n_estimators,
        "max_depth": max_depth,
        "min_samples_leaf": min_samples_leaf,
        "max_samples": max_samples,
        "class_weight": "balanced_subsample",
        "max_features": "sqrt",
    }
    pipeline = Pipeline([
        ("prepare", _sklearn_preprocessor(spec, scale=False, one_hot=False)),
        ("model", RandomForestClassifier(random_state=seed, n_jobs=n_jobs, **params)),
    ])
    features = sklearn_input(feature_frame(split.train, spec), spec)
    pipeline.fit(features, split.train[spec.roles.label_column].to_numpy())
    model = ChurnModel(RANDOM_FOREST, spec, pipeline, {**params, "seed": seed})
    return calibrate(model, split, seed)


# -- XGBoost --------------------------------------------------------------------------


def xgboost_matrix(frame: pd.DataFrame, spec: FeatureSpec, nthread: int):
    """A labelled DMatrix of ``frame`` with native categoricals."""
    import xgboost as xgb

    return xgb.DMatrix(feature_frame(frame, spec), label=frame[spec.roles.label_column].to_numpy(),
                       enable_categorical=True, nthread=nthread)


def xgboost_matrices(split: Split, spec: FeatureSpec, nthread: int, train_rows: int | None = None, seed: int = 42):
    """DMatrix for train (optionally a seeded random subsample of it) and validation."""
    train = split.train
    if train_rows and len(train) > train_rows:
        train = train.sample(n=train_rows, random_state=seed).sort_index()
    return xgboost_matrix(train, spec, nthread), xgboost_matrix(split.valid, spec, nthread)


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


def base_xgboost_params(labels: np.ndarray, nthread: int, seed: int) -> dict:
    import numpy as np

    positives = float(np.sum(labels))
    negatives = float(len(labels) - positives)
    return {
        "objective": "binary:logistic",
        "eval_metric": ["logloss", "auc"],
        "tree_method": "hist",
        "max_cat_to_onehot": 4,
        "scale_pos_weight": round(negatives / max(positives, 1.0), 6),
        "nthread": nthread,
        "seed": seed,
        "verbosity": 0,
    }


def train_xgboost(
    split: Split,
    spec: FeatureSpec,
    params: dict,
    *,
    max_rounds: int = 400,
    early_stopping_rounds: int = 30,
    nthread: int = 2,
    seed: int = 42,
    callbacks: list | None = None,
    train_rows: int | None = None,
    calibrate_on_valid: bool = True,
) -> ChurnModel:
    """XGBoost with native categorical support and early stopping on the validation split.

    ``params`` are the tunable hyper-parameters; objective, weighting, threads and seed are
    set here. The stored booster is cut at the best iteration.
    """
    import xgboost as xgb

    dtrain, dvalid = xgboost_matrices(split, spec, nthread, train_rows, seed)
    full_params = {**base_xgboost_params(dtrain.get_label(), nthread, seed), **params}
    booster = xgb.train(
        full_params,
        dtrain,
        num_boost_round=max_rounds,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=early_stopping_rounds,
        callbacks=callbacks or [],
        verbose_eval=False,
    )
    best_iteration = int(booster.best_iteration)
    best_valid_auc = float(booster.best_score)
    booster = booster[: best_iteration + 1]
    recorded = {**full_params, "num_boost_round": best_iteration + 1, "best_valid_auc": best_valid_auc}
    model = ChurnModel(XGBOOST, spec, booster, recorded)
    return calibrate(model, split, seed) if calibrate_on_valid else model


def refit_xgboost_cross_fitted(
    split: Split,
    spec: FeatureSpec,
    params: dict,
    *,
    num_boost_round: int,
    folds: int = 5,
    nthread: int = 1,
    seed: int = 42,
) -> ChurnModel:
    """XGBoost refitted on train + valid for a round count chosen by cross-validation there.

    The validation split is then training data, so calibrating on it would be in-sample.
    Instead each of ``folds`` models, trained on the other folds with the same parameters and
    rounds, predicts its held-out fold; the calibration is chosen and fitted on those
    out-of-fold predictions (cross-fitted calibration), and the validation metrics come from
    them too. The test split is never touched.
    """
    import numpy as np
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    pool = train_and_valid(split)
    labels = pool[spec.roles.label_column].to_numpy()
    full_params = {**base_xgboost_params(labels, nthread, seed), **params}
    dpool = xgboost_matrix(pool, spec, nthread)
    out_of_fold = np.empty(len(pool))
    fold_aucs = []
    for fit_rows, held_rows in stratified_folds(labels, folds, seed):
        booster = xgb.train(full_params, dpool.slice(fit_rows), num_boost_round=num_boost_round,
                            verbose_eval=False)
        out_of_fold[held_rows] = booster.predict(dpool.slice(held_rows))
        fold_aucs.append(float(roc_auc_score(labels[held_rows], out_of_fold[held_rows])))
    booster = xgb.train(full_params, dpool, num_boost_round=num_boost_round, verbose_eval=False)
    recorded = {
        **full_params,
        "num_boost_round": num_boost_round,
        "fitted_on": "train+valid",
        "calibration_fit": f"cross-fitted, {folds} folds over train+valid",
        "cv_auc": float(roc_auc_score(labels, out_of_fold)),
        "cv_fold_aucs": [round(v, 6) for v in fold_aucs],
    }
    model = ChurnModel(XGBOOST, spec, booster, recorded)
    model.calibration = choose_calibration(out_of_fold, labels, seed)
    model.held_out_raw = {"train": out_of_fold[: len(split.train)], "valid": out_of_fold[len(split.train):]}
    return model
