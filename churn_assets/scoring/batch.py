"""Batch scoring: churn probabilities for every customer of the requested snapshot months.

One query reads every requested month; its rows stream out of DuckDB as Arrow and are
scored in chunks of ``batch_rows`` (DuckDB's reader hands out smaller batches, which are
gathered), each chunk written before the next is read, so memory stays flat however many
customers the months hold.

Two paths, chosen per model:
- the matrix path, for models whose candidate scores a numeric matrix (the tree boosters,
  ``ChurnModel.matrix_dtype``): the query itself turns categoricals into the codes of the
  training levels (an ENUM of the levels: unseen values and NULLs become missing) and casts
  numerics to the booster's float type, so a chunk goes from Arrow to one numpy matrix to
  the booster with no DataFrame in between;
- the frame path, for everything else with ``predict_proba(frame) -> array`` and a
  ``version`` (the sklearn pipelines, the ensemble, a fitted stand-in in a test).
Both write the same way: the chunk's ids, months and probabilities go in one INSERT that
computes the risk band, the model version and the timestamp; the statistics of what was
written come from one SQL query at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
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

    def sql(self, probability: str) -> str:
        """The band of the SQL expression ``probability``: computed where the rows are written."""
        return (f"CASE WHEN {probability} >= {self.high!r} THEN 'high' "
                f"WHEN {probability} >= {self.medium!r} THEN 'medium' ELSE 'low' END")

    def of(self, probability: float) -> str:
        """The band of one probability, by the same rule as ``sql`` (the HTTP service's answers)."""
        return "high" if probability >= self.high else "medium" if probability >= self.medium else "low"


class ScoringPolicy(dg.ConfigurableResource):
    """How the champion's scores are written and banded: read by ml/predictions and the HTTP
    service, so a band means the same everywhere."""

    medium_risk: float = Field(default=RiskBands.medium, description="Churn probability from which a customer is medium risk.")
    high_risk: float = Field(default=RiskBands.high, description="Churn probability from which a customer is high risk.")
    batch_rows: int = Field(default=DEFAULT_BATCH_ROWS, gt=0, description="Rows scored (and held in memory) at once.")

    def bands(self) -> RiskBands:
        return RiskBands(medium=self.medium_risk, high=self.high_risk)


@dataclass
class MonthStats:
    rows: int = 0
    mean_probability: float | None = None
    high_risk_share: float | None = None


@dataclass
class ScoringStats:
    """What one scoring pass wrote, for the materialization metadata."""

    rows: int = 0
    batches: int = 0
    largest_batch: int = 0
    seconds: float = 0.0
    # "matrix" or "frame": which path scored the rows (see the module's docstring).
    path: str = "frame"
    months: dict[str, MonthStats] = field(default_factory=dict)
    band_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RISK_BANDS, 0))

    @property
    def rows_by_month(self) -> dict[str, int]:
        return {month: stats.rows for month, stats in self.months.items()}

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def model_input_columns(model: Any) -> list[str] | None:
    """Feature columns the model reads (from its feature spec), or None to read every column."""
    spec = getattr(model, "feature_spec", None)
    roles = getattr(spec, "roles", None)
    features = getattr(roles, "features", None)
    return list(features) if features else None


