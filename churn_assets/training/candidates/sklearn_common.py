"""What the scikit-learn candidates share: input preparation, and their file format.

Pipelines are stored with joblib; the registry verifies every byte against the SHA-256 in
the manifest (and the manifest against ``ml.model_versions``) before anything is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn_assets.training.candidates.base import Candidate
from churn_assets.training.columns import FeatureSpec, categorical_text, feature_frame

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from churn_assets.training.model import ChurnModel

MISSING_CATEGORY = "__missing__"


def sklearn_input(features: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Categoricals as plain strings with an explicit missing level, for sklearn encoders."""
    out = features.copy()
    for name in spec.roles.categorical:
        out[name] = categorical_text(features[name]).fillna(MISSING_CATEGORY).astype(object)
    return out


def sklearn_preprocessor(spec: FeatureSpec, *, scale: bool, one_hot: bool):
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




def fit_pipeline(pipeline, split, spec: FeatureSpec) -> pd.DataFrame:
    """Fit ``pipeline`` on the training split's features and labels; returns those features."""
    features = sklearn_input(feature_frame(split.train, spec), spec)
    pipeline.fit(features, split.train[spec.roles.label_column].to_numpy())
    return features


def cross_validate_pipeline(pipeline, split, spec: FeatureSpec, seed: int) -> dict:
    """Out-of-fold predictions over train + valid from unfitted clones of ``pipeline``
    (``ChurnModel.cross_validation``); empty where the split is not cross-validated."""
    import numpy as np
    from sklearn.base import clone

    from churn_assets.training.model import (
        CV_FOLDS,
        cross_validates,
        cross_validation_record,
        stratified_folds,
        train_and_valid,
    )

    if not cross_validates(split):
        return {}
    pool = train_and_valid(split)
    labels = pool[spec.roles.label_column].to_numpy()
    features = sklearn_input(feature_frame(pool, spec), spec)
    folds = stratified_folds(labels, CV_FOLDS, seed)
    raw = np.empty(len(pool))
    for fit_rows, held_rows in folds:
        fold_model = clone(pipeline).fit(features.iloc[fit_rows], labels[fit_rows])
        raw[held_rows] = fold_model.predict_proba(features.iloc[held_rows])[:, 1]
    return cross_validation_record(raw, labels, folds)


class SklearnCandidate(Candidate):
    """A scikit-learn pipeline ending in a classifier with ``predict_proba``."""

    kinds = frozenset({"scikit-learn"})
    model_file = "model.joblib"

    def predict_raw(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        features = sklearn_input(model.features(frame), model.feature_spec)
        return model.estimator.predict_proba(features)[:, 1]

    def save(self, model: ChurnModel, folder: Path) -> str:
        import joblib

        joblib.dump(model.estimator, folder / self.model_file, compress=3)
        return self.model_file

    def load(self, path: Path, manifest: dict, spec: FeatureSpec) -> Any:
        import joblib

        # Safe only because the registry has just matched these bytes to the version.
        return joblib.load(path)
