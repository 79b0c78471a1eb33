"""Batch scoring: churn probabilities for every customer of a snapshot month.

Rows stream out of DuckDB as Arrow record batches, each batch is scored and written
before the next is read, so memory stays flat however many customers a month holds.
The model is anything with ``predict_proba(frame) -> array`` and a ``version``; the
registry's ``LoadedModel`` is one, a small fitted stand-in in a test is another.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

import dagster as dg
from pydantic import Field

from churn_assets.core.partitions import month_key

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pandas as pd
    import pyarrow as pa

FEATURES_TABLE = "features.customer_features"
PREDICTIONS_TABLE = "ml.predictions"
ID_COLUMN = "customer_id"
MONTH_COLUMN = "snapshot_month"
DEFAULT_BATCH_ROWS = 100_000

PREDICTION_COLUMNS: dict[str, str] = {
    "customer_id": "VARCHAR NOT NULL",
    "snapshot_month": "DATE NOT NULL",
    "churn_probability": "DOUBLE NOT NULL",
    "risk_band": "VARCHAR NOT NULL",
    "model_version": "VARCHAR NOT NULL",
    "scored_at": "TIMESTAMP NOT NULL",
}
PREDICTION_DESCRIPTIONS: dict[str, str] = {
    "customer_id": "Customer identifier (features.customer_features).",
    "snapshot_month": "Snapshot month the features describe; the prediction is for churn in the month after.",
    "churn_probability": "Calibrated probability that the customer cancels in the following month.",
    "risk_band": "low / medium / high by the configured probability cut-offs.",
    "model_version": "Registry version of the model that produced the score.",
    "scored_at": "When the batch was scored (UTC).",
}
RISK_BANDS = ("low", "medium", "high")


class ScoringError(ValueError):
    """The model or the feature rows cannot be scored as asked."""


class ScoringModel(Protocol):
    version: str | None

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray: ...


@dataclass(frozen=True)
class RiskBands:
    """A probability at or above ``medium`` is medium risk, at or above ``high`` high risk."""

    medium: float = 0.3
    high: float = 0.6

    def __post_init__(self) -> None:
        if not 0.0 < self.medium < self.high < 1.0:
            raise ScoringError(
                f"Risk cut-offs must satisfy 0 < medium < high < 1; got medium={self.medium}, "
                f"high={self.high}"
            )

    def assign(self, probabilities: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.select(
            [probabilities >= self.high, probabilities >= self.medium],
            ["high", "medium"],
            default="low",
        )


class ScoringPolicy(dg.ConfigurableResource):
    """How the champion's scores are written and banded: read by ml/predictions (and the
    HTTP service to come), so a band means the same everywhere."""

    medium_risk: float = Field(default=RiskBands.medium, description="Churn probability from which a customer is medium risk.")
    high_risk: float = Field(default=RiskBands.high, description="Churn probability from which a customer is high risk.")
    batch_rows: int = Field(default=DEFAULT_BATCH_ROWS, description="Rows per Arrow batch scored at once.")

    def bands(self) -> RiskBands:
        return RiskBands(medium=self.medium_risk, high=self.high_risk)


@dataclass
class ScoringStats:
    """What one scoring pass wrote, for the materialization metadata."""

    rows: int = 0
    batches: int = 0
    largest_batch: int = 0
    seconds: float = 0.0
    rows_by_month: dict[str, int] = field(default_factory=dict)
    band_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RISK_BANDS, 0))
    probability_sum: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_probability(self) -> float | None:
        return self.probability_sum / self.rows if self.rows else None


def model_input_columns(model: Any) -> list[str] | None:
    """Feature columns the model reads (from its feature spec), or None to read every column."""
    spec = getattr(model, "feature_spec", None)
    roles = getattr(spec, "roles", None)
    features = getattr(roles, "features", None)
    return list(features) if features else None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _scoring_query(columns: Sequence[str] | None, source: str) -> str:
    if columns is None:
        selected = "*"
    else:
        keys = [ID_COLUMN, MONTH_COLUMN]
        selected = ", ".join(_quote(c) for c in keys + [c for c in columns if c not in keys])
    return f"SELECT {selected} FROM {source} WHERE {MONTH_COLUMN} = CAST($month AS DATE)"


def _validated_probabilities(raw: Any, expected_rows: int, month: str) -> np.ndarray:
    import numpy as np

    probabilities = np.asarray(raw, dtype="float64")
    # sklearn-style models return one column per class; the churn class is the last.
    if probabilities.ndim == 2 and probabilities.shape[1] == 2:
        probabilities = probabilities[:, 1]
    probabilities = probabilities.ravel()
    if probabilities.size != expected_rows:
        raise ScoringError(
            f"Model returned {probabilities.size} probabilities for {expected_rows} rows of {month}"
        )
    bad = ~np.isfinite(probabilities) | (probabilities < 0) | (probabilities > 1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ScoringError(
            f"Model returned values outside [0, 1] (or NaN) for {int(bad.sum())} rows of {month}, "
            f"first batch rows {rows}"
        )
    return probabilities


def score_month(
    con: duckdb.DuckDBPyConnection,
    model: ScoringModel,
    month: str,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    bands: RiskBands | None = None,
    scored_at: datetime | None = None,
    source: str = FEATURES_TABLE,
) -> Iterator[pa.RecordBatch]:
    """Predictions for one snapshot month, one Arrow record batch per feature batch.

    Each batch has the ``ml.predictions`` columns. The read runs on ``con``; a caller that
    writes while iterating should pass a separate cursor (``con.cursor()``) here, since a
    new statement on the same connection ends the pending result.
    """
    import pyarrow as pa

    if batch_rows < 1:
        raise ScoringError(f"batch_rows must be a positive number of rows, got {batch_rows}")
    version = getattr(model, "version", None)
    if not version:
        raise ScoringError("The model has no version: only registered models may write predictions")
    bands = bands or RiskBands()
    scored_at = scored_at or datetime.now(timezone.utc).replace(tzinfo=None)
    partition = month_key(month)
    month_value = date.fromisoformat(partition)
    reader = con.sql(
        _scoring_query(model_input_columns(model), source), params={"month": partition}
    ).to_arrow_reader(batch_rows)
    for batch in reader:
        if batch.num_rows == 0:
            continue
        frame = batch.to_pandas()
        probabilities = _validated_probabilities(
            model.predict_proba(frame), batch.num_rows, partition[:7]
        )
        yield pa.RecordBatch.from_arrays(
            [
                batch.column(ID_COLUMN).cast(pa.string()),
                pa.array([month_value] * batch.num_rows, type=pa.date32()),
                pa.array(probabilities, type=pa.float64()),
                pa.array(bands.assign(probabilities), type=pa.string()),
                pa.array([str(version)] * batch.num_rows, type=pa.string()),
                pa.array([scored_at] * batch.num_rows, type=pa.timestamp("us")),
            ],
            names=list(PREDICTION_COLUMNS),
        )


def ensure_predictions_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS ml")
    body = ", ".join(f"{name} {kind}" for name, kind in PREDICTION_COLUMNS.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS {PREDICTIONS_TABLE} ({body})")


def write_predictions(
    con: duckdb.DuckDBPyConnection,
    model: ScoringModel,
    months: Iterable[str],
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    bands: RiskBands | None = None,
    source: str = FEATURES_TABLE,
) -> ScoringStats:
    """Replace the predictions of ``months`` with fresh scores from ``model``.

    Runs in the caller's transaction (``warehouse.write()``): the delete and every batch
    insert commit together, so a failure leaves the previous predictions in place. Features
    stream through a second connection to the same database, so they must be committed
    before this transaction began (they are: features.customer_features is its own asset).
    """
    import numpy as np
    import pyarrow as pa

    partitions = sorted({month_key(m) for m in months})
    if not partitions:
        raise ScoringError("No months to score")
    ensure_predictions_table(con)
    scored_at = datetime.now(timezone.utc).replace(tzinfo=None)
    stats = ScoringStats()
    started = time.perf_counter()
    reader_con = con.cursor()
    try:
        for partition in partitions:
            con.execute(
                f"DELETE FROM {PREDICTIONS_TABLE} WHERE snapshot_month = CAST(? AS DATE)", [partition]
            )
            written = 0
            for batch in score_month(
                reader_con, model, partition, batch_rows=batch_rows, bands=bands,
                scored_at=scored_at, source=source,
            ):
                con.register("prediction_batch", pa.Table.from_batches([batch]))
                try:
                    con.execute(f"INSERT INTO {PREDICTIONS_TABLE} SELECT * FROM prediction_batch")
                finally:
                    con.unregister("prediction_batch")
                written += batch.num_rows
                stats.batches += 1
                stats.largest_batch = max(stats.largest_batch, batch.num_rows)
                bands_column = batch.column("risk_band").to_numpy(zero_copy_only=False)
                names, counts = np.unique(bands_column, return_counts=True)
                for name, count in zip(names, counts):
                    stats.band_counts[str(name)] += int(count)
                stats.probability_sum += float(np.sum(batch.column("churn_probability").to_numpy()))
            stats.rows_by_month[partition[:7]] = written
            stats.rows += written
    finally:
        reader_con.close()
    stats.seconds = time.perf_counter() - started
    return stats
