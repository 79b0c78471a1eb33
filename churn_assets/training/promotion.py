"""The promotion policy and decision: who is champion after a training run?

The challenger is the best candidate of the latest training run by the selection rule
(``registry.select_best``: 5-fold ``cv_auc`` on small random splits, else validation ROC-AUC;
out of sample for every candidate, so any algorithm can win).

- No champion yet (or one that cannot read today's columns): the challenger becomes champion.
  The selection rule already compared every candidate the same way; a second comparison on
  the test rows would only add that split's noise.
- A champion: both score the challenger's recorded test rows, and the challenger replaces it
  when its ROC-AUC is higher by more than ``margin`` (and, if asked, when the lower end of the
  paired bootstrap confidence interval of the difference is above zero). Otherwise the
  champion stays: a normal outcome, reported with its numbers, not a failure.
- A challenger that already is the champion (the same data, seed and settings trained the
  same model again) changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from churn_assets.training.model import ChurnModel


class PromotionPolicy(dg.ConfigurableResource):
    """When a challenger may replace the champion: read by ``ml/champion``, which decides and
    records the decision, and by the evaluation report's ``beats_baselines`` check, so they
    can never be configured apart."""

    margin: float = Field(default=0.0, description="ROC-AUC the challenger must gain over the champion.")
    require_significance: bool = Field(
        default=False, description="Also require the bootstrap CI of the AUC difference to exclude 0.")
    bootstrap_samples: int = Field(default=1000, description="Paired bootstrap resamples of the test rows.")
    confidence: float = Field(default=0.95, description="Level of the bootstrap confidence interval.")
    seed: int = Field(default=42, description="Seed of the bootstrap.")


# What a decision did.
PROMOTED = "promoted"  # the challenger beat the champion and replaced it
FIRST_CHAMPION = "first_champion"  # no (usable) champion: the challenger became it
KEPT = "kept_champion"  # the challenger did not beat the champion, which stays
UNCHANGED = "unchanged"  # the challenger is the champion


@dataclass(frozen=True)
class GateDecision:
    outcome: str
    reason: str
    challenger_version: str
    champion_version: str | None  # the champion before the decision
    challenger_auc: float | None
    champion_auc: float | None
    auc_difference: float | None
    ci_low: float | None
    ci_high: float | None
    margin: float
    test_rows: int

    @property
    def promotes(self) -> bool:
        """Whether the challenger is champion after the decision (it may already have been)."""
        return self.outcome in (PROMOTED, FIRST_CHAMPION, UNCHANGED)

    @property
    def champion_after(self) -> str:
        return self.challenger_version if self.promotes else self.champion_version

    def to_dict(self) -> dict:
        return {**asdict(self), "champion_after": self.champion_after}


def _weighted_auc(scores_sorted_groups: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC for many weightings at once (rows of ``weights``), ties counted as half.

    ``scores_sorted_groups`` gives each row's rank group (equal scores share a group), rows
    ordered by score ascending.
    """
    import numpy as np

    positive = weights * labels
    negative = weights * (1 - labels)
    groups = scores_sorted_groups
    n_groups = int(groups[-1]) + 1
    pos_by_group = np.zeros((weights.shape[0], n_groups))
    neg_by_group = np.zeros((weights.shape[0], n_groups))
    for row in range(weights.shape[0]):
        pos_by_group[row] = np.bincount(groups, positive[row], minlength=n_groups)
        neg_by_group[row] = np.bincount(groups, negative[row], minlength=n_groups)
    negatives_below = np.cumsum(neg_by_group, axis=1) - neg_by_group
    wins = (pos_by_group * (negatives_below + 0.5 * neg_by_group)).sum(axis=1)
    total = pos_by_group.sum(axis=1) * neg_by_group.sum(axis=1)
    return wins / total


