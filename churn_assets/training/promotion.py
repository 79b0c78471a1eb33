"""The promotion policy and gate: does the challenger beat the reference on the same test rows?

The challenger is the best candidate of the latest training run by the selection rule
(``registry.select_best``: 5-fold ``cv_auc`` on small random splits, else validation ROC-AUC;
out of sample for every candidate).
The reference is the current champion or, with no champion yet, the best baseline other
than the challenger (so a baseline that wins the selection still faces the other baseline;
the best candidate becomes the first champion unopposed only when no other baseline ran). Both score the challenger's recorded test rows; the gate passes when the challenger's ROC-AUC
exceeds the reference's by more than ``margin`` (and, if asked, when the lower end of the
paired bootstrap confidence interval of the difference is above zero). A challenger that
already is the champion passes without a change.
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
    """When a challenger may replace the champion: read by the blocking ``promotion_gate``
    check, the ``ml/champion`` asset that re-decides before it moves the pointer, and the
    evaluation report's ``beats_baselines`` check, so they can never be configured apart."""

    margin: float = Field(default=0.0, description="ROC-AUC the challenger must gain over the reference.")
    require_significance: bool = Field(
        default=False, description="Also require the bootstrap CI of the AUC difference to exclude 0.")
    bootstrap_samples: int = Field(default=1000, description="Paired bootstrap resamples of the test rows.")
    confidence: float = Field(default=0.95, description="Level of the bootstrap confidence interval.")
    seed: int = Field(default=42, description="Seed of the bootstrap.")


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    challenger_version: str
    reference_version: str | None
    reference_kind: str  # "champion", "best_baseline", "self" or "none" (no champion, no other baseline)
    challenger_auc: float | None
    reference_auc: float | None
    auc_difference: float | None
    ci_low: float | None
    ci_high: float | None
    margin: float
    test_rows: int

    def to_dict(self) -> dict:
        return asdict(self)


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

    labels = np.asarray(labels, dtype="float64")
    difference = float(roc_auc_score(labels, challenger) - roc_auc_score(labels, reference))
    rng = np.random.default_rng(seed)
    n = len(labels)
    prepared = []
    for scores in (challenger, reference):
        order = np.argsort(scores, kind="mergesort")
        sorted_scores = np.asarray(scores)[order]
        groups = np.concatenate([[0], np.cumsum(np.diff(sorted_scores) != 0)])
        prepared.append((order, groups))
    differences = []
    chunk = max(1, min(samples, 2_000_000 // max(n, 1)))
    done = 0
    while done < samples:
        size = min(chunk, samples - done)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype("float64")
        aucs = [
            _weighted_auc(groups, labels[order], weights[:, order]) for order, groups in prepared
        ]
        differences.append(aucs[0] - aucs[1])
        done += size
    values = np.concatenate(differences)
    values = values[np.isfinite(values)]
    alpha = (1 - confidence) / 2
    return difference, float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def evaluate_gate(
    challenger: ChurnModel,
    test: pd.DataFrame,
    *,
    champion: ChurnModel | None,
    baselines: list[ChurnModel],
    settings: PromotionPolicy,
) -> GateDecision:
    """Decide whether ``challenger`` may become champion, scoring every model on ``test``."""
    from sklearn.metrics import roc_auc_score

    label = challenger.feature_spec.roles.label_column
    labels = test[label].to_numpy().astype("int64")
    rows = len(test)
    if champion is not None and champion.version == challenger.version:
        auc = float(roc_auc_score(labels, challenger.predict_proba(test)))
        return GateDecision(True, "the challenger already is the champion", challenger.version,
                            champion.version, "self", auc, auc, 0.0, 0.0, 0.0, settings.margin, rows)
    challenger_scores = challenger.predict_proba(test)
    challenger_auc = float(roc_auc_score(labels, challenger_scores))
    if champion is not None:
        reference, kind = champion, "champion"
        reference_scores = champion.predict_proba(test)
    elif others := [b for b in baselines if b.version != challenger.version]:
        scored = [(float(roc_auc_score(labels, b.predict_proba(test))), b.version or "", b) for b in others]
        _, _, reference = max(scored, key=lambda item: (item[0], item[1]))
        kind = "best_baseline"
        reference_scores = reference.predict_proba(test)
    else:
        return GateDecision(True, "no champion yet and no other baseline to beat: the best candidate by the "
                            "selection rule becomes the first", challenger.version, None, "none", challenger_auc,
                            None, None, None, None, settings.margin, rows)
    difference, low, high = paired_bootstrap_auc_difference(
        labels, challenger_scores, reference_scores,
        samples=settings.bootstrap_samples, confidence=settings.confidence, seed=settings.seed,
    )
    reference_auc = float(roc_auc_score(labels, reference_scores))
    beats = difference > settings.margin
    significant = low > 0 or not settings.require_significance
    passed = bool(beats and significant)
    if passed:
        reason = f"challenger beats the {kind} by {difference:+.4f} AUC (margin {settings.margin})"
    elif not beats:
        reason = (f"challenger AUC {challenger_auc:.4f} does not beat the {kind}'s {reference_auc:.4f} "
                  f"by the margin {settings.margin} (difference {difference:+.4f})")
    else:
        reason = f"difference {difference:+.4f} is not significant: CI [{low:+.4f}, {high:+.4f}] includes 0"
    return GateDecision(passed, reason, challenger.version, reference.version, kind, challenger_auc,
                        reference_auc, difference, low, high, settings.margin, rows)


def gate_decision(con, artifacts_root, policy: PromotionPolicy) -> tuple[GateDecision, dict]:
    """Evaluate the promotion gate for the latest run's best candidate against the warehouse's state."""
    from churn_assets.training.columns import RolesError
    from churn_assets.training.registry import (
        best_of_latest_run, champion_version, latest_run_records, latest_run_versions, load_model_folder,
        models_root, read_artifact, rebuild_split, registered_manifest_sha, selection_metric,
        training_data_version,
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
        "training_data_matches_challenger": current_data == challenger.manifest["training_data_version"],
        "challenger_recorded_test_auc": read_artifact(artifacts_root, challenger_version, "metrics.json")["test_auc"],
    }
    champion_name = champion_version(con)
    champion = None
    if champion_name:
        champion = load(champion_name)
        try:
            champion.predict_proba(test.head(1))
        except RolesError as error:
            # A champion that cannot read today's columns cannot be compared; the best
            # baseline trained on the same data stands in for it.
            context["champion_unusable"] = f"{champion_name}: {error}"
            champion = None
    baselines = [load(v) for v in latest_run_versions(con, "baseline")]
    return evaluate_gate(challenger, test, champion=champion, baselines=baselines, settings=policy), context
