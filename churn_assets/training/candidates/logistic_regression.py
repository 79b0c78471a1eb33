"""Logistic regression baseline: balanced L2 logistic regression on scaled numerics and
one-hot categoricals, calibrated on the validation split."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field

from churn_assets.training.candidates.base import BASELINE, CandidateParams, FitContext
from churn_assets.training.candidates.sklearn_common import (
    SklearnCandidate,
    cross_validate_pipeline,
    fit_pipeline,
    sklearn_input,
    sklearn_preprocessor,
)
from churn_assets.training.model import ChurnModel, calibrate

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from churn_assets.training.columns import FeatureSpec
    from churn_assets.training.split import Split

LOGISTIC_REGRESSION = "logistic_regression"


class LogisticRegressionParams(CandidateParams):
    C: float = Field(default=1.0, description="Inverse L2 strength.")
    max_iter: int = Field(default=500, description="lbfgs iterations at most.")


def train_logistic_regression(split: Split, spec: FeatureSpec, *, seed: int = 42, **settings) -> ChurnModel:
    """Balanced logistic regression on scaled numerics and one-hot categoricals
    (settings: ``LogisticRegressionParams``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    settings = LogisticRegressionParams(**settings)
    params = {"C": settings.C, "max_iter": settings.max_iter, "class_weight": "balanced", "solver": "lbfgs"}
    pipeline = Pipeline([
        ("prepare", sklearn_preprocessor(spec, scale=True, one_hot=True)),
        ("model", LogisticRegression(random_state=seed, **params)),
    ])
    cross_validation = cross_validate_pipeline(pipeline, split, spec, seed)
    features = fit_pipeline(pipeline, split, spec)
    # The training rows' mean of every model input column: the reference of the exact
    # linear attributions (coefficient x distance from it), kept with the parameters.
    encoded = pipeline.named_steps["prepare"].transform(features)
    means = [round(float(v), 12) for v in encoded.mean(axis=0)]
    model = ChurnModel(CANDIDATE, spec, pipeline, {**params, "seed": seed, "input_means": means})
    model.cross_validation = cross_validation
    return calibrate(model, split, seed)


def input_columns_by_feature(prepare) -> list[str]:
    """For each column the fitted ColumnTransformer outputs, the feature it came from."""
    owners: list[str] = []
    for name, transformer, columns in prepare.transformers_:
        if name == "categorical":
            for feature, levels in zip(columns, transformer.categories_, strict=True):
                owners += [feature] * len(levels)
        elif name == "numeric":
            owners += list(columns)
            indicator = transformer.named_steps["impute"].indicator_
            if indicator is not None:
                owners += [columns[i] for i in indicator.features_]
    return owners


@dataclass(frozen=True)
class LinearForm:
    """The fitted pipeline as arrays, to score a matrix of category codes and numbers without
    sklearn's per-call overhead (about a millisecond a call: most of a served request). Each
    categorical becomes a one-hot block (its levels, then the missing level, which also takes
    unseen values), each numeric its median where missing plus, where training had missing
    values, an indicator; then the scaler, the coefficients, and per feature the columns it
    became (for the attributions)."""

    block_offsets: np.ndarray  # first one-hot column of each categorical
    block_widths: np.ndarray  # levels + 1 (the missing level) per categorical
    medians: np.ndarray  # per numeric
    indicator_of: np.ndarray  # numeric positions that have a missing indicator
    scale_mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    input_means: np.ndarray  # the training rows' mean of each encoded column
    owners: np.ndarray  # (encoded columns x features): 1 where the column came from the feature

    @property
    def width(self) -> int:
        return len(self.coef)

    def encode(self, matrix: np.ndarray) -> np.ndarray:
        """What the pipeline's ``prepare`` step outputs for these rows."""
        import numpy as np

        matrix = np.asarray(matrix, dtype=np.float64)
        rows, n_categorical = len(matrix), len(self.block_widths)
        encoded = np.zeros((rows, self.width))
        if n_categorical:
            codes = matrix[:, :n_categorical]
            # NaN (missing, or a level never seen in training) takes the block's last column.
            level = np.where(np.isnan(codes), self.block_widths - 1, codes).astype(np.int64)
            encoded[np.arange(rows)[:, None], self.block_offsets + level] = 1.0
        numeric = matrix[:, n_categorical:]
        missing = np.isnan(numeric)
        filled = np.where(missing, self.medians, numeric)
        inputs = np.hstack([filled, missing[:, self.indicator_of]]) if len(self.indicator_of) else filled
        encoded[:, int(self.block_widths.sum()):] = (inputs - self.scale_mean) / self.scale
        return encoded

    def margin(self, encoded: np.ndarray) -> np.ndarray:
        return encoded @ self.coef + self.intercept

    def contributions(self, encoded: np.ndarray, names: list[str]):
        """Exact attributions of a linear model: coefficient x (input - training mean), summed
        over the columns each feature became; and the margin."""
        import numpy as np

        from churn_assets.training.explain import Contributions

        values = ((encoded - self.input_means) * self.coef) @ self.owners
        base = float(self.intercept + self.input_means @ self.coef)
        return Contributions(values=values, base_values=np.full(len(encoded), base), feature_names=names,
                             method="linear-exact"), self.margin(encoded)


# Linear forms of loaded pipelines, built on first use (the pipeline object stays as saved).
_LINEAR_FORMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def linear_form(model: ChurnModel) -> LinearForm:
    """``model``'s pipeline as a ``LinearForm`` (one per pipeline, built on first use)."""
    import numpy as np

    pipeline = model.estimator
    form = _LINEAR_FORMS.get(pipeline)
    if form is not None:
        return form
    spec = model.feature_spec
    prepare, classifier = pipeline.named_steps["prepare"], pipeline.named_steps["model"]
    fitted = {name: transformer for name, transformer, _ in prepare.transformers_}
    widths = np.asarray([len(spec.categories[name]) + 1 for name in spec.roles.categorical], dtype=np.int64)
    if "numeric" in fitted:
        impute, scale = fitted["numeric"].named_steps["impute"], fitted["numeric"].named_steps["scale"]
        medians = np.asarray(impute.statistics_, dtype=np.float64)
        indicator_of = np.asarray(impute.indicator_.features_ if impute.indicator_ is not None else [], dtype=np.int64)
        scale_mean, scale_by = np.asarray(scale.mean_, dtype=np.float64), np.asarray(scale.scale_, dtype=np.float64)
    else:
        medians = scale_mean = scale_by = np.zeros(0)
        indicator_of = np.zeros(0, dtype=np.int64)
    column_owner = np.asarray(input_columns_by_feature(prepare), dtype=object)
    names = list(spec.roles.features)
    form = LinearForm(
        block_offsets=np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64) if len(widths) else widths,
        block_widths=widths, medians=medians, indicator_of=indicator_of, scale_mean=scale_mean, scale=scale_by,
        coef=np.asarray(classifier.coef_[0], dtype=np.float64), intercept=float(classifier.intercept_[0]),
        input_means=np.asarray(model.params["input_means"], dtype=np.float64),
        owners=(column_owner[:, None] == np.asarray(names, dtype=object)[None, :]).astype(np.float64))
    _LINEAR_FORMS[pipeline] = form
    return form