def _bootstrap_draws(labels: np.ndarray, score_sets: list[np.ndarray], *, samples: int,
                     seed: int) -> list[np.ndarray]:
    """ROC-AUC of each score set on the same ``samples`` bootstrap resamples of the rows
    (NaN where a resample lost a class)."""
    import numpy as np

    labels = np.asarray(labels, dtype="float64")
    rng = np.random.default_rng(seed)
    n = len(labels)
    prepared = []
    for scores in score_sets:
        order = np.argsort(scores, kind="mergesort")
        sorted_scores = np.asarray(scores)[order]
        groups = np.concatenate([[0], np.cumsum(np.diff(sorted_scores) != 0)])
        prepared.append((order, groups))
    draws: list[list[np.ndarray]] = [[] for _ in score_sets]
    chunk = max(1, min(samples, 2_000_000 // max(n, 1)))
    done = 0
    while done < samples:
        size = min(chunk, samples - done)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype("float64")
        with np.errstate(invalid="ignore", divide="ignore"):
            for found, (order, groups) in zip(draws, prepared, strict=True):
                found.append(_weighted_auc(groups, labels[order], weights[:, order]))
        done += size
    return [np.concatenate(found) for found in draws]


def bootstrap_aucs(labels: np.ndarray, scores: np.ndarray, *, samples: int, seed: int) -> np.ndarray:
    """ROC-AUC of ``samples`` bootstrap resamples of the rows (draws that lost a class left out)."""
    import numpy as np

    values = _bootstrap_draws(labels, [np.asarray(scores)], samples=samples, seed=seed)[0]
    return values[np.isfinite(values)]


def paired_bootstrap_auc_difference(
    labels: np.ndarray,
    challenger: np.ndarray,
    reference: np.ndarray,
    *,
    samples: int,
    confidence: float,
    seed: int,
) -> tuple[float, float, float]:
    """AUC(challenger) - AUC(reference) and its percentile bootstrap interval, resampling
    the same rows for both models."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    difference = float(roc_auc_score(labels, challenger) - roc_auc_score(labels, reference))
    ours, theirs = _bootstrap_draws(labels, [challenger, reference], samples=samples, seed=seed)
    values = ours - theirs
    values = values[np.isfinite(values)]
    alpha = (1 - confidence) / 2
    return difference, float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def evaluate_gate(
    challenger: ChurnModel,
    test: pd.DataFrame,
    *,
    champion: ChurnModel | None,
    settings: PromotionPolicy,
    champion_unusable: str | None = None,
) -> GateDecision:
    """Decide whether ``challenger`` becomes (or stays) champion, scoring both on ``test``."""
    from sklearn.metrics import roc_auc_score

    label = challenger.feature_spec.roles.label_column
    labels = test[label].to_numpy().astype("int64")
    rows = len(test)
    challenger_scores = challenger.predict_proba(test)
    challenger_auc = float(roc_auc_score(labels, challenger_scores))
    if champion is not None and champion.version == challenger.version:
        return GateDecision(UNCHANGED, "the challenger already is the champion (same model version)",
                            challenger.version, champion.version, challenger_auc, challenger_auc, 0.0, 0.0, 0.0,
                            settings.margin, rows)
    if champion is None:
        reason = ("no champion yet: the best candidate by the selection rule becomes the first"
                  if champion_unusable is None else
                  f"the champion cannot score today's columns ({champion_unusable}): the best candidate replaces it")
        return GateDecision(FIRST_CHAMPION, reason, challenger.version, None, challenger_auc, None, None, None,
                            None, settings.margin, rows)
    champion_scores = champion.predict_proba(test)
    difference, low, high = paired_bootstrap_auc_difference(
        labels, challenger_scores, champion_scores,
        samples=settings.bootstrap_samples, confidence=settings.confidence, seed=settings.seed,
    )
    champion_auc = float(roc_auc_score(labels, champion_scores))
    beats = difference > settings.margin
    significant = low > 0 or not settings.require_significance
    interval = f"{settings.confidence:.0%} CI [{low:+.4f}, {high:+.4f}]"
    if beats and significant:
        outcome = PROMOTED
        reason = (f"challenger {challenger.version} beats champion {champion.version}: test AUC {challenger_auc:.4f} "
                  f"vs {champion_auc:.4f}, difference {difference:+.4f} > margin {settings.margin} ({interval})")
    elif not beats:
        outcome = KEPT
        reason = (f"champion {champion.version} stays: challenger {challenger.version} test AUC {challenger_auc:.4f} "
                  f"vs {champion_auc:.4f}, difference {difference:+.4f} is not above the margin {settings.margin} "
                  f"({interval})")
    else:
        outcome = KEPT
        reason = (f"champion {champion.version} stays: the difference {difference:+.4f} is not significant "
                  f"({interval} includes 0)")
    return GateDecision(outcome, reason, challenger.version, champion.version, challenger_auc, champion_auc,
                        difference, low, high, settings.margin, rows)


def gate_decision(con, artifacts_root, policy: PromotionPolicy) -> tuple[GateDecision, dict]:
    """The promotion decision for the latest run's best candidate against the warehouse's state."""
    from churn_assets.training.candidates.sklearn_common import UntrustedModelError
    from churn_assets.training.columns import RolesError
    from churn_assets.training.registry import (
        ArtifactIntegrityError, best_of_latest_run, champion_version, latest_run_records, load_model_folder, models_root,
        read_artifact, rebuild_split, registered_manifest_sha, selection_metric, training_data_version,
    )
    from churn_assets.training.train import read_training_set

    def load(version: str):
        return load_model_folder(models_root(artifacts_root) / version, version,
                                 registered_manifest_sha(con, version))

    latest = latest_run_records(con)
    challenger_version = best_of_latest_run(con)
    if challenger_version is None:
        raise dg.Failure("No candidate in ml.model_versions: materialize the ml group's candidates "
                         "and ml/model_versions")
    challenger = load(challenger_version)
    frame, _ = read_training_set(con)
    test = rebuild_split(challenger, frame).test
    current_data = training_data_version(frame, challenger.feature_spec.roles.key_columns)
    context = {
        "selected_by": f"best {selection_metric(latest)} of the latest training run",
        "candidates": {r["version"]: r[selection_metric(latest)] for r in latest},
        "training_data_matches_challenger": current_data == challenger.manifest["training_data_version"],
        "challenger_recorded_test_auc": read_artifact(artifacts_root, challenger_version, "metrics.json")["test_auc"],
    }
    champion_name = champion_version(con)
    champion, unusable = None, None
    if champion_name:
        try:
            champion = load(champion_name)
            champion.predict_proba(test.head(1))
        except (RolesError, ArtifactIntegrityError, UntrustedModelError) as error:
            # A champion that cannot read today's columns, or whose files are refused (damaged,
            # or pickles from before skops), cannot be compared: the challenger replaces it.
            unusable = f"{champion_name}: {error}"
            champion = None
    return evaluate_gate(challenger, test, champion=champion, settings=policy, champion_unusable=unusable), context
