"""Realised performance: how month M's predictions did once month M+1 revealed who churned.

A month's labels become known when the following month lands, and features.labels is
recomputed as a whole, so the table here is refreshed as a whole too, but only months
whose labelled predictions changed (another model, a rescore, more labels) are
recomputed; the rest keep their row. Each month is pulled into memory on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from churn_assets.core.metadata import CheckVerdict
from churn_assets.monitoring.champion import MODEL_VERSIONS_TABLE, table_exists
from churn_assets.scoring.batch import PREDICTIONS_TABLE

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

LABELS_TABLE = "features.labels"
PERFORMANCE_TABLE = "monitoring.performance"
PERFORMANCE_COLUMNS: dict[str, str] = {
    "month": "DATE NOT NULL",
    "rows": "BIGINT NOT NULL",
    "positives": "BIGINT NOT NULL",
    "auc": "DOUBLE",
    "pr_auc": "DOUBLE",
    "brier": "DOUBLE NOT NULL",
    "ece": "DOUBLE NOT NULL",
    "mean_probability": "DOUBLE NOT NULL",
    "model_version": "VARCHAR NOT NULL",
    "champion_test_auc": "DOUBLE",
    "scored_at": "TIMESTAMP NOT NULL",
    "computed_at": "TIMESTAMP NOT NULL",
}
PERFORMANCE_DESCRIPTIONS: dict[str, str] = {
    "month": "Snapshot month of the predictions; their labels come from the month after.",
    "rows": "Predictions of the month that have a label.",
    "positives": "Of those, customers who churned.",
    "auc": "Realised ROC-AUC (NULL when the month has one class only).",
    "pr_auc": "Realised average precision (NULL when the month has one class only).",
    "brier": "Mean squared error of the probabilities.",
    "ece": "Expected calibration error (10 equal-width bins).",
    "mean_probability": "Mean predicted churn probability.",
    "model_version": "The model that made the predictions.",
    "champion_test_auc": "That model's test AUC at training time, for comparison.",
    "scored_at": "When the month was scored.",
    "computed_at": "When this row was computed.",
}
# Columns that tell whether a stored month is still current.
FINGERPRINT = ("month", "model_version", "rows", "positives", "scored_at")



class PerformanceError(ValueError):
    """Realised performance cannot be computed from what the warehouse holds."""


def realised_metrics(labels: Any, probabilities: Any, n_bins: int = 10) -> dict[str, float | int]:
    """ROC-AUC, PR-AUC, Brier score and expected calibration error of one month.

    AUCs are NaN when the month has a single class (no churner, or only churners).
    """
    import numpy as np
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    from churn_assets.evaluation.metrics import expected_calibration_error, validate_predictions

    y, p = validate_predictions(labels, probabilities)
    both_classes = 0 < y.sum() < y.size
    return {
        "rows": int(y.size),
        "positives": int(y.sum()),
        "auc": float(roc_auc_score(y, p)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(y, p)) if both_classes else math.nan,
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p, n_bins),
        "mean_probability": float(np.mean(p)),
    }


_LABELLED = f"""
    FROM {PREDICTIONS_TABLE} AS p
    JOIN {LABELS_TABLE} AS l
      ON l.customer_id = p.customer_id AND l.snapshot_month = p.snapshot_month
    WHERE l.churned IS NOT NULL
"""


def labelled_months(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row per (month, model_version) with labelled predictions: its fingerprint."""
    import pandas as pd

    if not (table_exists(con, PREDICTIONS_TABLE) and table_exists(con, LABELS_TABLE)):
        return pd.DataFrame(columns=list(FINGERPRINT))
    return con.execute(f"""
        SELECT p.snapshot_month AS month, p.model_version, count(*) AS rows,
               sum(CAST(l.churned AS INTEGER)) AS positives, max(p.scored_at) AS scored_at
        {_LABELLED}
        GROUP BY ALL
        ORDER BY month, model_version
    """).df()


