"""The candidate registry: every algorithm training, the registry, evaluation, SHAP and
scoring dispatch on (see ``base.Candidate`` for the protocol).

Adding a candidate is one module that defines ``CANDIDATE = MyCandidate()`` plus its line
in ``CANDIDATE_MODULES``. Modules import their heavy libraries inside their methods, so
reading the registry costs nothing at code-location load.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from churn_assets.training.candidates.base import Candidate

CANDIDATE_MODULES = (
    "churn_assets.training.candidates.logistic_regression",
    "churn_assets.training.candidates.random_forest",
    "churn_assets.training.candidates.tuned_xgboost",
    "churn_assets.training.candidates.lightgbm_model",
    "churn_assets.training.candidates.ensemble",
)


class UnknownCandidateError(KeyError):
    """An algorithm name that no registered candidate has."""

    def __str__(self) -> str:
        return str(self.args[0])


@cache
def registered() -> dict[str, Candidate]:
    """Every registered candidate by algorithm name, in registration order."""
    found: dict[str, Candidate] = {}
    for module in CANDIDATE_MODULES:
        entry = importlib.import_module(module).CANDIDATE
        if entry.algorithm in found:
            raise ValueError(f"Two candidates are called {entry.algorithm!r}")
        found[entry.algorithm] = entry
    return found


def candidate(algorithm: str) -> Candidate:
    try:
        return registered()[algorithm]
    except KeyError:
        raise UnknownCandidateError(
            f"Unknown candidate {algorithm!r}; registered: {', '.join(registered())}") from None


def candidate_assets() -> dict[str, list[Candidate]]:
    """Candidates grouped by the ml/<asset> that trains them, in registration order."""
    assets: dict[str, list[Candidate]] = {}
    for entry in registered().values():
        assets.setdefault(entry.asset, []).append(entry)
    return assets
