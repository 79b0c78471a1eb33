"""Drift of a month's features and predictions against the champion's training reference.

Two views of the same question, both per feature:

- Evidently's statistical tests (normed Wasserstein distance for numerics and
  Jensen-Shannon distance for categoricals by default, each with its threshold), called
  through Evidently's own stattest registry, which is exactly what its ``DataDriftPreset``
  runs for every column. The preset's HTML report is written separately
  (``write_drift_report``) because rendering it costs far more than the tests themselves
  (plotly figures for every column), so callers choose which months get one.
- The population stability index, implemented here and vectorised with numpy: quantile
  bins from the reference for numerics, one bin per level for categoricals, a bin for
  missing values in both, and empty bins floored at ``epsilon``.

Each month is compared with the champion's training months before it
(``reference_months_for``), PSI is graded against what chance reaches at the sample sizes
(``psi_chance_level``), and features are weighted by the champion's mean |SHAP|
(``feature_importance``: ``weighted_psi``, and ``paging_psi``, discounted below an importance
floor). ``drift_verdict`` is the one rule that turns a month's summary into pass / WARN /
ERROR, for the checks, the retraining sensor and the run summary alike. Why each choice is
made: docs/ml-layer.md, "Drift".

Evidently takes several seconds to import, so it is imported inside the functions only.
Samples are bounded (``DriftSettings.sample_rows``), which bounds the cost of a month.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from churn_assets.core.metadata import CheckVerdict

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pandas as pd

NUMERIC = "numeric"
CATEGORICAL = "categorical"
PREDICTION_COLUMN = "churn_probability"
MISSING_LEVEL = "<missing>"
DRIFT_TABLE = "monitoring.drift"
DRIFT_SUMMARY_TABLE = "monitoring.drift_summary"

DRIFT_COLUMNS: dict[str, str] = {
    "month": "DATE NOT NULL",
    "feature": "VARCHAR NOT NULL",
    "kind": "VARCHAR NOT NULL",
    "drift_score": "DOUBLE",
    "drifted": "BOOLEAN NOT NULL",
    "psi": "DOUBLE",
    "stattest": "VARCHAR NOT NULL",
    "threshold": "DOUBLE",
    # PSI that chance alone exceeds with probability DriftSettings.psi_alpha at these sample
    # sizes (see psi_chance_level); a PSI below it is noise, whatever the PSI level.
    "psi_critical": "DOUBLE",
    # The feature's share of the champion's mean |SHAP| on the reference (NULL: not measured).
    "importance": "DOUBLE",
    # importance x PSI in excess of its expected value under no change: the feature's part of
    # the month's importance-weighted PSI.
    "weighted_psi": "DOUBLE",
    # The PSI the feature may page with: 0 within chance, x importance / min_importance below
    # the importance floor (DriftThresholds.min_importance) unless the feature was (nearly)
    # constant in the reference, else the PSI.
    "paging_psi": "DOUBLE",
    # PSI at or above the warn level and above the chance level: the feature moved.
    "moved": "BOOLEAN",
    "reference_rows": "BIGINT NOT NULL",
    "current_rows": "BIGINT NOT NULL",
    "model_version": "VARCHAR NOT NULL",
}
DRIFT_SUMMARY_COLUMNS: dict[str, str] = {
    "month": "DATE NOT NULL",
    "features_checked": "INTEGER NOT NULL",
    "drifted_features": "INTEGER NOT NULL",
    "share_drifted": "DOUBLE NOT NULL",
    "max_psi": "DOUBLE",
    "max_psi_feature": "VARCHAR",
    "max_psi_critical": "DOUBLE",
    "max_psi_importance": "DOUBLE",
    # The largest paging PSI of any feature (see monitoring.drift): what check_max_psi
    # grades; with its feature's PSI and importance.
    "paging_psi": "DOUBLE",
    "paging_psi_feature": "VARCHAR",
    "paging_psi_raw": "DOUBLE",
    "paging_psi_importance": "DOUBLE",
    "weighted_psi": "DOUBLE",
    "moved_features": "VARCHAR",
    "reference_months": "VARCHAR",
    # Whether the reference months all precede the month; a month compared with later months
    # (the first ones of the data) cannot page.
    "reference_precedes": "BOOLEAN",
    "prediction_drift_score": "DOUBLE",
    "prediction_drifted": "BOOLEAN",
    "prediction_psi": "DOUBLE",
    "prediction_psi_critical": "DOUBLE",
    "prediction_stattest": "VARCHAR",
    "reference_rows": "BIGINT NOT NULL",
    "current_rows": "BIGINT NOT NULL",
    "model_version": "VARCHAR NOT NULL",
    "report_path": "VARCHAR",
    "computed_at": "TIMESTAMP NOT NULL",
}
DRIFT_DESCRIPTIONS: dict[str, str] = {
    "month": "The month measured.",
    "feature": "Feature (a column of features.customer_features).",
    "kind": "numeric or categorical.",
    "drift_score": "The Evidently stattest's statistic or p-value for the feature.",
    "drifted": "Whether that test fired at its threshold and the feature's PSI is beyond chance.",
    "psi": "Population stability index of the month against the reference.",
    "stattest": "The Evidently stattest used.",
    "threshold": "The stattest's threshold.",
    "psi_critical": "The PSI chance alone exceeds with probability psi_alpha at these sample sizes.",
    "importance": "The feature's share of the champion's mean |SHAP| on the reference (NULL: not measured).",
    "weighted_psi": "importance x (PSI - its expected value under no change): the feature's part of the "
                    "month's importance-weighted PSI.",
    "paging_psi": "The PSI the feature may page with: 0 within chance, scaled down below the importance floor.",
    "moved": "Whether the feature moved: its PSI at or above the warn level and beyond chance.",
    "reference_rows": "Rows sampled from the champion's training months before the month.",
    "current_rows": "Rows sampled from the month.",
    "model_version": "The champion whose reference the month was compared with.",
}


class DriftError(ValueError):
    """The reference or current data cannot be compared as asked."""


@dataclass(frozen=True)
class DriftSettings:
    # Rows sampled from the reference and from each month: PSI and distance tests settle well
    # below this, and it bounds a month's cost.
    sample_rows: int = 5_000
    seed: int = 42
    # Evidently stattest names; distance-based defaults do not become "significant" merely
    # because a sample is large, unlike p-value tests.
    numeric_method: str = "wasserstein"
    categorical_method: str = "jensenshannon"
    # None: each method's own default threshold (0.1 for both defaults).
    threshold: float | None = None
    prediction_method: str = "wasserstein"
    prediction_threshold: float | None = None
    psi_bins: int = 10
    psi_epsilon: float = 1e-4
    # False-alarm rate per feature of the PSI chance level (psi_chance_level).
    psi_alpha: float = 0.001
    # Training months in a month's reference: the latest ones before it (reference_months_for);
    # 0 pools every training month.
    reference_months: int = 12
    # Reference rows explained for the importance weights (mean |SHAP|); the permutation
    # fallback of models without exact attributions explains a tenth of them.
    importance_rows: int = 2_000
    # Share of drifted columns at which Evidently's report calls the whole dataset drifted.
    report_drift_share: float = 0.5

    def __post_init__(self) -> None:
        if self.sample_rows < 10:
            raise DriftError(f"sample_rows must be at least 10, got {self.sample_rows}")
        if self.reference_months < 0:
            raise DriftError(f"reference_months must be 0 (all) or more, got {self.reference_months}")
        if not 0 < self.psi_alpha < 0.5:
            raise DriftError(f"psi_alpha must be in (0, 0.5), got {self.psi_alpha}")
        if self.psi_bins < 2:
            raise DriftError(f"psi_bins must be at least 2, got {self.psi_bins}")
        if not 0 < self.psi_epsilon < 0.01:
            raise DriftError(f"psi_epsilon must be in (0, 0.01), got {self.psi_epsilon}")

    def to_dict(self) -> dict:
        return asdict(self)


# -- population stability index ------------------------------------------------------------


def categorical_levels(values: Any) -> pd.Series:
    """Values as text levels ('True'/'False' for booleans), missing as its own level."""
    import pandas as pd

    return pd.Series(values).astype("string").fillna(MISSING_LEVEL).astype(object)


def finite_or_nan(values: Any) -> np.ndarray:
    """Values as float64, anything not a finite number (text, NULL, +-inf) as NaN."""
    import numpy as np
    import pandas as pd

    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64")
    numbers[~np.isfinite(numbers)] = np.nan
    return numbers


def numeric_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """The inner bin edges, cut at the reference's quantiles (see ``binned_shares``)."""
    import numpy as np

    present = reference[~np.isnan(reference)]
    if not present.size:
        return np.array([], dtype="float64")
    edges = np.quantile(present, np.linspace(0, 1, bins + 1))[1:-1]
    # A cap or default at either end (days_since_* = 365 when nothing happened, 0
    # counts) is its own bin, so a change in how many rows sit on it is not mixed
    # with a change among the real values next to it.
    low, high = present.min(), present.max()
    heavy = max(1 / (2 * bins), 0.01)
    if (present == high).mean() >= heavy and (present == high).sum() > 1:
        edges = np.append(edges, high)
    if (present == low).mean() >= heavy and (present == low).sum() > 1:
        edges = np.append(edges, np.nextafter(low, math.inf))
    return np.unique(edges)