def stored_fingerprints(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    import pandas as pd

    if not table_exists(con, PERFORMANCE_TABLE):
        return pd.DataFrame(columns=list(FINGERPRINT))
    return con.execute(f"SELECT {', '.join(FINGERPRINT)} FROM {PERFORMANCE_TABLE}").df()


def _keys(frame: pd.DataFrame) -> set[tuple]:
    import pandas as pd

    return {
        (pd.Timestamp(r.month).date(), r.model_version, int(r.rows), int(r.positives), pd.Timestamp(r.scored_at))
        for r in frame.itertuples(index=False)
    }


@dataclass
class PerformancePlan:
    """Which months to (re)compute and which stored months no longer have labelled predictions."""

    to_compute: list[tuple[date, str]] = field(default_factory=list)
    unchanged: list[tuple[date, str]] = field(default_factory=list)
    to_remove: list[tuple[date, str]] = field(default_factory=list)


def plan_refresh(con: duckdb.DuckDBPyConnection, *, force: bool = False) -> PerformancePlan:
    current, stored = _keys(labelled_months(con)), _keys(stored_fingerprints(con))
    plan = PerformancePlan()
    for key in sorted(current):
        (plan.unchanged if key in stored and not force else plan.to_compute).append(key[:2])
    current_months = {key[:2] for key in current}
    plan.to_remove = sorted({key[:2] for key in stored} - current_months)
    return plan


def compute_month(con: duckdb.DuckDBPyConnection, month: date, model_version: str) -> dict[str, Any]:
    """The ``monitoring.performance`` row of one month's predictions by one model."""
    frame = con.execute(
        f"SELECT p.churn_probability, CAST(l.churned AS INTEGER) AS churned, p.scored_at "
        f"{_LABELLED} AND p.snapshot_month = ? AND p.model_version = ?",
        [month, model_version],
    ).df()
    if frame.empty:
        raise PerformanceError(f"No labelled predictions for {month:%Y-%m} by {model_version}")
    test_auc = None
    if table_exists(con, MODEL_VERSIONS_TABLE):
        row = con.execute(
            f"SELECT test_auc FROM {MODEL_VERSIONS_TABLE} WHERE version = ?", [model_version]
        ).fetchone()
        test_auc = float(row[0]) if row and row[0] is not None else None
    return {
        "month": month,
        **realised_metrics(frame["churned"], frame["churn_probability"]),
        "model_version": model_version,
        "champion_test_auc": test_auc,
        "scored_at": frame["scored_at"].max().to_pydatetime(),
        "computed_at": datetime.now(timezone.utc).replace(tzinfo=None),
    }


def ensure_performance_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS monitoring")
    body = ", ".join(f"{name} {kind}" for name, kind in PERFORMANCE_COLUMNS.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS {PERFORMANCE_TABLE} ({body})")


def write_performance(
    con: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]], remove: Sequence[tuple[date, str]]
) -> None:
    """Replace the rows of the given (month, model_version) pairs; runs in the caller's transaction."""
    ensure_performance_table(con)
    for month, version in [*remove, *((r["month"], r["model_version"]) for r in rows)]:
        con.execute(
            f"DELETE FROM {PERFORMANCE_TABLE} WHERE month = ? AND model_version = ?", [month, version]
        )
    columns = list(PERFORMANCE_COLUMNS)
    placeholders = ", ".join("?" for _ in columns)
    for row in rows:
        values = [None if isinstance(row[c], float) and math.isnan(row[c]) else row[c] for c in columns]
        con.execute(f"INSERT INTO {PERFORMANCE_TABLE} ({', '.join(columns)}) VALUES ({placeholders})", values)


def latest_performance(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The most recent month's row of ``monitoring.performance`` (None when empty)."""
    if not table_exists(con, PERFORMANCE_TABLE):
        return None
    cursor = con.execute(f"SELECT * FROM {PERFORMANCE_TABLE} ORDER BY month DESC, scored_at DESC LIMIT 1")
    row = cursor.fetchone()
    return dict(zip([d[0] for d in cursor.description], row)) if row else None


@dataclass(frozen=True)
class DecaySettings:
    """Fail when realised AUC falls more than ``max_drop`` below the model's test AUC."""

    max_drop: float = 0.05
    severity: str = "ERROR"

    def __post_init__(self) -> None:
        if not 0 <= self.max_drop < 1:
            raise PerformanceError(f"max_drop must be in [0, 1), got {self.max_drop}")
        if self.severity not in ("WARN", "ERROR"):
            raise PerformanceError(f"severity must be WARN or ERROR, got {self.severity!r}")


def check_decay(performance: Mapping[str, Any] | None, settings: DecaySettings) -> CheckVerdict:
    """(passed, severity, metadata) for one month's realised performance row."""
    if performance is None:
        return True, None, {"description": "no month has realised performance yet (labels arrive a month later)"}
    auc, test_auc = performance.get("auc"), performance.get("champion_test_auc")
    month = performance.get("month")
    month_text = f"{month:%Y-%m}" if hasattr(month, "strftime") else str(month)
    base = {"month": month_text, "model_version": performance.get("model_version"),
            "rows": performance.get("rows"), "positives": performance.get("positives")}
    if auc is None or (isinstance(auc, float) and math.isnan(auc)) or test_auc is None:
        return True, None, {**base, "description": (
            f"{month_text}: AUC not measurable (single class or no recorded test AUC)")}
    floor = test_auc - settings.max_drop
    passed = auc >= floor
    return passed, None if passed else settings.severity, {
        **base,
        "auc": float(auc),
        "champion_test_auc": float(test_auc),
        "max_drop": settings.max_drop,
        "drop": float(test_auc - auc),
        "description": (
            f"{month_text}: realised AUC {auc:.4f} {'>=' if passed else '<'} test AUC "
            f"{test_auc:.4f} - {settings.max_drop:g}"
        ),
    }
