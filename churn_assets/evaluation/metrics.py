"""Model evaluation on held-out predictions: metrics, business view, slices and checks.

Everything here is a pure function of labels, scores and (for slices) a frame of segment
columns, so it is testable without Dagster or a trained model. The Dagster assets in
``evaluation_assets`` feed it the recorded test split of a registered model.

Conventions:
- ``y_true`` is 0/1, ``y_score`` the predicted churn probability; a customer is flagged
  (targeted with a retention offer) when ``y_score >= threshold``.
- The check functions return ``(passed, metadata)`` with plain Python values, so the assets
  turn them into ``AssetCheckResult`` and tests call them directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DEFAULT_SEGMENT_COLUMNS = ("contract", "senior_citizen", "gender")
TENURE_BAND_COLUMN = "tenure_band"
# Months; a band is [lower, next lower). Early tenure is where churn concentrates, so the
# first bands are narrow.
TENURE_BAND_EDGES = (0, 7, 13, 25, 49)
TENURE_COLUMN_CANDIDATES = ("tenure_months", "tenure")


class EvaluationInputError(ValueError):
    """Labels, scores or segment columns that cannot be evaluated as given."""


@dataclass(frozen=True)
class BusinessAssumptions:
    """What a retention campaign is worth: the inputs to the expected-savings threshold.

    Targeting a customer costs ``offer_cost``. A targeted customer who would have churned
    stays with probability ``offer_success_rate`` and is then worth ``retained_value``;
    a targeted customer who would have stayed anyway only costs the offer.
    """

    # A month's retention offer (e.g. a discount) is cheap next to a customer's lifetime
    # value; with monthly churn near 1.5% a $50 offer would never pay off at any threshold.
    retained_value: float = 500.0
    offer_cost: float = 15.0
    offer_success_rate: float = 0.3

    def __post_init__(self) -> None:
        if self.retained_value < 0 or self.offer_cost < 0:
            raise EvaluationInputError(
                f"retained_value and offer_cost must be >= 0, got {self.retained_value} "
                f"and {self.offer_cost}"
            )
        if not 0.0 <= self.offer_success_rate <= 1.0:
            raise EvaluationInputError(
                f"offer_success_rate must be within [0, 1], got {self.offer_success_rate}"
            )

    @property
    def gain_per_targeted_churner(self) -> float:
        return self.retained_value * self.offer_success_rate - self.offer_cost

    @property
    def gain_per_targeted_stayer(self) -> float:
        return -self.offer_cost


class EvaluationPolicy(dg.ConfigurableResource):
    """How the champion is judged: the business assumptions behind the threshold, the slices
    compared, and the quality bars of the evaluation checks. Read by ml/evaluation_report and
    every check on it (the promotion margin is the promotion policy's)."""

    retained_value: float = Field(default=BusinessAssumptions.retained_value, description="Value of keeping a churner.")
    offer_cost: float = Field(default=BusinessAssumptions.offer_cost, description="Cost of one retention offer.")
    offer_success_rate: float = Field(default=BusinessAssumptions.offer_success_rate,
                                      description="Share of offers that retain a churner.")
    slice_columns: list[str] = Field(default=[], description="Extra categorical columns to slice metrics by.")
    min_slice_rows: int = Field(default=50, description="Smaller slices are not compared.")
    auc_floor: float = Field(default=0.70, description="Test ROC-AUC below this fails the blocking auc_floor check.")
    max_ece: float = Field(default=0.05, description="Expected calibration error that warns.")
    max_slice_gap: float = Field(default=0.10, description="ROC-AUC gap between slices that warns.")
    max_feature_share: float = Field(default=0.5, description="Share of SHAP importance in one feature that warns.")
    auc_ceiling: float = Field(default=0.97, description="Test ROC-AUC above this smells of leakage (warning).")

    def assumptions(self) -> BusinessAssumptions:
        return BusinessAssumptions(self.retained_value, self.offer_cost, self.offer_success_rate)


def validate_predictions(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores as float arrays; raises EvaluationInputError naming the problem."""
    import numpy as np

    labels = np.asarray(y_true, dtype=float).ravel()
    scores = np.asarray(y_score, dtype=float).ravel()
    if labels.shape != scores.shape:
        raise EvaluationInputError(
            f"{labels.size} labels but {scores.size} scores: they must describe the same rows"
        )
    if labels.size == 0:
        raise EvaluationInputError("No rows to evaluate: the labels are empty")
    bad_labels = ~np.isin(labels, (0.0, 1.0))
    if bad_labels.any():
        rows = np.flatnonzero(bad_labels)[:5].tolist()
        raise EvaluationInputError(f"Labels must be 0 or 1 (no NULLs); rows {rows} are not")
    bad_scores = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad_scores.any():
        rows = np.flatnonzero(bad_scores)[:5].tolist()
        raise EvaluationInputError(
            f"Scores must be probabilities within [0, 1]; rows {rows} are not"
        )
    return labels, scores


def expected_calibration_error(y_true: Any, y_score: Any, n_bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of (bin share) * |churn rate - mean score|."""
    import numpy as np

    labels, scores = validate_predictions(y_true, y_score)
    # A score of exactly 1.0 belongs to the last bin, not to an extra one.
    bins = np.minimum((scores * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    label_sums = np.bincount(bins, weights=labels, minlength=n_bins)
    score_sums = np.bincount(bins, weights=scores, minlength=n_bins)
    filled = counts > 0
    gaps = np.abs(label_sums[filled] - score_sums[filled]) / counts[filled]
    return float(np.sum(gaps * counts[filled]) / labels.size)


def _both_classes(labels: np.ndarray) -> bool:
    return 0 < labels.sum() < labels.size


def classification_metrics(
    y_true: Any, y_score: Any, threshold: float = 0.5, *, n_calibration_bins: int = 10
) -> dict[str, float | int]:
    """Ranking, probability and thresholded metrics of one set of predictions.

    ROC-AUC and PR-AUC are NaN when only one class is present (a small slice).
    """
    import numpy as np
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        log_loss,
        roc_auc_score,
    )

    labels, scores = validate_predictions(y_true, y_score)
    flagged = scores >= threshold
    positive = labels == 1
    tp = int(np.sum(flagged & positive))
    fp = int(np.sum(flagged & ~positive))
    fn = int(np.sum(~flagged & positive))
    tn = int(np.sum(~flagged & ~positive))
    two_classes = _both_classes(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "rows": int(labels.size),
        "positives": int(positive.sum()),
        "base_rate": float(labels.mean()),
        "roc_auc": float(roc_auc_score(labels, scores)) if two_classes else math.nan,
        "pr_auc": float(average_precision_score(labels, scores)) if two_classes else math.nan,
        "log_loss": float(log_loss(labels, np.clip(scores, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "brier": float(brier_score_loss(labels, scores)),
        "ece": expected_calibration_error(labels, scores, n_calibration_bins),
        "threshold": float(threshold),
        "accuracy": (tp + tn) / labels.size,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "flagged_rate": float(flagged.mean()),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }


def confusion_matrix(metrics: Mapping[str, Any]) -> list[list[int]]:
    """[[tn, fp], [fn, tp]]: rows are the actual class, columns the prediction (sklearn order)."""
    return [[int(metrics["tn"]), int(metrics["fp"])], [int(metrics["fn"]), int(metrics["tp"])]]


# --- business view ---------------------------------------------------------------------


def expected_savings(
    y_true: Any, y_score: Any, threshold: float, assumptions: BusinessAssumptions
) -> float:
    """Expected net savings of targeting every customer scored at or above ``threshold``."""
    import numpy as np

    labels, scores = validate_predictions(y_true, y_score)
    flagged = scores >= threshold
    churners = float(np.sum(labels[flagged]))
    stayers = float(flagged.sum()) - churners
    return (
        churners * assumptions.gain_per_targeted_churner
        + stayers * assumptions.gain_per_targeted_stayer
    )


@dataclass(frozen=True)
class OptimalThreshold:
    threshold: float
    savings: float
    targeted: int
    # Savings per scored customer, comparable across test sets of different sizes.
    savings_per_customer: float


def optimal_threshold(
    y_true: Any, y_score: Any, assumptions: BusinessAssumptions
) -> OptimalThreshold:
    """The threshold that maximises expected net savings, searched over every distinct score.

    Targeting nobody (savings 0) is always an option: it wins when the offer loses money on
    every ranking, and is reported as threshold 1.0 with ``targeted=0``. Ties go to the
    higher threshold, the smaller campaign.
    """
    import numpy as np

    labels, scores = validate_predictions(y_true, y_score)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    churners = np.cumsum(labels[order])
    targeted = np.arange(1, labels.size + 1)
    savings = (
        churners * assumptions.gain_per_targeted_churner
        + (targeted - churners) * assumptions.gain_per_targeted_stayer
    )
    # Only the last row of a run of equal scores is a reachable cut: a threshold cannot
    # separate customers with the same score.
    last_of_run = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    candidates = np.flatnonzero(last_of_run)
    best = candidates[np.argmax(savings[candidates])]
    if savings[best] <= 0:
        return OptimalThreshold(threshold=1.0, savings=0.0, targeted=0, savings_per_customer=0.0)
    return OptimalThreshold(
        threshold=float(sorted_scores[best]),
        savings=float(savings[best]),
        targeted=int(targeted[best]),
        savings_per_customer=float(savings[best] / labels.size),
    )


def savings_curve(
    y_true: Any, y_score: Any, assumptions: BusinessAssumptions, points: int = 101
) -> pd.DataFrame:
    """Expected net savings and share targeted at evenly spaced thresholds in [0, 1]."""
    import numpy as np
    import pandas as pd

    labels, scores = validate_predictions(y_true, y_score)
    thresholds = np.linspace(0.0, 1.0, points)
    order = np.sort(scores)
    # Customers at or above each threshold, and the churners among them, via sorted scores.
    targeted = labels.size - np.searchsorted(order, thresholds, side="left")
    sorted_labels = labels[np.argsort(scores, kind="stable")]
    churners_from = np.concatenate([np.cumsum(sorted_labels[::-1])[::-1], [0.0]])
    churners = churners_from[labels.size - targeted]
    savings = (
        churners * assumptions.gain_per_targeted_churner
        + (targeted - churners) * assumptions.gain_per_targeted_stayer
    )
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "targeted": targeted.astype(int),
            "targeted_share": targeted / labels.size,
            "churners_targeted": churners.astype(int),
            "expected_savings": savings,
        }
    )


def gains_table(y_true: Any, y_score: Any, groups: int = 10) -> pd.DataFrame:
    """Cumulative gains and lift by score decile (decile 1 = highest scores).

    Rows are ranked by score (ties broken by position) and cut into ``groups`` groups of
    near-equal size, so every decile exists even when scores repeat.
    """
    import numpy as np
    import pandas as pd

    labels, scores = validate_predictions(y_true, y_score)
    if labels.size < groups:
        raise EvaluationInputError(
            f"{labels.size} rows cannot be cut into {groups} score groups"
        )
    order = np.argsort(-scores, kind="stable")
    group_of_rank = (np.arange(labels.size) * groups) // labels.size
    ranked_labels = labels[order]
    customers = np.bincount(group_of_rank, minlength=groups)
    churners = np.bincount(group_of_rank, weights=ranked_labels, minlength=groups)
    min_score = pd.Series(scores[order]).groupby(group_of_rank).min().to_numpy()
    total_churners = labels.sum()
    base_rate = total_churners / labels.size
    cumulative_customers = np.cumsum(customers)
    cumulative_churners = np.cumsum(churners)
    churn_rate = churners / customers
    return pd.DataFrame(
        {
            "decile": np.arange(1, groups + 1),
            "customers": customers,
            "churners": churners.astype(int),
            "min_score": min_score,
            "churn_rate": churn_rate,
            "lift": churn_rate / base_rate if base_rate else np.nan,
            "cumulative_share_customers": cumulative_customers / labels.size,
            "cumulative_gain": cumulative_churners / total_churners if total_churners else np.nan,
            "cumulative_lift": (cumulative_churners / cumulative_customers) / base_rate
            if base_rate
            else np.nan,
        }
    )


# --- slices ----------------------------------------------------------------------------


def tenure_band(tenure_months: Any) -> pd.Series:
    """'0-6', '7-12', '13-24', '25-48', '49+' months; missing tenure stays missing."""
    import numpy as np
    import pandas as pd

    values = pd.to_numeric(pd.Series(tenure_months), errors="coerce")
    edges = list(TENURE_BAND_EDGES) + [np.inf]
    labels = [
        f"{lo}-{hi - 1}" if np.isfinite(hi) else f"{lo}+"
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
    ]
    bands = pd.cut(values, bins=edges, labels=labels, right=False)
    return bands.astype("string")


def segment_frame(
    frame: pd.DataFrame,
    *,
    extra_columns: Iterable[str] = (),
    default_columns: Sequence[str] = DEFAULT_SEGMENT_COLUMNS,
    tenure_column: str | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """The segment columns to slice by, as strings, plus notes on defaults that were absent.

    Default segments missing from ``frame`` are skipped (another dataset may not have a
    contract column); a column named in ``extra_columns`` must exist. The tenure band comes
    from ``tenure_column`` or the first of ``tenure_months``/``tenure`` present.
    """
    import pandas as pd

    extra = list(dict.fromkeys(extra_columns))
    missing_extra = [c for c in extra if c not in frame.columns]
    if missing_extra:
        raise EvaluationInputError(
            f"Slice columns {missing_extra} are not in the evaluated frame; available: "
            f"{sorted(frame.columns)}"
        )
    notes = []
    columns = []
    for name in list(default_columns) + extra:
        if name in columns:
            continue
        if name in frame.columns:
            columns.append(name)
        else:
            notes.append(f"segment column '{name}' not present; skipped")
    segments = pd.DataFrame(index=frame.index)
    for name in columns:
        segments[name] = frame[name].astype("string").fillna("(missing)")
    if tenure_column is not None and tenure_column not in frame.columns:
        raise EvaluationInputError(
            f"Tenure column '{tenure_column}' is not in the evaluated frame"
        )
    tenure_source = tenure_column or next(
        (c for c in TENURE_COLUMN_CANDIDATES if c in frame.columns), None
    )
    if tenure_source is None:
        notes.append("no tenure column present; tenure bands skipped")
    else:
        segments[TENURE_BAND_COLUMN] = tenure_band(frame[tenure_source].to_numpy()).fillna(
            "(missing)"
        ).to_numpy()
    return segments, notes


def _natural_key(value: Any) -> tuple:
    """'7-12' before '13-24' before '49+': numbers inside labels compare as numbers."""
    import re

    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", str(value))
        if part
    )


SLICE_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "accuracy", "precision",
                 "recall", "f1")


def slice_metrics(
    segments: pd.DataFrame, y_true: Any, y_score: Any, threshold: float
) -> pd.DataFrame:
    """The same metrics for every value of every segment column, one row per slice."""
    import pandas as pd

    labels, scores = validate_predictions(y_true, y_score)
    if len(segments) != labels.size:
        raise EvaluationInputError(
            f"Segment frame has {len(segments)} rows but there are {labels.size} predictions"
        )
    rows = []
    for column in segments.columns:
        values = segments[column].to_numpy()
        for value in sorted(pd.unique(values), key=_natural_key):
            mask = values == value
            metrics = classification_metrics(labels[mask], scores[mask], threshold)
            rows.append(
                {
                    "segment": column,
                    "value": str(value),
                    "rows": metrics["rows"],
                    "positives": metrics["positives"],
                    "base_rate": metrics["base_rate"],
                    **{name: metrics[name] for name in SLICE_METRICS},
                }
            )
    columns = ["segment", "value", "rows", "positives", "base_rate", *SLICE_METRICS]
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class SliceGap:
    metric: str
    segment: str | None
    best_value: str | None
    best: float | None
    worst_value: str | None
    worst: float | None
    gap: float
    # Slices left out of the comparison: too small or a single class (AUC undefined).
    excluded: list[str] = field(default_factory=list)


def largest_slice_gap(
    slices: pd.DataFrame, metric: str = "roc_auc", min_rows: int = 50
) -> SliceGap:
    """The segment whose best and worst slices differ most on ``metric``.

    Slices with fewer than ``min_rows`` rows, or where the metric is undefined, are left
    out: a 12-customer slice's AUC is noise, not a fairness finding.
    """
    if metric not in SLICE_METRICS:
        raise EvaluationInputError(f"Unknown slice metric '{metric}'; use one of {SLICE_METRICS}")
    best_gap = SliceGap(metric, None, None, None, None, None, 0.0)
    excluded = []
    for segment, group in slices.groupby("segment", sort=True):
        usable = []
        for row in group.itertuples(index=False):
            value = getattr(row, metric)
            if row.rows < min_rows or value is None or math.isnan(value):
                excluded.append(f"{segment}={row.value} ({row.rows} rows)")
            else:
                usable.append((float(value), str(row.value)))
        if len(usable) < 2:
            continue
        high = max(usable)
        low = min(usable)
        # For losses a lower value is better; "best" always means the better-performing slice.
        lower_is_better = metric in ("log_loss", "brier", "ece")
        best, worst = (low, high) if lower_is_better else (high, low)
        gap = high[0] - low[0]
        if best_gap.segment is None or gap > best_gap.gap:
            best_gap = SliceGap(metric, str(segment), best[1], best[0], worst[1], worst[0], gap)
    return SliceGap(**{**asdict(best_gap), "excluded": excluded})


# --- the whole report ------------------------------------------------------------------


@dataclass
class EvaluationReport:
    """Every number the evaluation asset, the plots and the model card are made from."""

    metrics: dict[str, Any]
    threshold: float
    threshold_source: str
    confusion: list[list[int]]
    assumptions: BusinessAssumptions
    optimal: OptimalThreshold
    savings_at_threshold: float
    top_decile_lift: float
    gains: pd.DataFrame
    savings: pd.DataFrame
    slices: pd.DataFrame
    slice_gap: SliceGap
    notes: list[str]
    baseline_metrics: dict[str, dict[str, Any]]
    # Kept for the plots (ROC, PR, calibration); not part of the JSON summary.
    y_true: np.ndarray
    y_score: np.ndarray
    baseline_scores: dict[str, np.ndarray]

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable view (NaN becomes None)."""
        return _json_safe(
            {
                "metrics": self.metrics,
                "threshold": self.threshold,
                "threshold_source": self.threshold_source,
                "confusion_matrix": self.confusion,
                "business": {
                    "assumptions": asdict(self.assumptions),
                    "optimal_threshold_on_test": asdict(self.optimal),
                    "savings_at_threshold": self.savings_at_threshold,
                    "top_decile_lift": self.top_decile_lift,
                },
                "gains": self.gains.to_dict(orient="records"),
                "slices": self.slices.to_dict(orient="records"),
                "largest_slice_gap": asdict(self.slice_gap),
                "baselines": self.baseline_metrics,
                "notes": self.notes,
            }
        )


def _json_safe(value: Any) -> Any:
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate(
    y_true: Any,
    y_score: Any,
    *,
    frame: pd.DataFrame | None = None,
    threshold: float | None = None,
    threshold_source: str | None = None,
    assumptions: BusinessAssumptions | None = None,
    slice_columns: Iterable[str] = (),
    tenure_column: str | None = None,
    slice_metric: str = "roc_auc",
    min_slice_rows: int = 50,
    baseline_scores: Mapping[str, Any] | None = None,
) -> EvaluationReport:
    """Evaluate one model's test predictions.

    ``threshold``: the operating point for accuracy/precision/recall/F1. Pass the one chosen
    on the validation split (``optimal_threshold`` on validation scores) so the test
    numbers stay honest; when None, the savings-optimal threshold on these rows is used and
    ``threshold_source`` says so. ``frame`` holds the segment columns, row-aligned with the
    predictions. ``baseline_scores`` are other models' scores on the same rows.
    """
    import numpy as np
    import pandas as pd

    assumptions = assumptions or BusinessAssumptions()
    labels, scores = validate_predictions(y_true, y_score)
    optimal = optimal_threshold(labels, scores, assumptions)
    if threshold is None:
        threshold = optimal.threshold
        threshold_source = "savings-optimal on the test split (no validation threshold given)"
    elif not 0.0 <= threshold <= 1.0:
        raise EvaluationInputError(f"threshold must be within [0, 1], got {threshold}")
    metrics = classification_metrics(labels, scores, threshold)
    gains = gains_table(labels, scores) if labels.size >= 10 else gains_table(
        labels, scores, groups=labels.size
    )
    notes: list[str] = []
    if frame is not None:
        if len(frame) != labels.size:
            raise EvaluationInputError(
                f"The slice frame has {len(frame)} rows but there are {labels.size} predictions"
            )
        segments, notes = segment_frame(
            frame, extra_columns=slice_columns, tenure_column=tenure_column
        )
        slices = slice_metrics(segments, labels, scores, threshold)
    else:
        notes.append("no feature frame given; slices skipped")
        slices = slice_metrics(pd.DataFrame(index=range(labels.size)), labels, scores, threshold)
    baselines = {}
    baseline_arrays = {}
    for name, values in (baseline_scores or {}).items():
        base_labels, base_scores = validate_predictions(labels, values)
        baselines[name] = classification_metrics(base_labels, base_scores, threshold)
        baseline_arrays[name] = base_scores
    return EvaluationReport(
        metrics=metrics,
        threshold=float(threshold),
        threshold_source=threshold_source or "given",
        confusion=confusion_matrix(metrics),
        assumptions=assumptions,
        optimal=optimal,
        savings_at_threshold=expected_savings(labels, scores, threshold, assumptions),
        top_decile_lift=float(gains["lift"].iloc[0]) if labels.sum() else float(np.nan),
        gains=gains,
        savings=savings_curve(labels, scores, assumptions),
        slices=slices,
        slice_gap=largest_slice_gap(slices, slice_metric, min_slice_rows),
        notes=notes,
        baseline_metrics=baselines,
        y_true=labels,
        y_score=scores,
        baseline_scores=baseline_arrays,
    )


# --- checks: (passed, metadata) --------------------------------------------------------

CheckOutcome = tuple[bool, dict[str, Any]]


def check_auc_floor(roc_auc: float, floor: float) -> CheckOutcome:
    passed = bool(math.isfinite(roc_auc) and roc_auc >= floor)
    return passed, {
        "roc_auc": roc_auc,
        "floor": floor,
        "description": f"test ROC-AUC {roc_auc:.4f} {'>=' if passed else '<'} floor {floor:.4f}",
    }


def check_beats_baselines(
    roc_auc: float, baseline_aucs: Mapping[str, float], margin: float = 0.0
) -> CheckOutcome:
    """The model's test AUC must reach the best baseline's plus ``margin`` on the same rows."""
    usable = {k: v for k, v in baseline_aucs.items() if v is not None and math.isfinite(v)}
    if not usable:
        return True, {
            "roc_auc": roc_auc,
            "description": "no baseline AUC recorded on this test split; nothing to beat",
        }
    best_name, best_auc = max(usable.items(), key=lambda item: item[1])
    passed = bool(math.isfinite(roc_auc) and roc_auc >= best_auc + margin)
    return passed, {
        "roc_auc": roc_auc,
        "best_baseline": best_name,
        "best_baseline_auc": best_auc,
        "margin": margin,
        "difference": roc_auc - best_auc,
        "description": (
            f"test ROC-AUC {roc_auc:.4f} vs best baseline {best_name} {best_auc:.4f} "
            f"(required margin {margin:+.4f}): {'beats it' if passed else 'does not beat it'}"
        ),
    }


def check_calibration(ece: float, max_ece: float) -> CheckOutcome:
    passed = bool(math.isfinite(ece) and ece <= max_ece)
    return passed, {
        "ece": ece,
        "max_ece": max_ece,
        "description": (
            f"expected calibration error {ece:.4f} {'<=' if passed else '>'} bound {max_ece:.4f}"
        ),
    }


def check_leakage_smell(
    importance: pd.DataFrame,
    roc_auc: float,
    *,
    max_feature_share: float = 0.5,
    auc_ceiling: float = 0.97,
) -> CheckOutcome:
    """Warn when one feature carries too much of the total |SHAP| or the AUC is implausible.

    ``importance`` has columns ``feature`` and ``share`` (of total mean |SHAP|), as returned
    by ``explain.global_importance``.
    """
    top = importance.sort_values("share", ascending=False).iloc[0]
    top_feature = str(top["feature"])
    top_share = float(top["share"])
    problems = []
    if top_share > max_feature_share:
        problems.append(
            f"feature '{top_feature}' carries {top_share:.1%} of total |SHAP| "
            f"(bound {max_feature_share:.0%}): check it is known before the snapshot month ends"
        )
    if math.isfinite(roc_auc) and roc_auc > auc_ceiling:
        problems.append(
            f"test ROC-AUC {roc_auc:.4f} is above the ceiling {auc_ceiling:.4f}: churn is rarely "
            f"this predictable; look for a feature that encodes the label (top: '{top_feature}')"
        )
    return not problems, {
        "top_feature": top_feature,
        "top_feature_share": top_share,
        "max_feature_share": max_feature_share,
        "roc_auc": roc_auc,
        "auc_ceiling": auc_ceiling,
        "description": "; ".join(problems) or (
            f"no leakage smell: top feature '{top_feature}' carries {top_share:.1%} of |SHAP|, "
            f"AUC {roc_auc:.4f}"
        ),
    }


def check_slice_gap(gap: SliceGap, max_gap: float) -> CheckOutcome:
    passed = gap.segment is None or gap.gap <= max_gap
    if gap.segment is None:
        description = "no segment had two slices large enough to compare"
    else:
        description = (
            f"largest {gap.metric} gap {gap.gap:.4f} in '{gap.segment}': {gap.best_value} "
            f"{gap.best:.4f} vs {gap.worst_value} {gap.worst:.4f} "
            f"({'within' if passed else 'above'} bound {max_gap:.4f})"
        )
    return bool(passed), {
        "metric": gap.metric,
        "segment": gap.segment,
        "gap": gap.gap,
        "max_gap": max_gap,
        "best_slice": gap.best_value,
        "worst_slice": gap.worst_value,
        "description": description,
    }
