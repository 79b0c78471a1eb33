"""Logistic regression baseline: balanced L2 logistic regression on scaled numerics and
one-hot categoricals, calibrated on the validation split."""

from __future__ import annotations

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

        from churn_assets.training.explain import Contributions

        prepare, classifier = model.estimator.named_steps["prepare"], model.estimator.named_steps["model"]
        encoded = np.asarray(prepare.transform(sklearn_input(features, model.feature_spec)), dtype="float64")
        coef, means = classifier.coef_[0], np.asarray(model.params["input_means"])
        per_column = (encoded - means) * coef
        owners = np.asarray(input_columns_by_feature(prepare))
        names = list(features.columns)
        values = np.column_stack([per_column[:, owners == name].sum(axis=1) for name in names])
        base = float(classifier.intercept_[0] + means @ coef)
        contributions = Contributions(values=values, base_values=np.full(len(features), base),
                                      feature_names=names, method="linear-exact")
        return contributions, encoded @ coef + classifier.intercept_[0]

    def explanation_method(self, model: ChurnModel, approximate: bool = False) -> str:
        return "linear"

    def fit(self, split: Split, spec: FeatureSpec, params: LogisticRegressionParams,
            context: FitContext) -> ChurnModel:
        return train_logistic_regression(split, spec, seed=context.seed, **params.model_dump())


CANDIDATE = LogisticRegressionCandidate()
