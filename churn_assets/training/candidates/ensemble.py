"""A stacked ensemble of the other candidates: a regularised logistic meta-model on their
margins (uncalibrated log-odds).

The meta-model is fitted on out-of-sample predictions. On small random splits every member
brings its out-of-fold predictions of train + valid (``ChurnModel.cross_validation``, kept by
the registry), and the meta-model is cross-fitted over all those rows, so the ensemble gets a
``cv_auc`` like every other candidate. On out-of-time splits it is fitted on the validation
month: members trained on the training months predict it directly. Either way its own score
is cross-fitted (K folds), so the selection rule compares like with like and the ensemble wins
only when stacking really adds something. The test split is never used.

The ensemble's margin is ``intercept + sum(weight_i * margin_i)``, linear in its members'
margins, so with members that have exact attributions (the boosters' TreeSHAP, the linear
model's coefficients) its attributions are exact too: the weighted sum of theirs. That is
why, by default, only such members are stacked (the random forest's probabilities are not
additive in log-odds); ``members`` can name others, at the price of permutation
explanations. The ensemble's file is JSON (member versions, weights); loading it loads each
member from the registry, verified by its own content address, so nothing executes on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from churn_assets.training.candidates.base import Candidate, CandidateParams, CandidateSkipped, FitContext
from churn_assets.training.columns import feature_frame
from churn_assets.training.model import (
    ChurnModel,
    choose_calibration,
    cross_validation_record,
    logit,
    stratified_folds,
    train_and_valid,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from churn_assets.training.columns import FeatureSpec
    from churn_assets.training.split import Split

ENSEMBLE = "ensemble"
MODEL_FILE = "ensemble.json"


class EnsembleParams(CandidateParams):
    C: float = Field(default=1.0, description="Inverse L2 strength of the logistic meta-model.")
    folds: int = Field(default=5, description="Cross-fitting folds of the meta-model over the validation rows.")
    members: list[str] | None = Field(
        default=None, description="Algorithms to stack; default: every other trained candidate with exact "
                                  "attributions (the ensemble's are then exact too).")


class StackedModel:
    """Members plus the meta-model's coefficients: the ensemble's margin and probability."""

    def __init__(self, members: list[ChurnModel], coef: list[float], intercept: float):
        self.members, self.coef, self.intercept = members, coef, intercept

    def margin(self, frame: pd.DataFrame) -> np.ndarray:
        import numpy as np

        specs = {json.dumps(m.feature_spec.to_dict(), sort_keys=True) for m in self.members}
        if len(specs) == 1:
            # The members read the same columns: turn the rows into their input once, not per member.
            frame = feature_frame(frame, self.members[0].feature_spec)
        margins = np.column_stack([m.candidate.margin(m, frame) for m in self.members])
        return margins @ np.asarray(self.coef) + self.intercept

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        import numpy as np

        return 1.0 / (1.0 + np.exp(-self.margin(frame)))

    def reads_one_matrix(self) -> bool:
        """Whether every member scores the same matrix (one feature spec, each with a matrix path)."""
        specs = {json.dumps(m.feature_spec.to_dict(), sort_keys=True) for m in self.members}
        return len(specs) == 1 and all(m.matrix_dtype is not None for m in self.members)

    def margin_matrix(self, matrix: np.ndarray) -> np.ndarray:
        import numpy as np

        margins = np.column_stack([m.candidate.margin_matrix(m, np.asarray(matrix, dtype=m.matrix_dtype))
                                   for m in self.members])
        return margins @ np.asarray(self.coef) + self.intercept

    def to_dict(self) -> dict[str, Any]:
        return {"members": [m.version for m in self.members], "coef": self.coef, "intercept": self.intercept}


def validation_margins(member: ChurnModel, split: Split) -> np.ndarray:
    """Out-of-sample margins of ``member`` on the validation rows."""
    held_out = member.held_out_raw.get("valid")
    if held_out is not None and len(held_out) == len(split.valid):
        return logit(held_out)
    if member.params.get("fitted_on") == "train+valid":
        raise ValueError(f"{member.version} was fitted on the validation rows and kept no out-of-fold "
                         "predictions of them: it cannot be stacked")
    return member.candidate.margin(member, split.valid)


def _meta(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, solver="lbfgs", max_iter=1000, random_state=seed)


def train_ensemble(split: Split, spec: FeatureSpec, trained: list[ChurnModel], *, seed: int = 42,
                   **settings) -> ChurnModel:
    import numpy as np

    settings = EnsembleParams(**settings)
    if settings.members is None:
        chosen = [m for m in trained if m.candidate.explains_exactly(m)]
    else:
        chosen = [m for m in trained if m.algorithm in settings.members]
    chosen.sort(key=lambda m: (m.algorithm, str(m.version)))
    if len(chosen) < 2:
        raise CandidateSkipped(f"a stacked ensemble needs at least two members; got {[m.algorithm for m in chosen]}")
    label = spec.roles.label_column
    # On small random splits every member brings out-of-fold predictions of train + valid:
    # the meta-model is fitted on all of those rows, not only the validation split.
    pooled = all(m.cross_validation for m in chosen)
    if pooled:
        labels = train_and_valid(split)[label].to_numpy()
        features = np.column_stack([logit(m.cross_validation["raw"]) for m in chosen])
    else:
        labels = split.valid[label].to_numpy()
        features = np.column_stack([validation_margins(m, split) for m in chosen])
    out_of_fold = np.empty(len(labels))
    folds = max(2, min(settings.folds, int(labels.sum()), int(len(labels) - labels.sum())))
    fold_pairs = stratified_folds(labels, folds, seed)
    for fit_rows, held_rows in fold_pairs:
        meta = _meta(settings.C, seed).fit(features[fit_rows], labels[fit_rows])
        out_of_fold[held_rows] = meta.predict_proba(features[held_rows])[:, 1]
    meta = _meta(settings.C, seed).fit(features, labels)
    stacked = StackedModel(chosen, [round(float(c), 12) for c in meta.coef_[0]], round(float(meta.intercept_[0]), 12))
    params = {
        "C": settings.C, "folds": folds, "members": [m.version for m in chosen],
        "weights": dict(zip([m.algorithm for m in chosen], stacked.coef, strict=True)),
        "fitted_on": "train+valid out-of-fold (cross-fitted)" if pooled else "valid (cross-fitted)", "seed": seed,
    }
    model = ChurnModel(CANDIDATE, spec, stacked, params)
    model.calibration = choose_calibration(out_of_fold, labels, seed)
    if pooled:
        model.held_out_raw = {"valid": out_of_fold[len(split.train):]}
        model.cross_validation = cross_validation_record(out_of_fold, labels, fold_pairs)
    else:
        model.held_out_raw = {"valid": out_of_fold}
    return model


class StackedEnsembleCandidate(Candidate):
    algorithm = ENSEMBLE
    asset = "ensemble"
    kinds = frozenset({"scikit-learn"})
    description = ("Stacked ensemble: a regularised logistic meta-model on the margins of the other candidates "
                   "(by default those with exact attributions), cross-fitted on the validation rows.")
    stacks = True
    Params = EnsembleParams

    def fit(self, split: Split, spec: FeatureSpec, params: EnsembleParams, context: FitContext) -> ChurnModel:
        return train_ensemble(split, spec, context.members, seed=context.seed, **params.model_dump())

    def predict_raw(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        return model.estimator.predict(frame)

    def metadata(self, model: ChurnModel) -> dict[str, Any]:
        import dagster as dg

        return {"ensemble/members": dg.MetadataValue.json(model.params["members"]),
                "ensemble/weights": dg.MetadataValue.json(model.params["weights"])}

    def margin(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        return model.estimator.margin(frame)

    # The matrix path, when every member reads the same matrix: float64, which each member
    # casts to its own dtype (the XGBoost member's float32 is the same rounding as in SQL).
    def matrix_dtype_for(self, model: ChurnModel) -> str | None:
        return "float64" if model.estimator.reads_one_matrix() else None

    def predict_matrix(self, model: ChurnModel, matrix: np.ndarray) -> np.ndarray:
        return self.raw_from_margin(model, model.estimator.margin_matrix(matrix))

    def raw_from_margin(self, model: ChurnModel, margin: np.ndarray) -> np.ndarray:
        import numpy as np

        return 1.0 / (1.0 + np.exp(-margin))

    def use_threads(self, model: ChurnModel, threads: int) -> None:
        for member in model.estimator.members:
            member.use_threads(threads)

    def margin_matrix(self, model: ChurnModel, matrix: np.ndarray) -> np.ndarray:
        return model.estimator.margin_matrix(matrix)

    def contributions(self, model: ChurnModel, features: pd.DataFrame, approximate: bool = False):
        """The weighted sum of the members' exact attributions, or None if one has none."""
        return _weighted_contributions(
            model.estimator, list(features.columns), len(features),
            lambda member: member.candidate.contributions(member, features, approximate=approximate))

    def matrix_contributions(self, model: ChurnModel, matrix: np.ndarray):
        import numpy as np

        return _weighted_contributions(
            model.estimator, list(model.feature_spec.roles.features), len(matrix),
            lambda member: member.candidate.matrix_contributions(member, np.asarray(matrix, dtype=np.float64)))

    def explains_exactly(self, model: ChurnModel) -> bool:
        return all(m.candidate.explains_exactly(m) for m in model.estimator.members)

    def explanation_method(self, model: ChurnModel, approximate: bool = False) -> str:
        return "stacked" if self.explains_exactly(model) else "permutation"

    def save(self, model: ChurnModel, folder: Path) -> str:
        (folder / MODEL_FILE).write_text(json.dumps(model.estimator.to_dict(), sort_keys=True, indent=2) + "\n")
        return MODEL_FILE

    def load(self, path: Path, manifest: dict, spec: FeatureSpec) -> Any:
        from churn_assets.training.registry import load_model_folder

        stored = json.loads(path.read_text())
        # Members are siblings in the models folder; each is verified against its own version.
        root = path.parent.parent
        members = [load_model_folder(root / version, version) for version in stored["members"]]
        return StackedModel(members, stored["coef"], stored["intercept"])


def _weighted_contributions(stacked: StackedModel, names: list[str], rows: int, member_contributions):
    """The intercept plus each member's exact attributions (``member_contributions(member)``)
    times its weight, feature by feature; None if a member has none."""
    import numpy as np

    from churn_assets.training.explain import Contributions

    values = np.zeros((rows, len(names)))
    base = np.full(rows, stacked.intercept)
    margins = []
    for member, weight in zip(stacked.members, stacked.coef, strict=True):
        exact = member_contributions(member)
        if exact is None:
            return None
        part, member_margin = exact
        if part.feature_names == names:
            values += weight * part.values
        else:
            position = {name: i for i, name in enumerate(part.feature_names)}
            columns = [column for column, name in enumerate(names) if name in position]
            values[:, columns] += weight * part.values[:, [position[names[c]] for c in columns]]
        base += weight * part.base_values
        margins.append(member_margin)
    # The same arithmetic as ``StackedModel.margin``: the same margin to the last bit.
    margin = np.column_stack(margins) @ np.asarray(stacked.coef) + stacked.intercept
    return Contributions(values=values, base_values=base, feature_names=names, method="stacked"), margin


CANDIDATE = StackedEnsembleCandidate()