def quote_name(name: str) -> str:
    """A column name as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# Categorical columns of these DuckDB types are matched against the training levels as text
# in SQL; any other type (an integer forced categorical, say) is scored on the frame path,
# where pandas turns it into text exactly as training did.
_TEXT_TYPES = ("VARCHAR", "ENUM")


def _category_text(column: str, duckdb_type: str) -> str | None:
    """SQL for the text ``categorical_text`` gives a value in training, or None if unsure."""
    base = duckdb_type.upper().split("(")[0].strip()
    if base == "BOOLEAN":
        # pandas writes booleans as 'True' / 'False'; DuckDB's cast gives 'true' / 'false'.
        return f"CASE WHEN {column} THEN 'True' WHEN NOT {column} THEN 'False' END"
    if base in _TEXT_TYPES:
        return f"CAST({column} AS VARCHAR)"
    return None


def matrix_select(model: Any, column_types: Mapping[str, str]) -> tuple[list[str], str] | None:
    """The SQL expressions of the model's input matrix (one per feature, in the model's order)
    and the numpy dtype, or None when the model is scored on the frame path.

    A categorical becomes the position of its text among the training levels (the codes a
    pandas Categorical of those levels has in training), NULL where the value is missing or
    was never seen; a numeric is cast to the matrix's float type (DECIMALs through DOUBLE,
    as pandas reads them)."""
    dtype = getattr(model, "matrix_dtype", None)
    spec = getattr(model, "feature_spec", None)
    if dtype is None or spec is None:
        return None
    sql_float = {"float32": "FLOAT", "float64": "DOUBLE"}[dtype]
    expressions = []
    for name in spec.roles.categorical:
        text = _category_text(quote_name(name), column_types.get(name, ""))
        if text is None:
            return None
        levels = spec.categories[name]
        if not levels:
            expressions.append(f"CAST(NULL AS {sql_float})")
            continue
        enum = "ENUM(" + ", ".join(_literal(level) for level in levels) + ")"
        expressions.append(f"CAST(enum_code(TRY_CAST({text} AS {enum})) AS {sql_float})")
    for name in spec.roles.numeric:
        if name not in column_types:
            return None
        expressions.append(f"CAST(CAST({quote_name(name)} AS DOUBLE) AS {sql_float})")
    return expressions, dtype


def _month_filter(months: Sequence[str]) -> str:
    return f"{MONTH_COLUMN} IN (" + ", ".join(f"DATE {_literal(m)}" for m in months) + ")"


def validated_probabilities(raw: Any, expected_rows: int, where: str) -> np.ndarray:
    import numpy as np

    probabilities = np.asarray(raw, dtype="float64")
    # sklearn-style models return one column per class; the churn class is the last.
    if probabilities.ndim == 2 and probabilities.shape[1] == 2:
        probabilities = probabilities[:, 1]
    probabilities = probabilities.ravel()
    if probabilities.size != expected_rows:
        raise ScoringError(
            f"Model returned {probabilities.size} probabilities for {expected_rows} rows of {where}"
        )
    bad = ~np.isfinite(probabilities) | (probabilities < 0) | (probabilities > 1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ScoringError(
            f"Model returned values outside [0, 1] (or NaN) for {int(bad.sum())} rows of {where}, "
            f"first batch rows {rows}"
        )
    return probabilities


def _chunks(reader: pa.RecordBatchReader, rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``rows`` rows (the last one fewer) from a reader's smaller batches."""
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in reader:
        while batch.num_rows:
            take = min(batch.num_rows, rows - held)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == rows:
                yield pa.Table.from_batches(pending)
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending)


def _columns_of(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, str]:
    return {name: kind for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}


def _matrix(chunk: pa.Table, first: int, dtype: str) -> np.ndarray:
    """Columns ``first..`` of ``chunk`` as one C-ordered matrix; nulls become NaN."""
    import numpy as np

    out = np.empty((chunk.num_rows, chunk.num_columns - first), dtype=dtype)
    for position in range(first, chunk.num_columns):
        out[:, position - first] = chunk.column(position).to_numpy()
    return out


