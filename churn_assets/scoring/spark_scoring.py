"""Batch scoring on the Spark warehouse (docs/scale-out.md): the champion broadcast to the
executors, each Arrow batch of ``features.customer_features`` scored where it lies
(``mapInArrow``), the predictions written per month by dynamic partition overwrite.

What travels is the model folder's bytes, not a pickled Python object: an executor writes them
to a private temporary folder and loads them with the registry's own ``load_model_folder``,
which checks every file against the manifest (and the manifest against the SHA-256 the
registry recorded) before reading it. So loading a model on an executor never executes code,
as on the driver. Each Python worker loads a version once and keeps it.

The rows get the same columns, probabilities (the model's ``predict_proba`` on the batch, the
frame path of ``batch.py``), risk bands and checks as DuckDB's ``write_predictions``; Spark does
the distributing. The predictions asset calls ``predictions_on_spark`` when ``engine: spark``;
nothing here is imported by a laptop run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn_assets.core.partitions import month_window
from churn_assets.core.spark_warehouse import SparkWarehouse, first_line  # no pyspark at import
from churn_assets.scoring.batch import (
    DEFAULT_BATCH_ROWS,
    FEATURES_TABLE,
    ID_COLUMN,
    MONTH_COLUMN,
    PREDICTION_COLUMNS,
    PREDICTIONS_TABLE,
    MonthStats,
    RiskBands,
    ScoringStats,
    ScoringError,
    validated_probabilities,
    model_input_columns,
)

if TYPE_CHECKING:
    import pyarrow as pa

# version -> loaded model, per Python worker process (Spark reuses its workers between tasks).
_LOADED: dict[str, Any] = {}


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _versions_read_by(model: Any) -> list[str]:
    """The model's version and, for an ensemble, its members' (sibling folders it loads)."""
    members = getattr(getattr(model, "estimator", None), "members", None) or []
    return [str(model.version), *(v for member in members for v in _versions_read_by(member))]


def model_payload(folder: Path, version: str, manifest_sha256: str | None) -> tuple[Any, dict[str, Any]]:
    """The model, loaded on the driver (a tampered or unreadable one fails here, once, before
    any task), and what is broadcast: the version, the registry's manifest hash, and the bytes
    of every file of the model folder and of the sibling folders it loads (an ensemble's members)."""
    from churn_assets.training.registry import load_model_folder

    model = load_model_folder(folder, version, manifest_sha256)
    folders = {name: _folder_files(folder.parent / name) for name in dict.fromkeys(_versions_read_by(model))}
    return model, {"version": version, "manifest_sha256": manifest_sha256, "folders": folders}


def model_from_payload(payload: dict[str, Any]) -> Any:
    """The model of a broadcast payload, verified and loaded once per process."""
    from churn_assets.training.registry import load_model_folder

    version = payload["version"]
    if version not in _LOADED:
        # The load reads the files into memory; the private folder goes with the context.
        with tempfile.TemporaryDirectory(prefix="churn-model-") as private:
            for name, files in payload["folders"].items():
                for relative, content in files.items():
                    target = Path(private) / name / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
            _LOADED[version] = load_model_folder(Path(private) / version, version, payload["manifest_sha256"])
    return _LOADED[version]


def _score_batches(payload_broadcast, where: str):
    """The function ``mapInArrow`` runs on each executor: Arrow batches of features in,
    (customer_id, snapshot_month, churn_probability) batches out."""

    def score(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        model = model_from_payload(payload_broadcast.value)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            raw = model.predict_proba(batch.to_pandas())
            probabilities = validated_probabilities(raw, batch.num_rows, where)
            yield pa.RecordBatch.from_arrays(
                [batch.column(ID_COLUMN).cast(pa.string()), batch.column(MONTH_COLUMN).cast(pa.date32()),
                 pa.array(probabilities, type=pa.float64())],
                names=[ID_COLUMN, MONTH_COLUMN, "churn_probability"],
            )

    return score


def write_predictions_on_spark(
    warehouse: SparkWarehouse,
    folder: Path,
    version: str,
    months: Iterable[str],
    *,
    manifest_sha256: str | None = None,
    bands: RiskBands | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    source: str = FEATURES_TABLE,
) -> dict[str, Any]:
    """Replace the predictions of the window spanning ``months`` with the scores of the model
    in ``folder``. Returns the rows written per month; a failed job leaves every month as it was."""
    from pyspark.sql import functions as F

    start, end = month_window(list(months))
    bands = bands or RiskBands()
    if batch_rows < 1:
        raise ScoringError(f"batch_rows must be a positive number of rows, got {batch_rows}")
    model, payload = model_payload(folder, version, manifest_sha256)
    columns = model_input_columns(model)
    spark = warehouse.session()
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
    if not warehouse.table_exists(source):
        raise ScoringError(f"{source} does not exist on the Spark warehouse: build the features first")
    features = warehouse.sql(
        f"SELECT * FROM {source} WHERE {MONTH_COLUMN} >= :start AND {MONTH_COLUMN} < :end",
        {"start": start, "end": end},
    )
    if columns is not None:
        missing = [c for c in columns if c not in features.columns]
        if missing:
            raise ScoringError(f"{source} lacks the model's input column(s): {', '.join(missing)}")
        features = features.select(ID_COLUMN, MONTH_COLUMN, *columns)
    shared = spark.sparkContext.broadcast(payload)
    scored = features.mapInArrow(
        _score_batches(shared, f"{source} [{start}, {end})"),
        f"{ID_COLUMN} string, {MONTH_COLUMN} date, churn_probability double",
    )
    scored_at = datetime.now(timezone.utc).replace(tzinfo=None)
    predictions = scored.select(
        ID_COLUMN, MONTH_COLUMN, "churn_probability",
        F.expr(bands.sql("churn_probability")).alias("risk_band"),
        F.lit(str(version)).alias("model_version"),
        F.lit(scored_at).cast("timestamp_ntz").alias("scored_at"),
    )
    try:
        written = warehouse.write_months(PREDICTIONS_TABLE, predictions, MONTH_COLUMN, start, end)
    except Exception as error:
        # A ScoringError raised in a task reaches the driver inside Spark's error text.
        reason = first_line(error.__cause__ or error)
        if reason.startswith("ModuleNotFoundError"):
            reason += " (the executors' Python must have the project and its dependencies: PYSPARK_PYTHON, docs/scale-out.md)"
        raise ScoringError(f"scoring [{start}, {end}) on Spark failed, no month changed: {reason}") from error
    finally:
        shared.unpersist()
    return {**written, "model_version": str(version)}


def predictions_on_spark(warehouse, engine, artifacts_root: Path, version: str, months: list[str], *,
                         bands: RiskBands, batch_rows: int) -> ScoringStats:
    """The predictions asset on ``engine: spark``: the champion ``version`` scores ``months`` on
    the Spark warehouse, then ``ml.predictions`` becomes (stays) a DuckDB view over its Parquet
    files in ``warehouse``, from which the month figures of the metadata are read."""
    import time

    from churn_assets.core.engine import mirror_spark_tables
    from churn_assets.training.registry import models_root, registered_manifest_sha

    with warehouse.read() as con:
        expected = registered_manifest_sha(con, version)
    spark_warehouse = engine.spark_warehouse()
    started = time.perf_counter()
    write_predictions_on_spark(spark_warehouse, models_root(artifacts_root) / version, version, months,
                               manifest_sha256=expected, bands=bands, batch_rows=batch_rows)
    stats = ScoringStats(seconds=time.perf_counter() - started, path="spark (mapInArrow)")
    start, end = month_window(months)
    with warehouse.write() as con:
        mirror_spark_tables(con, spark_warehouse, [PREDICTIONS_TABLE], {PREDICTIONS_TABLE: list(PREDICTION_COLUMNS)})
        figures = con.execute(
            f"SELECT strftime({MONTH_COLUMN}, '%Y-%m'), risk_band, count(*), sum(churn_probability) "
            f"FROM {PREDICTIONS_TABLE} WHERE {MONTH_COLUMN} >= ? AND {MONTH_COLUMN} < ? GROUP BY ALL",
            [start, end],
        ).fetchall()
    totals: dict[str, list[float]] = {month[:7]: [0, 0.0, 0] for month in months}
    for month, band, rows, probability_sum in figures:
        stats.band_counts[band] = stats.band_counts.get(band, 0) + rows
        month_totals = totals.setdefault(month, [0, 0.0, 0])
        month_totals[0] += rows
        month_totals[1] += probability_sum
        month_totals[2] += rows if band == "high" else 0
    for month, (rows, probability_sum, high) in totals.items():
        stats.months[month] = MonthStats(rows=rows, mean_probability=probability_sum / rows if rows else None,
                                         high_risk_share=high / rows if rows else None)
    stats.rows = sum(month.rows for month in stats.months.values())
    return stats