def numeric_codes(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each value's bin: how many edges are <= it; NaN in the last bin, after the edges'."""
    import numpy as np

    out = np.searchsorted(edges, values, side="right")
    out[np.isnan(values)] = edges.size + 1
    return out


def numeric_labels(edges: np.ndarray) -> list[str]:
    bounds = [-math.inf, *edges.tolist(), math.inf]
    return [*(f"[{bounds[i]:.6g}, {bounds[i + 1]:.6g})" for i in range(edges.size + 1)), MISSING_LEVEL]


def binned_shares(
    reference: Any, current: Any, kind: str, *, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Share of reference and current rows per bin, and the bins' labels.

    Numeric bins are cut at the reference's quantiles (repeated quantiles of discrete data
    merge into one bin) and open at both ends, so current values outside the reference
    range land in the first or last bin. Missing values form a last bin of their own.
    """
    import numpy as np
    import pandas as pd

    if kind == NUMERIC:
        ref, cur = finite_or_nan(reference), finite_or_nan(current)
        edges = numeric_edges(ref, bins)
        ref_codes, cur_codes = numeric_codes(ref, edges), numeric_codes(cur, edges)
        labels = numeric_labels(edges)
    elif kind == CATEGORICAL:
        ref_text, cur_text = categorical_levels(reference), categorical_levels(current)
        labels = sorted(set(ref_text.unique()) | set(cur_text.unique()))
        ref_codes = pd.Categorical(ref_text, categories=labels).codes.astype("int64")
        cur_codes = pd.Categorical(cur_text, categories=labels).codes.astype("int64")
    else:
        raise DriftError(f"Unknown feature kind {kind!r}: expected '{NUMERIC}' or '{CATEGORICAL}'")
    if ref_codes.size == 0 or cur_codes.size == 0:
        raise DriftError("PSI needs at least one reference and one current value")
    size = len(labels)
    ref_share = np.bincount(ref_codes, minlength=size) / ref_codes.size
    cur_share = np.bincount(cur_codes, minlength=size) / cur_codes.size
    return ref_share, cur_share, labels


def psi_from_shares(reference_share: np.ndarray, current_share: np.ndarray, epsilon: float = 1e-4) -> float:
    """sum((current - reference) * ln(current / reference)) with empty bins floored at epsilon."""
    import numpy as np

    ref = np.where(reference_share > 0, reference_share, epsilon)
    cur = np.where(current_share > 0, current_share, epsilon)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def psi_bins(settings: DriftSettings, reference_rows: int, current_rows: int) -> int:
    """Quantile bins of a numeric feature's PSI: at least 5 rows of the smaller side per bin.
    With fewer, bins sit empty by chance, the epsilon floor turns each into a large PSI term,
    and neither the PSI levels nor the chi-square chance level mean anything."""
    return max(2, min(settings.psi_bins, min(reference_rows, current_rows) // 5))


def psi_expected(bins: int, reference_rows: int, current_rows: int) -> float:
    """PSI's expected value when nothing changed: (bins - 1) x (1/n_ref + 1/n_cur).

    For small differences PSI is the two-sample chi-square statistic divided by
    1 / (1/n_ref + 1/n_cur), so two samples of one population give PSI ~ chi2(bins - 1)
    scaled by (1/n_ref + 1/n_cur): about 0.004 at 5,000 rows a side with 10 bins, 0.1 at 100.
    """
    if bins < 2 or reference_rows < 1 or current_rows < 1:
        return 0.0
    return (bins - 1) * (1 / reference_rows + 1 / current_rows)


def psi_chance_level(bins: int, reference_rows: int, current_rows: int, alpha: float = 0.001) -> float:
    """The PSI that two samples of one unchanged population exceed with probability
    ``alpha`` (the chi-square approximation of ``psi_expected``).

    A PSI level alone ignores sample size: 0.25 is far beyond chance at 5,000 rows, and
    chance itself at 60. Grading against max(level, this) keeps small months and small
    data sets from paging on noise. Rows of successive months are positively correlated (the
    same customers), which makes the real noise smaller: the level errs on the quiet side.
    """
    from scipy.stats import chi2

    if bins < 2 or reference_rows < 1 or current_rows < 1:
        return 0.0
    return float(chi2.ppf(1 - alpha, bins - 1)) * (1 / reference_rows + 1 / current_rows)


def population_stability_index(
    reference: Any, current: Any, kind: str = NUMERIC, *, bins: int = 10, epsilon: float = 1e-4
) -> float:
    ref_share, cur_share, _ = binned_shares(reference, current, kind, bins=bins)
    return psi_from_shares(ref_share, cur_share, epsilon)


def psi_by_feature(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    bins: int = 10,
    epsilon: float = 1e-4,
) -> dict[str, float]:
    return {
        **{c: population_stability_index(reference[c], current[c], NUMERIC, bins=bins, epsilon=epsilon)
           for c in numeric},
        **{c: population_stability_index(reference[c], current[c], CATEGORICAL, bins=bins, epsilon=epsilon)
           for c in categorical},
    }


# -- Evidently tests ---------------------------------------------------------------------


def _clean(values: pd.Series, kind: str) -> pd.Series:
    import numpy as np
    import pandas as pd

    if kind == NUMERIC:
        numbers = pd.to_numeric(values, errors="coerce").astype("float64")
        return numbers.replace([np.inf, -np.inf], np.nan).dropna()
    return values.astype("string").dropna().astype(object)


def evidently_column_drift(
    reference: pd.Series, current: pd.Series, kind: str, method: str, threshold: float | None
) -> dict[str, Any]:
    """One column's Evidently drift test: score, drifted flag, stattest and threshold used.

    Missing values are dropped first, as Evidently does; a side with no values left gives
    a NaN score and no drift (there is nothing to compare).
    """
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == NUMERIC else ColumnType.Categorical
    ref, cur = _clean(reference, kind), _clean(current, kind)
    if ref.empty or cur.empty:
        return {"drift_score": math.nan, "drifted": False, "stattest": f"{method} (no values)",
                "threshold": threshold}
    stattest = get_stattest(ref, cur, column_type, method)
    result = stattest(ref, cur, column_type, threshold)
    return {
        "drift_score": float(result.drift_score),
        "drifted": bool(result.drifted),
        "stattest": stattest.name,
        "threshold": float(result.actual_threshold),
    }


# -- a month's drift -----------------------------------------------------------------------


FEATURE_RESULT_COLUMNS = ("feature", "kind", "drift_score", "drifted", "psi", "stattest", "threshold",
                          "psi_critical", "importance", "weighted_psi", "paging_psi", "moved")


@dataclass
class DriftResult:
    features: pd.DataFrame
    summary: dict[str, Any]


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DriftError(f"The {what} data lacks feature column(s) {', '.join(missing)}")


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    reference_predictions: Any = None,
    current_predictions: Any = None,
    settings: DriftSettings | None = None,
    thresholds: DriftThresholds | None = None,
    importance: Mapping[str, float] | None = None,
    month_shares: Mapping[str, Any] | None = None,
) -> DriftResult:
    """Per-feature Evidently drift and PSI, plus prediction drift when both sides have
    predictions. ``features`` has one row per feature (feature, kind, drift_score, drifted,
    psi, stattest, threshold, psi_critical, importance, weighted_psi, moved); ``summary``
    the month-level figures. ``importance``: each feature's share of the champion's mean
    |SHAP| (``feature_importance``); without it nothing is weighted and every feature may page.
    ``thresholds`` decide which features ``moved`` and which may page.

    ``month_shares``: each feature's bins counted over the whole month where it lies
    (``spark_drift.psi_on_spark``'s ``FeaturePsi``, binned with ``psi_bins``); the PSI, its
    chance level and the weighted excess then use them and the month's row count, and
    ``current`` (a sample of the month) feeds the Evidently tests and prediction drift only."""
    import numpy as np
    import pandas as pd

    settings = settings or DriftSettings()
    thresholds = thresholds or DriftThresholds()
    if not len(numeric) + len(categorical):
        raise DriftError("No feature columns to compare")
    if reference.empty:
        raise DriftError("The reference sample is empty: the champion's training months hold no rows")
    if current.empty:
        raise DriftError("The current month holds no feature rows")
    _check_columns(reference, [*numeric, *categorical], "reference")
    _check_columns(current, [*numeric, *categorical], "current")

    bins = psi_bins(settings, len(reference), len(current))
    rows = []
    for kind, columns, method in (
        (NUMERIC, numeric, settings.numeric_method),
        (CATEGORICAL, categorical, settings.categorical_method),
    ):
        for name in columns:
            test = evidently_column_drift(reference[name], current[name], kind, method, settings.threshold)
            if month_shares is None:
                ref_share, cur_share, _ = binned_shares(reference[name], current[name], kind, bins=bins)
                current_rows = len(current)
            else:
                counted = month_shares[name]
                ref_share, cur_share = np.asarray(counted.reference_share), np.asarray(counted.current_share)
                current_rows = counted.current_rows
            psi = psi_from_shares(ref_share, cur_share, settings.psi_epsilon)
            used = int(((ref_share > 0) | (cur_share > 0)).sum())
            critical = psi_chance_level(used, len(reference), current_rows, settings.psi_alpha)
            share = None if importance is None else float(importance.get(name, 0.0))
            # Weighted by what the psi exceeds its no-change expectation: at small samples the
            # expected noise alone would otherwise add up over many features.
            excess = max(0.0, psi - psi_expected(used, len(reference), current_rows))
            # Distance thresholds are reached by noise alone in small samples (a normed
            # Wasserstein distance of 0.1 is chance at ~100 rows): a test that fires counts
            # as drift only when the difference is beyond chance too.
            test["drifted"] = bool(test["drifted"] and psi >= critical)
            # What the feature's PSI may page with: nothing within chance, and discounted
            # in proportion below the importance floor, so a column the champion barely reads
            # needs an enormous shift to page while one it leans on pages at the PSI levels.
            paging = 0.0 if psi < critical else psi
            # A feature (nearly) constant in the reference could not be learned from: its low
            # importance says nothing, and its moving is new information retraining can use.
            varied = ref_share.max() < 1 - 1 / (2 * settings.psi_bins)
            if share is not None and thresholds.min_importance > 0 and varied:
                paging *= min(1.0, share / thresholds.min_importance)
            rows.append({
                "feature": name, "kind": kind, **test, "psi": psi, "psi_critical": critical,
                "importance": share, "weighted_psi": None if share is None else share * excess,
                "paging_psi": paging, "moved": bool(psi >= max(thresholds.psi_warn, critical)),
            })
    features = pd.DataFrame(rows, columns=list(FEATURE_RESULT_COLUMNS))

    testable = features[features["drift_score"].notna()]
    drifted = int(testable["drifted"].sum())
    top_psi = features.loc[features["psi"].idxmax()] if features["psi"].notna().any() else None
    top_paging = features.loc[features["paging_psi"].idxmax()] if features["paging_psi"].notna().any() else None
    moved = features[features["moved"]]
    moved = moved.sort_values(["weighted_psi" if importance is not None else "psi", "feature"],
                              ascending=[False, True])

    def number(row: Any, column: str) -> float | None:
        return None if row is None or pd.isna(row[column]) else float(row[column])

    summary: dict[str, Any] = {
        "features_checked": int(len(testable)),
        "drifted_features": drifted,
        "share_drifted": drifted / len(testable) if len(testable) else 0.0,
        "max_psi": number(top_psi, "psi"),
        "max_psi_feature": str(top_psi["feature"]) if top_psi is not None else None,
        "max_psi_critical": number(top_psi, "psi_critical"),
        "max_psi_importance": number(top_psi, "importance"),
        "paging_psi": number(top_paging, "paging_psi"),
        "paging_psi_feature": str(top_paging["feature"]) if top_paging is not None else None,
        "paging_psi_raw": number(top_paging, "psi"),
        "paging_psi_importance": number(top_paging, "importance"),
        "weighted_psi": float(features["weighted_psi"].sum()) if importance is not None else None,
        "moved_features": ", ".join(moved["feature"]),
        "prediction_drift_score": None,
        "prediction_drifted": None,
        "prediction_psi": None,
        "prediction_psi_critical": None,
        "prediction_stattest": None,
        "reference_rows": int(len(reference)),
        "current_rows": int(len(current)),
    }
    if reference_predictions is not None and current_predictions is not None:
        ref_pred = pd.Series(np.asarray(reference_predictions, dtype="float64"))
        cur_pred = pd.Series(np.asarray(current_predictions, dtype="float64"))
        if ref_pred.notna().any() and cur_pred.notna().any():
            test = evidently_column_drift(
                ref_pred, cur_pred, NUMERIC, settings.prediction_method, settings.prediction_threshold
            )
            ref_share, cur_share, _ = binned_shares(ref_pred, cur_pred, NUMERIC, bins=bins)
            psi = psi_from_shares(ref_share, cur_share, settings.psi_epsilon)
            critical = psi_chance_level(int(((ref_share > 0) | (cur_share > 0)).sum()),
                                        int(ref_pred.notna().sum()), int(cur_pred.notna().sum()), settings.psi_alpha)
            summary.update(
                prediction_drift_score=test["drift_score"],
                prediction_drifted=bool(test["drifted"] and psi >= critical),
                prediction_stattest=test["stattest"],
                prediction_psi=psi,
                prediction_psi_critical=critical,
            )
    return DriftResult(features=features, summary=summary)


def feature_importance(model: Any, reference: pd.DataFrame, settings: DriftSettings | None = None,
                       log=None) -> dict[str, float] | None:
    """Each feature's share of the champion's mean |SHAP| on (a seeded sample of) the
    reference: the weights of the importance-weighted drift view. None when the model cannot
    be explained (logged); drift is then graded unweighted rather than not at all."""
    from churn_assets.training.explain import explain, global_importance

    settings = settings or DriftSettings()
    exact = model.candidate.explains_exactly(model)
    # The permutation fallback costs rows x features x background model calls.
    rows = settings.importance_rows if exact else max(10, settings.importance_rows // 10)
    sample = reference.sample(n=min(rows, len(reference)), random_state=settings.seed)
    background = None if exact else reference.sample(n=min(50, len(reference)), random_state=settings.seed + 1)
    try:
        contributions, _ = explain(model, sample, background=background, seed=settings.seed)
    except Exception as error:  # noqa: BLE001 - a missing weight must not stop drift
        if log:
            log.warning(f"Drift is not importance-weighted: the champion could not be explained ({error})")
        return None
    table = global_importance(contributions)
    return {str(f): float(v) for f, v in zip(table["feature"], table["share"])}


def write_drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    path: str | Path,
    *,
    settings: DriftSettings | None = None,
) -> Path:
    """Evidently's data-drift report (DataDriftPreset, plus prediction drift when both
    frames carry ``churn_probability``) as a self-contained HTML file, written atomically."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    settings = settings or DriftSettings()
    # Evidently refuses a column with no values on either side; such columns carry no
    # distribution to draw and are reported as untestable in the drift table instead.
    numeric = [c for c in numeric if not _clean(reference[c], NUMERIC).empty and not _clean(current[c], NUMERIC).empty]
    categorical = [c for c in categorical
                   if not _clean(reference[c], CATEGORICAL).empty and not _clean(current[c], CATEGORICAL).empty]
    columns = [*numeric, *categorical]
    if not columns:
        raise DriftError("No feature column has values in both the reference and the current data")
    with_predictions = PREDICTION_COLUMN in reference.columns and PREDICTION_COLUMN in current.columns
    kept = columns + ([PREDICTION_COLUMN] if with_predictions else [])

    def prepared(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[kept].copy()
        for name in categorical:
            out[name] = out[name].astype("string").astype(object)
        return out

    definition = DataDefinition(
        numerical_columns=numeric + ([PREDICTION_COLUMN] if with_predictions else []),
        categorical_columns=categorical,
    )
    metrics: list[Any] = [
        DataDriftPreset(
            columns=columns,
            drift_share=settings.report_drift_share,
            num_method=settings.numeric_method,
            cat_method=settings.categorical_method,
            threshold=settings.threshold,
        )
    ]
    if with_predictions:
        metrics.append(ValueDrift(column=PREDICTION_COLUMN, method=settings.prediction_method,
                                  threshold=settings.prediction_threshold))
    snapshot = Report(metrics, include_tests=True).run(
        Dataset.from_pandas(prepared(current), data_definition=definition),
        Dataset.from_pandas(prepared(reference), data_definition=definition),
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        snapshot.save_html(temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def summary_row(month: str, summary: Mapping[str, Any], model_version: str, report_path: str | None) -> dict:
    """The ``monitoring.drift_summary`` row of a month's ``DriftResult.summary``."""
    return {
        "month": month,
        **{k: summary.get(k) for k in DRIFT_SUMMARY_COLUMNS if k not in ("month", "model_version",
                                                                         "report_path", "computed_at")},
        "model_version": model_version,
        "report_path": report_path,
        "computed_at": datetime.now(timezone.utc).replace(tzinfo=None),
    }


# -- checks --------------------------------------------------------------------------------

@dataclass(frozen=True)
class DriftThresholds:
    """Warn and error levels of the drift checks (a value at or above a level trips it), and
    which features may page. ``drift_verdict`` combines them: the one rule the checks, the
    retraining sensor and the run summary apply."""

    # Conventional PSI reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major; a single
    # feature at 0.5 is unmistakable. PSI levels are raised to the chance level where the
    # samples are too small for them (psi_chance_level). Against a reference of the nearest
    # training months, quiet demo months stay under 0.1 and drift under 10% of features;
    # the price-rise month has a PSI near 1.
    share_warn: float = 0.2
    share_error: float = 0.3
    psi_warn: float = 0.25
    psi_error: float = 0.5
    prediction_warn: float = 0.12
    prediction_error: float = 0.2
    # Importance-weighted PSI (sum of attribution share x PSI in excess of chance): the PSI
    # the model feels; the same reading as a single feature's PSI.
    weighted_warn: float = 0.1
    weighted_error: float = 0.25
    # A feature with a smaller share of the champion's mean |SHAP| can warn but not page:
    # the model barely reads it, so its shift alone cannot make the scores wrong.
    min_importance: float = 0.01

    def __post_init__(self) -> None:
        for name in ("share", "psi", "prediction", "weighted"):
            warn, error = getattr(self, f"{name}_warn"), getattr(self, f"{name}_error")
            if not 0 <= warn <= error:
                raise DriftError(f"{name}: need 0 <= warn ({warn}) <= error ({error})")
        if not 0 <= self.min_importance < 1:
            raise DriftError(f"min_importance must be in [0, 1), got {self.min_importance}")


HTML_REPORT_POLICIES = ("latest", "all", "none")


class DriftPolicy(dg.ConfigurableResource):
    """How drift is measured and when it is an alarm: read by monitoring/drift, its checks,
    the retraining sensor and `churn run`'s summary (all through ``drift_verdict``), so one
    level means one thing."""

    share_warn: float = Field(default=DriftThresholds.share_warn, description="Share of drifted features that warns.")
    share_error: float = Field(default=DriftThresholds.share_error,
                               description="Share of drifted features that fails with ERROR and calls for retraining.")
    psi_warn: float = Field(default=DriftThresholds.psi_warn, description="Largest feature PSI that warns.")
    psi_error: float = Field(default=DriftThresholds.psi_error,
                             description="Largest feature PSI that fails with ERROR and calls for retraining.")
    prediction_warn: float = Field(default=DriftThresholds.prediction_warn, description="Prediction drift score that warns.")
    prediction_error: float = Field(default=DriftThresholds.prediction_error,
                                    description="Prediction drift score that fails with ERROR and calls for retraining.")
    weighted_warn: float = Field(default=DriftThresholds.weighted_warn,
                                 description="Importance-weighted PSI (share of mean |SHAP| x PSI, summed) that warns.")
    weighted_error: float = Field(default=DriftThresholds.weighted_error,
                                  description="Importance-weighted PSI that fails with ERROR and calls for retraining.")
    min_importance: float = Field(
        default=DriftThresholds.min_importance,
        description="Share of the champion's mean |SHAP| a feature needs for its PSI to fail with ERROR; "
                    "below it a shift only warns.")
    reference_months: int = Field(
        default=DriftSettings.reference_months,
        description="Training months in each month's reference, the ones nearest the month (the latest "
                    "ones for a month after training); 0: every training month.")
    psi_alpha: float = Field(
        default=DriftSettings.psi_alpha,
        description="Chance of a PSI level being reached by noise alone that is tolerated per feature; "
                    "PSI levels rise where samples are too small for them.")
    sample_rows: int = Field(default=DriftSettings.sample_rows, description="Rows sampled from the reference and from each month.")
    seed: int = Field(default=DriftSettings.seed, description="Seed of the deterministic samples.")
    numeric_method: str = Field(default=DriftSettings.numeric_method, description="Evidently stattest for numeric features.")
    categorical_method: str = Field(default=DriftSettings.categorical_method,
                                    description="Evidently stattest for categorical features.")
    threshold: float | None = Field(default=DriftSettings.threshold,
                                    description="Drift threshold for every feature; null: the method's default.")
    prediction_method: str = Field(default=DriftSettings.prediction_method,
                                   description="Evidently stattest for churn_probability.")
    psi_bins: int = Field(default=DriftSettings.psi_bins, description="Quantile bins of numeric features for PSI.")
    html_reports: str = Field(
        default="latest",
        description="Which months of a run get an Evidently HTML report: latest, all or none "
                    "(rendering costs seconds per feature).",
    )

    def thresholds(self) -> DriftThresholds:
        return DriftThresholds(
            share_warn=self.share_warn, share_error=self.share_error, psi_warn=self.psi_warn,
            psi_error=self.psi_error, prediction_warn=self.prediction_warn, prediction_error=self.prediction_error,
            weighted_warn=self.weighted_warn, weighted_error=self.weighted_error, min_importance=self.min_importance,
        )

    def settings(self) -> DriftSettings:
        if self.html_reports not in HTML_REPORT_POLICIES:
            raise DriftError(f"html_reports must be one of {', '.join(HTML_REPORT_POLICIES)}, got {self.html_reports!r}")
        return DriftSettings(
            sample_rows=self.sample_rows, seed=self.seed, numeric_method=self.numeric_method,
            categorical_method=self.categorical_method, threshold=self.threshold,
            prediction_method=self.prediction_method, psi_bins=self.psi_bins,
            reference_months=self.reference_months, psi_alpha=self.psi_alpha,
        )


def graded_check(what: str, value: float | None, warn_at: float, error_at: float) -> CheckVerdict:
    """Pass below ``warn_at``; fail with WARN from ``warn_at``, with ERROR from ``error_at``.
    A value that was not measured (None/NaN) passes and says so."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True, None, {"value": None, "description": f"{what} was not measured"}
    value = float(value)
    if value >= error_at:
        severity, passed, relation = "ERROR", False, f">= error level {error_at:g}"
    elif value >= warn_at:
        severity, passed, relation = "WARN", False, f">= warn level {warn_at:g}"
    else:
        severity, passed, relation = None, True, f"< warn level {warn_at:g}"
    return passed, severity, {
        "value": value,
        "warn_at": warn_at,
        "error_at": error_at,
        "description": f"{what} {value:.4f} {relation}",
    }


def check_drift_share(summary: Mapping[str, Any], thresholds: DriftThresholds) -> CheckVerdict:
    passed, severity, metadata = graded_check(
        "share of drifted features", summary.get("share_drifted"), thresholds.share_warn, thresholds.share_error
    )
    metadata["drifted_features"] = summary.get("drifted_features")
    return passed, severity, metadata


def _measured(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def check_max_psi(summary: Mapping[str, Any], thresholds: DriftThresholds) -> CheckVerdict:
    """The largest paging PSI (``paging_psi``: beyond chance, discounted below the importance
    floor; rows written before it existed: ``max_psi``) at the PSI levels. A larger raw PSI
    on a feature the champion barely reads is named but does not count in full."""
    paging = summary.get("paging_psi_feature") is not None
    value = summary.get("paging_psi") if paging else summary.get("max_psi")
    feature = summary.get("paging_psi_feature") if paging else summary.get("max_psi_feature")
    passed, severity, metadata = graded_check(
        f"largest PSI ({feature})" if feature else "largest PSI", value, thresholds.psi_warn, thresholds.psi_error,
    )
    metadata["feature"] = feature
    raw, share = _measured(summary.get("paging_psi_raw")), _measured(summary.get("paging_psi_importance"))
    if paging and raw is not None and value is not None and raw - float(value) > 1e-9:
        metadata["description"] += (f" (PSI {raw:.4f} counted at {share or 0:.2%} of the champion's attribution "
                                    f"against a floor of {thresholds.min_importance:.0%})")
    top, top_feature = _measured(summary.get("max_psi")), summary.get("max_psi_feature")
    if paging and top is not None and top_feature != feature:
        top_share = _measured(summary.get("max_psi_importance"))
        carries = f", {top_share:.2%} of the attribution" if top_share is not None else ""
        metadata["description"] += f"; largest raw PSI {top:.4f} on {top_feature}{carries}"
    return passed, severity, metadata


def check_prediction_drift(summary: Mapping[str, Any], thresholds: DriftThresholds) -> CheckVerdict:
    """The prediction drift score at its levels, unless the predictions' PSI is within
    chance (``prediction_psi_critical``): small samples reach a distance level by noise."""
    passed, severity, metadata = graded_check(
        "prediction drift score", summary.get("prediction_drift_score"),
        thresholds.prediction_warn, thresholds.prediction_error,
    )
    psi, critical = _measured(summary.get("prediction_psi")), _measured(summary.get("prediction_psi_critical"))
    if not passed and psi is not None and critical is not None and psi < critical:
        passed, severity = True, None
        metadata["description"] += (f", but the predictions' PSI {psi:.4f} is within chance "
                                    f"({critical:.4f} at these sample sizes)")
    return passed, severity, metadata


def check_weighted_drift(summary: Mapping[str, Any], thresholds: DriftThresholds) -> CheckVerdict:
    """The importance-weighted PSI (``weighted_psi``): a shift pages in proportion to how much
    the champion reads the features that moved. Names the features that moved."""
    passed, severity, metadata = graded_check(
        "importance-weighted PSI", summary.get("weighted_psi"), thresholds.weighted_warn, thresholds.weighted_error,
    )
    moved = summary.get("moved_features")
    if moved:
        metadata["moved_features"] = moved
        metadata["description"] += f"; moved: {moved}"
    return passed, severity, metadata


DRIFT_CHECKS = {
    "drift_share": check_drift_share,
    "max_psi": check_max_psi,
    "prediction_drift": check_prediction_drift,
    "weighted_drift": check_weighted_drift,
}
_SEVERITY_RANK = {None: 0, "WARN": 1, "ERROR": 2}


DRIFT_CHECK_DESCRIPTIONS = {
    "drift_share": "Share of features whose Evidently drift test fires (beyond chance) in the month.",
    "max_psi": "Largest PSI a feature may page with in the month: beyond chance, discounted below the "
               "importance floor.",
    "prediction_drift": "Drift of the month's churn_probability against the champion's reference predictions.",
    "weighted_drift": "Importance-weighted PSI of the month (PSI x share of mean |SHAP|, summed).",
}
NO_PAST = "warns only: no training month precedes this month to compare it with"


def month_verdict(name: str, summary: Mapping[str, Any], thresholds: DriftThresholds) -> CheckVerdict:
    """Drift check ``name`` on one month. An error in a month that no training month precedes
    is a warning: the first months of the data are compared with later months, which differ
    from them as the history fills up (look-back windows, an ageing base), and that is no
    change retraining could answer."""
    passed, severity, metadata = DRIFT_CHECKS[name](summary, thresholds)
    if severity == "ERROR" and summary.get("reference_precedes") is False:
        severity = "WARN"
        metadata = {**metadata, "description": f"{metadata['description']}; {NO_PAST}"}
    return passed, severity, metadata


def drift_verdict(summary: Mapping[str, Any], thresholds: DriftThresholds) -> CheckVerdict:
    """The month's drift as one verdict: the worst of the drift checks, with the failing
    ones' descriptions. What the retraining sensor and the run summary call an error is
    exactly what fails a drift check with ERROR."""
    verdicts = {name: month_verdict(name, summary, thresholds) for name in DRIFT_CHECKS}
    worst = max(verdicts.values(), key=lambda v: _SEVERITY_RANK[v[1]])
    failing = {name: v for name, v in verdicts.items() if not v[0]}
    passed, severity = worst[0], worst[1]
    description = "; ".join(f"{name}: {v[2]['description']}" for name, v in verdicts.items()
                            if v[1] == severity or not failing)
    if summary.get("moved_features"):
        description += f"; moved: {summary['moved_features']}"
    return passed, severity, {
        "failing": sorted(failing),
        "moved_features": summary.get("moved_features") or None,
        "description": description,
    }


# -- warehouse reads and writes ----------------------------------------------------------

FEATURES_TABLE = "features.customer_features"
TRAINING_SET_TABLE = "features.training_set"


def _quoted(columns: Sequence[str]) -> list[str]:
    return ['"' + c.replace('"', '""') + '"' for c in columns]


def _column_list(columns: Sequence[str]) -> str:
    return ", ".join(_quoted(columns))


def _sql_value(column: str, kind: str) -> str:
    base = kind.replace(" NOT NULL", "")
    # A NaN score means "not measurable"; store it as NULL so SQL aggregates skip it.
    if base == "DOUBLE":
        return f"CAST(nullif({column}, 'NaN'::DOUBLE) AS DOUBLE)"
    return f"CAST({column} AS {base})"


def reference_months_for(month: Any, train_months: Sequence[Any], count: int) -> list[date]:
    """The ``count`` latest training months before ``month`` (0: every training month); the
    first ``count`` training months for a month with none before it.

    For a month after training (the monitoring case) these are the latest training months;
    for a month inside the training window (a backfill) the ones that preceded it, which is
    what monitoring at the time would have compared it with. Either way a month is compared
    with the same stage of the history, so slow, steady change (a base that ages, look-back
    windows still filling after the data starts) does not pile up into an alarm, while a
    change from the months before still shows. A year of months averages out seasons and
    dilutes a transient in the last few training months.
    """
    months = sorted({first_of_month(m) for m in train_months})
    if count == 0:
        return months
    target = first_of_month(month)
    before = [m for m in months if m < target]
    # The first training month (or one before them all) has no past to be compared with:
    # the earliest others stand in, which is as near in time as the data allows.
    return before[-count:] if before else [m for m in months if m != target][:count] or months


def first_of_month(value: Any) -> date:
    return date.fromisoformat(str(value)[:10]).replace(day=1)


def reference_sample(
    con: duckdb.DuckDBPyConnection,
    months: Sequence[Any],
    columns: Sequence[str],
    *,
    sample_rows: int,
    seed: int,
    source: str = TRAINING_SET_TABLE,
) -> pd.DataFrame:
    """Up to ``sample_rows`` rows of the training months, the same rows for the same seed.

    Ordering by a seeded hash of the row key is a deterministic sample whatever the thread
    count, and DuckDB keeps only the top rows while scanning (bounded memory).
    """
    if not months:
        raise DriftError("The champion records no training months: no reference to compare with")
    placeholders = ", ".join("CAST(? AS DATE)" for _ in months)
    return con.execute(
        f"SELECT customer_id, snapshot_month, {_column_list(columns)} FROM {source} "
        f"WHERE snapshot_month IN ({placeholders}) "
        f"ORDER BY hash(customer_id, snapshot_month, ?) LIMIT ?",
        [*(str(m) for m in months), seed, sample_rows],
    ).df()


def current_sample(
    con: duckdb.DuckDBPyConnection,
    month: str,
    columns: Sequence[str],
    *,
    sample_rows: int,
    seed: int,
    source: str = FEATURES_TABLE,
    predictions: str | None = "ml.predictions",
) -> pd.DataFrame:
    """A seeded sample of one month's feature rows, with the stored churn_probability of
    each row when ``predictions`` is given (NULL where the month was not scored)."""
    joined = (
        f"LEFT JOIN {predictions} AS p ON p.customer_id = f.customer_id AND p.snapshot_month = f.snapshot_month"
        if predictions else ""
    )
    probability = "p.churn_probability" if predictions else "CAST(NULL AS DOUBLE)"
    selected = ", ".join(f"f.{c}" for c in _quoted(columns))
    return con.execute(
        f"SELECT f.customer_id, f.snapshot_month, {selected}, {probability} AS {PREDICTION_COLUMN} "
        f"FROM {source} AS f {joined} "
        f"WHERE f.snapshot_month = CAST(? AS DATE) "
        f"ORDER BY hash(f.customer_id, f.snapshot_month, ?) LIMIT ?",
        [month, seed, sample_rows],
    ).df()


def ensure_drift_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS monitoring")
    for table, columns in ((DRIFT_TABLE, DRIFT_COLUMNS), (DRIFT_SUMMARY_TABLE, DRIFT_SUMMARY_COLUMNS)):
        body = ", ".join(f"{name} {kind}" for name, kind in columns.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
        # Warehouses made before a column existed get it (NULL in their old rows).
        schema, name_only = table.split(".")
        present = {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [schema, name_only]).fetchall()}
        for name, kind in columns.items():
            if name not in present and "NOT NULL" not in kind:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def write_drift(
    con: duckdb.DuckDBPyConnection,
    month: str,
    result: DriftResult,
    model_version: str,
    report_path: str | None = None,
) -> None:
    """Replace one month in monitoring.drift and monitoring.drift_summary (caller's transaction)."""
    ensure_drift_tables(con)
    for table in (DRIFT_TABLE, DRIFT_SUMMARY_TABLE):
        con.execute(f"DELETE FROM {table} WHERE month = CAST(? AS DATE)", [month])
    features = result.features.assign(
        month=month,
        reference_rows=result.summary["reference_rows"],
        current_rows=result.summary["current_rows"],
        model_version=model_version,
    )[list(DRIFT_COLUMNS)]
    con.register("drift_rows", features)
    try:
        casts = ", ".join(_sql_value(c, t) for c, t in DRIFT_COLUMNS.items())
        con.execute(f"INSERT INTO {DRIFT_TABLE} ({', '.join(DRIFT_COLUMNS)}) SELECT {casts} FROM drift_rows")
    finally:
        con.unregister("drift_rows")
    row = summary_row(month, result.summary, model_version, report_path)
    row = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
    columns = list(DRIFT_SUMMARY_COLUMNS)
    con.execute(
        f"INSERT INTO {DRIFT_SUMMARY_TABLE} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        [row[c] for c in columns],
    )


def latest_drift_summary(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    from churn_assets.monitoring.champion import table_exists

    if not table_exists(con, DRIFT_SUMMARY_TABLE):
        return None
    cursor = con.execute(f"SELECT * FROM {DRIFT_SUMMARY_TABLE} ORDER BY month DESC LIMIT 1")
    row = cursor.fetchone()
    return dict(zip([d[0] for d in cursor.description], row)) if row else None