def score_months(
    con: duckdb.DuckDBPyConnection,
    model: ScoringModel,
    months: Iterable[str],
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    source: str = FEATURES_TABLE,
    stats: ScoringStats | None = None,
) -> Iterator[pa.Table]:
    """(customer_id, snapshot_month, churn_probability) of every row of ``months`` in ``source``,
    in tables of ``batch_rows`` rows, read by one query on ``con``.

    A caller that writes while iterating passes a separate cursor (``con.cursor()``): a new
    statement on the same connection ends the pending result. ``stats`` (if given) records
    the path and the chunks.
    """
    import pyarrow as pa

    if batch_rows < 1:
        raise ScoringError(f"batch_rows must be a positive number of rows, got {batch_rows}")
    partitions = sorted({month_key(m) for m in months})
    if not partitions:
        raise ScoringError("No months to score")
    stats = stats if stats is not None else ScoringStats()
    keys = [quote_name(ID_COLUMN), quote_name(MONTH_COLUMN)]
    plan = matrix_select(model, _columns_of(con, source))
    if plan is not None:
        expressions, dtype = plan
        stats.path = "matrix"
        selected = keys + expressions
    else:
        columns = model_input_columns(model)
        selected = ["*"] if columns is None else keys + [
            quote_name(c) for c in columns if c not in (ID_COLUMN, MONTH_COLUMN)]
    query = f"SELECT {', '.join(selected)} FROM {source} WHERE {_month_filter(partitions)}"
    where = ", ".join(p[:7] for p in partitions)
    for chunk in _chunks(con.sql(query).to_arrow_reader(batch_rows), batch_rows):
        if plan is not None:
            raw = model.predict_proba_matrix(_matrix(chunk, 2, dtype))
        else:
            raw = model.predict_proba(chunk.to_pandas())
        probabilities = validated_probabilities(raw, chunk.num_rows, where)
        stats.batches += 1
        stats.largest_batch = max(stats.largest_batch, chunk.num_rows)
        yield pa.table({
            ID_COLUMN: chunk.column(ID_COLUMN).cast(pa.string()),
            MONTH_COLUMN: chunk.column(MONTH_COLUMN).cast(pa.date32()),
            "churn_probability": pa.array(probabilities, type=pa.float64()),
        })


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

    Runs in the caller's transaction (``warehouse.write()``): the delete and every chunk's
    insert commit together, so a failure leaves the previous predictions in place. Features
    stream through a second connection to the same database, so they must be committed
    before this transaction began (they are: features.customer_features is its own asset).
    """
    partitions = sorted({month_key(m) for m in months})
    if not partitions:
        raise ScoringError("No months to score")
    version = getattr(model, "version", None)
    if not version:
        raise ScoringError("The model has no version: only registered models may write predictions")
    bands = bands or RiskBands()
    ensure_predictions_table(con)
    scored_at = datetime.now(timezone.utc).replace(tzinfo=None)
    stats = ScoringStats()
    started = time.perf_counter()
    con.execute(f"DELETE FROM {PREDICTIONS_TABLE} WHERE {_month_filter(partitions)}")
    insert = (
        f"INSERT INTO {PREDICTIONS_TABLE} SELECT {ID_COLUMN}, {MONTH_COLUMN}, churn_probability, "
        f"{bands.sql('churn_probability')}, $version, $scored_at FROM prediction_chunk"
    )
    reader_con = con.cursor()
    try:
        for chunk in score_months(reader_con, model, partitions, batch_rows=batch_rows,
                                  source=source, stats=stats):
            con.register("prediction_chunk", chunk)
            try:
                con.execute(insert, {"version": str(version), "scored_at": scored_at})
            finally:
                con.unregister("prediction_chunk")
    finally:
        reader_con.close()
    stats.months = {p[:7]: MonthStats() for p in partitions}
    band_columns = ", ".join(f"count(*) FILTER (WHERE risk_band = {_literal(b)})" for b in RISK_BANDS)
    for month, rows, mean, high, *per_band in con.execute(
        f"SELECT strftime({MONTH_COLUMN}, '%Y-%m'), count(*), avg(churn_probability), "
        f"avg(CAST(risk_band = 'high' AS DOUBLE)), {band_columns} "
        f"FROM {PREDICTIONS_TABLE} WHERE {_month_filter(partitions)} GROUP BY 1"
    ).fetchall():
        stats.months[month] = MonthStats(rows=rows, mean_probability=mean, high_risk_share=high)
        for band, count in zip(RISK_BANDS, per_band, strict=True):
            stats.band_counts[band] += count
    stats.rows = sum(figures.rows for figures in stats.months.values())
    stats.seconds = time.perf_counter() - started
    return stats
