"""The candidate protocol: what training, the registry, evaluation, SHAP and scoring ask of a model.

A candidate is one algorithm. It fits on a split within a budget, predicts raw churn
probabilities, writes and reads its estimator in a format that executes no code when read
(or is verified first), and, when it can, explains rows exactly. Everything that differs
between algorithms lives in the candidate's own module; nothing else branches on the
algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from churn_assets.training.columns import FeatureSpec
    from churn_assets.training.explain import Contributions
    from churn_assets.training.model import ChurnModel
    from churn_assets.training.split import Split
    from churn_assets.training.tuning import TuningSettings

BASELINE = "baseline"
CHALLENGER = "challenger"


class CandidateSkipped(Exception):
    """A candidate that has nothing to fit on this run (an ensemble with fewer than two
    members, say); the run goes on without it and says why."""


class CandidateParams(BaseModel):
    """A candidate's own settings, with their one default each. ``churn.yaml`` (or the
    ``training_policy`` resource's ``candidate_params``) overrides them by name; an unknown
    name is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class FitContext:
    """What a fit may use besides its split and its own parameters."""

    seed: int
    tuning: TuningSettings
    training_data_version: str
    # Where a tuner may keep its state (the Optuna study); None keeps it in memory.
    study_dir: Path | None = None
    # For stacking candidates: the other candidates trained on the same data, loaded.
    members: list[ChurnModel] = field(default_factory=list)


class Candidate:
    """Base class of every candidate; subclasses set the class attributes and override
    ``fit``, ``predict_raw``, ``save`` and ``load`` (``contributions`` when exact
    explanations exist, else the permutation fallback explains the model)."""

    algorithm: ClassVar[str]
    # The ml/<asset> that trains it; candidates sharing an asset train in one step.
    asset: ClassVar[str]
    role: ClassVar[str] = CHALLENGER
    kinds: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = ""
    # Trained after, and from, the other candidates (an ensemble).
    stacks: ClassVar[bool] = False
    # ``contributions`` gives exact attributions (TreeSHAP); otherwise the permutation fallback.
    exact_explanations: ClassVar[bool] = False
    Params: ClassVar[type[CandidateParams]] = CandidateParams
    # Set (to "float32" or "float64") when ``predict_matrix`` scores a plain numeric matrix:
    # batch scoring then builds the matrix in SQL, and the HTTP service from its snapshot,
    # instead of going through a DataFrame.
    matrix_dtype: ClassVar[str | None] = None

    def params(self, overrides: dict[str, Any] | None = None) -> CandidateParams:
        return self.Params(**(overrides or {}))

    def fit(self, split: Split, spec: FeatureSpec, params: CandidateParams, context: FitContext) -> ChurnModel:
        raise NotImplementedError

    def predict_raw(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def predict_matrix(self, model: ChurnModel, matrix: np.ndarray) -> np.ndarray:
        """Uncalibrated churn probabilities of a ``matrix_dtype`` matrix with the model's features
        as columns, in ``feature_spec.roles.features`` order: each categorical as the position of
        its value among ``feature_spec.categories`` (NaN when missing or unseen), as the codes
        of the pandas Categorical that ``model.features`` builds, and numerics as numbers."""
        raise NotImplementedError

    def matrix_dtype_for(self, model: ChurnModel) -> str | None:
        """The dtype ``predict_matrix`` reads for ``model``, or None when it is scored from frames
        only (a candidate whose support depends on the fitted model overrides this)."""
        return self.matrix_dtype

    def raw_from_margin(self, model: ChurnModel, margin: np.ndarray) -> np.ndarray | None:
        """``predict_matrix``'s probabilities from the margin ``matrix_contributions`` gave, when
        they are exactly a function of it (a service explaining a row then predicts it once);
        None when the estimator computes them its own way (a booster's float32 sigmoid)."""
        return None

    def explain_matrix(self, model: ChurnModel, matrix: np.ndarray) -> tuple[Contributions, np.ndarray] | None:
        """``matrix_contributions`` and ``predict_matrix`` of the same rows, computed together where
        that saves work (a service explaining a row predicts it in the same pass): contributions
        and uncalibrated probabilities; None when there are no exact contributions."""
        exact = self.matrix_contributions(model, matrix)
        if exact is None:
            return None
        contributions, margin = exact
        raw = self.raw_from_margin(model, margin)
        return contributions, self.predict_matrix(model, matrix) if raw is None else raw

    def use_threads(self, model: ChurnModel, threads: int) -> None:
        """Make ``model``'s estimator predict with ``threads`` threads (``model.predict_threads``
        is already set; candidates whose estimator holds its own setting apply it here)."""

    def margin_matrix(self, model: ChurnModel, matrix: np.ndarray) -> np.ndarray:
        """Uncalibrated log-odds of the rows of a ``predict_matrix`` matrix."""
        from churn_assets.training.model import logit

        return logit(self.predict_matrix(model, matrix))

    def matrix_contributions(self, model: ChurnModel, matrix: np.ndarray) -> tuple[Contributions, np.ndarray] | None:
        """``contributions`` of the rows of a ``predict_matrix`` matrix (float64 accepted for any
        ``matrix_dtype``): the same values, without a DataFrame. None: explain from frames."""
        return None

    def margin(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        """Uncalibrated log-odds of churn; what ``contributions`` add up to."""
        from churn_assets.training.model import logit

        return logit(self.predict_raw(model, frame))

    def save(self, model: ChurnModel, folder: Path) -> str:
        """Write the estimator into ``folder``; return the file name."""
        raise NotImplementedError

    def load(self, path: Path, manifest: dict, spec: FeatureSpec) -> Any:
        """Read an estimator written by ``save``; ``path`` has been verified against the manifest."""
        raise NotImplementedError

    def contributions(self, model: ChurnModel, features: pd.DataFrame,
                      approximate: bool = False) -> tuple[Contributions, np.ndarray] | None:
        """Exact per-feature contributions to the margin and the margin itself, or None when
        the algorithm has none (the permutation fallback is used)."""
        return None

    def explains_exactly(self, model: ChurnModel) -> bool:
        """Whether ``contributions`` gives ``model``'s exact attributions."""
        return self.exact_explanations

    def explanation_method(self, model: ChurnModel, approximate: bool = False) -> str:
        """The ``method`` recorded beside explanations of ``model``."""
        return "permutation"

    def metadata(self, model: ChurnModel) -> dict[str, Any]:
        """Extra Dagster metadata for the asset that trained ``model`` (a tuning study, say)."""
        return {}
