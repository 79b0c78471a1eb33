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

Evidently takes several seconds to import, so it is imported inside the functions only.
Samples are bounded (``DriftSettings.sample_rows``), which bounds the cost of a month.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
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
    "prediction_drift_score": "DOUBLE",
    "prediction_drifted": "BOOLEAN",
    "prediction_psi": "DOUBLE",
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
    "drifted": "Whether that test fired at its threshold.",
    "psi": "Population stability index of the month against the reference.",
    "stattest": "The Evidently stattest used.",
    "threshold": "The stattest's threshold.",
    "reference_rows": "Rows sampled from the champion's training months.",
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
    # Share of drifted columns at which Evidently's report calls the whole dataset drifted.
    report_drift_share: float = 0.5

    def __post_init__(self) -> None:
        if self.sample_rows < 10:
            raise DriftError(f"sample_rows must be at least 10, got {self.sample_rows}")
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
        ref = pd.to_numeric(pd.Series(reference), errors="coerce").to_numpy(dtype="float64")
        cur = pd.to_numeric(pd.Series(current), errors="coerce").to_numpy(dtype="float64")
        ref[~np.isfinite(ref)] = np.nan
        cur[~np.isfinite(cur)] = np.nan
        present = ref[~np.isnan(ref)]
        if present.size:
            edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1))[1:-1])
        else:
            edges = np.array([], dtype="float64")
        missing_bin = edges.size + 1

        def codes(values: np.ndarray) -> np.ndarray:
            out = np.searchsorted(edges, values, side="right")
            out[np.isnan(values)] = missing_bin
            return out

        ref_codes, cur_codes = codes(ref), codes(cur)
        bounds = [-math.inf, *edges.tolist(), math.inf]
        labels = [f"[{bounds[i]:.6g}, {bounds[i + 1]:.6g})" for i in range(edges.size + 1)]
        labels.append(MISSING_LEVEL)
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
) -> DriftResult:
    """Per-feature Evidently drift and PSI, plus prediction drift when both sides have
    predictions. ``features`` has one row per feature (feature, kind, drift_score, drifted,
    psi, stattest, threshold); ``summary`` the month-level figures."""
    import numpy as np
    import pandas as pd

    settings = settings or DriftSettings()
    if not len(numeric) + len(categorical):
        raise DriftError("No feature columns to compare")
    if reference.empty:
        raise DriftError("The reference sample is empty: the champion's training months hold no rows")
    if current.empty:
        raise DriftError("The current month holds no feature rows")
    _check_columns(reference, [*numeric, *categorical], "reference")
    _check_columns(current, [*numeric, *categorical], "current")

    rows = []
    for kind, columns, method in (
        (NUMERIC, numeric, settings.numeric_method),
        (CATEGORICAL, categorical, settings.categorical_method),
    ):
        for name in columns:
            test = evidently_column_drift(reference[name], current[name], kind, method, settings.threshold)
            psi = population_stability_index(
                reference[name], current[name], kind, bins=settings.psi_bins, epsilon=settings.psi_epsilon
            )
            rows.append({"feature": name, "kind": kind, **test, "psi": psi})
    features = pd.DataFrame(rows, columns=["feature", "kind", "drift_score", "drifted", "psi", "stattest", "threshold"])

    testable = features[features["drift_score"].notna()]
    drifted = int(testable["drifted"].sum())
    top_psi = features.loc[features["psi"].idxmax()] if features["psi"].notna().any() else None
    summary: dict[str, Any] = {
        "features_checked": int(len(testable)),
        "drifted_features": drifted,
        "share_drifted": drifted / len(testable) if len(testable) else 0.0,
        "max_psi": float(top_psi["psi"]) if top_psi is not None else None,
        "max_psi_feature": str(top_psi["feature"]) if top_psi is not None else None,
        "prediction_drift_score": None,
        "prediction_drifted": None,
        "prediction_psi": None,
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
            summary.update(
                prediction_drift_score=test["drift_score"],
                prediction_drifted=test["drifted"],
                prediction_stattest=test["stattest"],
                prediction_psi=population_stability_index(
                    ref_pred, cur_pred, NUMERIC, bins=settings.psi_bins, epsilon=settings.psi_epsilon
                ),
            )
    return DriftResult(features=features, summary=summary)


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
    """Warn and error levels of the drift checks (a value at or above a level trips it)."""

    # Calibrated on the demo data: quiet months drift 9-19% of features with a largest PSI
    # near 0.2 (the reference is older, tenure-driven features move slowly); the price-rise
    # month drifts ~32% with a PSI near 1. Conventional PSI reading: < 0.1 stable,
    # 0.1-0.25 moderate, > 0.25 major; a single feature at 0.5 is unmistakable.
    share_warn: float = 0.2
    share_error: float = 0.3
    psi_warn: float = 0.25
    psi_error: float = 0.5
    prediction_warn: float = 0.12
    prediction_error: float = 0.2

    def __post_init__(self) -> None:
        for name in ("share", "psi", "prediction"):
            warn, error = getattr(self, f"{name}_warn"), getattr(self, f"{name}_error")
            if not 0 <= warn <= error:
                raise DriftError(f"{name}: need 0 <= warn ({warn}) <= error ({error})")


HTML_REPORT_POLICIES = ("latest", "all", "none")


class DriftPolicy(dg.ConfigurableResource):
    """How drift is measured and when it is an alarm: read by monitoring/drift, its three
    checks, the retraining sensor and `churn run`'s summary, so one level means one thing."""

    share_warn: float = Field(default=DriftThresholds.share_warn, description="Share of drifted features that warns.")
    share_error: float = Field(default=DriftThresholds.share_error,
                               description="Share of drifted features that fails with ERROR and calls for retraining.")
    psi_warn: float = Field(default=DriftThresholds.psi_warn, description="Largest feature PSI that warns.")
    psi_error: float = Field(default=DriftThresholds.psi_error,
                             description="Largest feature PSI that fails with ERROR and calls for retraining.")
    prediction_warn: float = Field(default=DriftThresholds.prediction_warn, description="Prediction drift score that warns.")
    prediction_error: float = Field(default=DriftThresholds.prediction_error,
                                    description="Prediction drift score that fails with ERROR and calls for retraining.")
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
        )

    def settings(self) -> DriftSettings:
        if self.html_reports not in HTML_REPORT_POLICIES:
            raise DriftError(f"html_reports must be one of {', '.join(HTML_REPORT_POLICIES)}, got {self.html_reports!r}")
        return DriftSettings(
            sample_rows=self.sample_rows, seed=self.seed, numeric_method=self.numeric_method,
            categorical_method=self.categorical_method, threshold=self.threshold,
            prediction_method=self.prediction_method, psi_bins=self.psi_bins,
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


def check_max_psi(summary: Mapping[str, Any], thresholds: DriftThresholds) -> CheckVerdict:
    feature = summary.get("max_psi_feature")
    passed, severity, metadata = graded_check(
        f"largest PSI ({feature})" if feature else "largest PSI",
        summary.get("max_psi"), thresholds.psi_warn, thresholds.psi_error,
    )
    metadata["feature"] = feature
    return passed, severity, metadata


def check_prediction_drift(summary: Mapping[str, Any], thresholds: DriftThresholds) -> CheckVerdict:
    return graded_check(
        "prediction drift score", summary.get("prediction_drift_score"),
        thresholds.prediction_warn, thresholds.prediction_error,
    )


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
        con.execute(f"INSERT INTO {DRIFT_TABLE} SELECT {casts} FROM drift_rows")
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
