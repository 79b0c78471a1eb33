"""Random forest baseline: balanced forest on ordinal-encoded categoricals, calibrated on
the validation split."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from churn_assets.training.candidates.base import BASELINE, CandidateParams, FitContext
from churn_assets.training.candidates.sklearn_common import (
    SklearnCandidate,
    cross_validate_pipeline,
    fit_pipeline,
    sklearn_preprocessor,
)
from churn_assets.training.model import ChurnModel, calibrate

if TYPE_CHECKING:
    from churn_assets.training.columns import FeatureSpec
    from churn_assets.training.split import Split

RANDOM_FOREST = "random_forest"


class RandomForestParams(CandidateParams):
    n_estimators: int = Field(default=60, description="Trees in the forest.")
    max_depth: int | None = Field(default=10, description="Depth of each tree at most; None: unlimited.")
    min_samples_leaf: int = Field(default=5, description="Rows per leaf at least.")
    max_rows_per_tree: int = Field(default=50_000, description="Bootstrap rows per tree at most.")
    n_jobs: int = Field(default=2, description="Trees fitted in parallel.")


def train_random_forest(split: Split, spec: FeatureSpec, *, seed: int = 42, **settings) -> ChurnModel:
    """Balanced random forest on ordinal-encoded categoricals; each tree sees at most
    ``max_rows_per_tree`` bootstrap rows (settings: ``RandomForestParams``) so the forest stays fast on large training sets."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    settings = RandomForestParams(**settings)
    rows = len(split.train)
    max_samples = None if rows <= settings.max_rows_per_tree else settings.max_rows_per_tree / rows
    params = {
        "n_estimators": settings.n_estimators,
        "max_depth": settings.max_depth,
        "min_samples_leaf": settings.min_samples_leaf,
        "max_samples": max_samples,
        "class_weight": "balanced_subsample",
        "max_features": "sqrt",
    }
    pipeline = Pipeline([
        ("prepare", sklearn_preprocessor(spec, scale=False, one_hot=False)),
        ("model", RandomForestClassifier(random_state=seed, n_jobs=settings.n_jobs, **params)),
    ])
    cross_validation = cross_validate_pipeline(pipeline, split, spec, seed)
    fit_pipeline(pipeline, split, spec)
    # Trees are grown in parallel (deterministic per random_state), but summing their votes
    # in parallel changes the last bits of a probability from call to call, hence the
    # calibration and the model version: predictions use one thread.
    pipeline.named_steps["model"].n_jobs = 1
    model = ChurnModel(CANDIDATE, spec, pipeline, {**params, "seed": seed})
    model.cross_validation = cross_validation
    return calibrate(model, split, seed)


class RandomForestCandidate(SklearnCandidate):
    algorithm = RANDOM_FOREST
    asset = "baseline_models"
    role = BASELINE
    description = "Balanced random forest (ordinal categoricals), rows per tree capped."
    Params = RandomForestParams

    def fit(self, split: Split, spec: FeatureSpec, params: RandomForestParams, context: FitContext) -> ChurnModel:
        return train_random_forest(split, spec, seed=context.seed, **params.model_dump())


CANDIDATE = RandomForestCandidate()
