"""Logistic regression baseline: balanced L2 logistic regression on scaled numerics and
one-hot categoricals, calibrated on the validation split."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from churn_assets.training.candidates.base import BASELINE, CandidateParams, FitContext
from churn_assets.training.candidates.sklearn_common import SklearnCandidate, fit_pipeline, sklearn_preprocessor
from churn_assets.training.model import ChurnModel, calibrate

if TYPE_CHECKING:
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
    fit_pipeline(pipeline, split, spec)
    model = ChurnModel(CANDIDATE, spec, pipeline, {**params, "seed": seed})
    return calibrate(model, split, seed)


class LogisticRegressionCandidate(SklearnCandidate):
    algorithm = LOGISTIC_REGRESSION
    asset = "baseline_models"
    role = BASELINE
    description = "Balanced logistic regression (one-hot categoricals, scaled numerics)."
    Params = LogisticRegressionParams

    def fit(self, split: Split, spec: FeatureSpec, params: LogisticRegressionParams,
            context: FitContext) -> ChurnModel:
        return train_logistic_regression(split, spec, seed=context.seed, **params.model_dump())


CANDIDATE = LogisticRegressionCandidate()
