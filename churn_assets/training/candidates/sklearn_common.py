"""What the scikit-learn candidates share: input preparation, and their file format.

Pipelines are stored with skops, not pickle: loading one builds only the types in
``TRUSTED_TYPES`` (plus scikit-learn's own estimators, which skops trusts), so a forged file
cannot run code; one naming any other type is refused with the types named. The registry also
verifies every byte against the SHA-256 in the manifest (and the manifest against
``ml.model_versions``) before anything is read.
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
# Types our pipelines hold that skops does not trust by default. Adding a type here is a
# security decision: skops builds it from the file.
TRUSTED_TYPES = frozenset({"numpy.dtype", "sklearn.tree._tree.Tree"})


class UntrustedModelError(RuntimeError):
    """A model file that would need code or types outside the trusted list to load."""


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


def canonical_skops(data: bytes) -> bytes:
    """The same skops file with the same bytes for the same model: skops names objects (and
    their array files) by ``id()`` and stamps the zip entries with the time, so two saves of
    one model differ, and the version is a hash of the bytes. Ids become their order of first
    appearance, entries are sorted and dated 1980-01-01."""
    import io
    import json
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(source.read("schema.json"))
    renamed: dict[int, int] = {}

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("__id__"), int):
                node["__id__"] = renamed.setdefault(node["__id__"], len(renamed))
            file = node.get("file")
            if isinstance(file, str) and file.endswith(".npy") and file[:-4].isdigit():
                node["file"] = f"{renamed.setdefault(int(file[:-4]), len(renamed))}.npy"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    entries = {"schema.json": json.dumps(schema, indent=2).encode()}
    for name in source.namelist():
        if name != "schema.json":
            entries[f"{renamed[int(name[:-4])]}.npy" if name[:-4].isdigit() else name] = source.read(name)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(info, entries[name])
    return out.getvalue()


class SklearnCandidate(Candidate):
    """A scikit-learn pipeline ending in a classifier with ``predict_proba``."""

    kinds = frozenset({"scikit-learn"})
    model_file = "model.skops"

    def predict_raw(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        features = sklearn_input(model.features(frame), model.feature_spec)
        return model.estimator.predict_proba(features)[:, 1]

    def save(self, model: ChurnModel, folder: Path) -> str:
        import skops.io as sio

        (folder / self.model_file).write_bytes(canonical_skops(sio.dumps(model.estimator)))
        return self.model_file

    def load(self, path: Path, manifest: dict, spec: FeatureSpec) -> Any:
        import skops.io as sio

        if path.suffix != ".skops":
            raise UntrustedModelError(f"{path}: a {path.suffix or 'pickle'} model file would run code when "
                                      "loaded; refusing (models are saved with skops now: retrain with `churn run`)")
        try:
            untrusted = set(sio.get_untrusted_types(file=path))
        except Exception as error:  # skops raises several types for a file that is not its format
            raise UntrustedModelError(f"{path}: not a readable skops file ({error})") from None
        unknown = sorted(untrusted - TRUSTED_TYPES)
        if unknown:
            raise UntrustedModelError(f"{path}: refusing to load types outside the trusted list: {', '.join(unknown)}")
        return sio.load(path, trusted=sorted(untrusted))
