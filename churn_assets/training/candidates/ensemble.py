"""A stacked ensemble of the other candidates: a regularised logistic meta-model on the
log-odds of their calibrated probabilities.

The meta-model is fitted on out-of-sample predictions of the validation split: members
trained on the training split predict it directly; members refitted on train + valid
(the small-data path of the boosters) bring their cross-fitted out-of-fold predictions,
which the registry keeps with them. The meta-model's own validation score is cross-fitted
too (K folds over the validation rows), so the selection rule compares like with like and
the ensemble wins only when stacking really adds something. The test split is never used.

The ensemble's file is JSON (member versions, coefficients); loading it loads each member
from the registry, verified by its own content address, so nothing executes on load.
Explanations use the permutation fallback (the meta-model is linear in the members'
calibrated log-odds, not in their margins).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from churn_assets.training.candidates.base import Candidate, CandidateParams, FitContext
from churn_assets.training.model import ChurnModel, choose_calibration, logit, stratified_folds

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
        default=None, description="Algorithms to stack; default: every other candidate that was trained.")


class StackedModel:
    """Members plus the meta-model's coefficients; ``predict_raw`` of the ensemble."""

    def __init__(self, members: list[ChurnModel], coef: list[float], intercept: float):
        self.members, self.coef, self.intercept = members, coef, intercept

    def member_logits(self, frame: pd.DataFrame) -> np.ndarray:
        import numpy as np

        return np.column_stack([logit(m.predict_proba(frame)) for m in self.members])

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        import numpy as np

        z = self.member_logits(frame) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        return {"members": [m.version for m in self.members], "coef": self.coef, "intercept": self.intercept}


def validation_logits(member: ChurnModel, split: Split) -> np.ndarray:
    """Out-of-sample log-odds of ``member`` on the validation rows."""
    from churn_assets.training.model import apply_calibration

    held_out = member.held_out_raw.get("valid")
    if held_out is not None and len(held_out) == len(split.valid):
        return logit(apply_calibration(member.calibration, held_out))
    if member.params.get("fitted_on") == "train+valid":
        raise ValueError(f"{member.version} was fitted on the validation rows and kept no out-of-fold "
                         "predictions of them: it cannot be stacked")
    return logit(member.predict_proba(split.valid))


def _meta(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, solver="lbfgs", max_iter=1000, random_state=seed)


def train_ensemble(split: Split, spec: FeatureSpec, trained: list[ChurnModel], *, seed: int = 42,
                   **settings) -> ChurnModel:
    import numpy as np

    settings = EnsembleParams(**settings)
    chosen = [m for m in trained if settings.members is None or m.algorithm in settings.members]
    chosen.sort(key=lambda m: (m.algorithm, str(m.version)))
    if len(chosen) < 2:
        raise ValueError(f"A stacked ensemble needs at least two members; got {[m.algorithm for m in chosen]}")
    labels = split.valid[spec.roles.label_column].to_numpy()
    features = np.column_stack([validation_logits(m, split) for m in chosen])
    out_of_fold = np.empty(len(labels))
    folds = max(2, min(settings.folds, int(labels.sum()), int(len(labels) - labels.sum())))
    for fit_rows, held_rows in stratified_folds(labels, folds, seed):
        meta = _meta(settings.C, seed).fit(features[fit_rows], labels[fit_rows])
        out_of_fold[held_rows] = meta.predict_proba(features[held_rows])[:, 1]
    meta = _meta(settings.C, seed).fit(features, labels)
    stacked = StackedModel(chosen, [round(float(c), 12) for c in meta.coef_[0]], round(float(meta.intercept_[0]), 12))
    params = {
        "C": settings.C, "folds": folds, "members": [m.version for m in chosen],
        "weights": dict(zip([m.algorithm for m in chosen], stacked.coef, strict=True)),
        "fitted_on": "valid (cross-fitted)", "seed": seed,
    }
    model = ChurnModel(CANDIDATE, spec, stacked, params)
    model.calibration = choose_calibration(out_of_fold, labels, seed)
    model.held_out_raw = {"valid": out_of_fold}
    return model


class StackedEnsembleCandidate(Candidate):
    algorithm = ENSEMBLE
    asset = "ensemble"
    kinds = frozenset({"scikit-learn"})
    description = "Stacked ensemble: a regularised logistic meta-model on the other candidates' log-odds."
    stacks = True
    Params = EnsembleParams

    def fit(self, split: Split, spec: FeatureSpec, params: EnsembleParams, context: FitContext) -> ChurnModel:
        return train_ensemble(split, spec, context.members, seed=context.seed, **params.model_dump())

    def predict_raw(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        return model.estimator.predict(frame)

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


CANDIDATE = StackedEnsembleCandidate()