class LogisticRegressionCandidate(SklearnCandidate):
    algorithm = LOGISTIC_REGRESSION
    asset = "baseline_models"
    role = BASELINE
    description = "Balanced logistic regression (one-hot categoricals, scaled numerics)."
    Params = LogisticRegressionParams
    # A linear model's exact attributions: coefficient x (input - training mean), summed
    # over the columns one feature becomes (its one-hot levels, its missing indicator).
    exact_explanations = True

    def margin(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        features = sklearn_input(model.features(frame), model.feature_spec)
        return model.estimator.decision_function(features).astype("float64")

    def contributions(self, model: ChurnModel, features: pd.DataFrame, approximate: bool = False):
        import numpy as np

        prepare = model.estimator.named_steps["prepare"]
        encoded = np.asarray(prepare.transform(sklearn_input(features, model.feature_spec)), dtype="float64")
        return linear_form(model).contributions(encoded, list(features.columns))

    # The matrix path: the pipeline's arithmetic on arrays (``LinearForm``), the same numbers.
    # It reads the pipeline this module builds; the check that it reproduces sklearn's output
    # is tests/test_scoring_matrix.py.
    matrix_dtype = "float64"

    def predict_matrix(self, model: ChurnModel, matrix: np.ndarray) -> np.ndarray:
        return self.raw_from_margin(model, self.margin_matrix(model, matrix))

    def raw_from_margin(self, model: ChurnModel, margin: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        return expit(margin)

    def margin_matrix(self, model: ChurnModel, matrix: np.ndarray) -> np.ndarray:
        form = linear_form(model)
        return form.margin(form.encode(matrix))

    def matrix_contributions(self, model: ChurnModel, matrix: np.ndarray):
        form = linear_form(model)
        return form.contributions(form.encode(matrix), list(model.feature_spec.roles.features))

    def explanation_method(self, model: ChurnModel, approximate: bool = False) -> str:
        return "linear"

    def fit(self, split: Split, spec: FeatureSpec, params: LogisticRegressionParams,
            context: FitContext) -> ChurnModel:
        return train_logistic_regression(split, spec, seed=context.seed, **params.model_dump())


CANDIDATE = LogisticRegressionCandidate()
