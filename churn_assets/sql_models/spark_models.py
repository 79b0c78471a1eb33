"""The SQL models and their checks on the Spark warehouse (docs/scale-out.md).

The same ``sql/`` files the DuckDB assets run, translated by sqlglot (``transpile.py``, strict:
a construct Spark cannot reproduce is refused with the model and the construct named, before
anything runs) and executed through ``SparkWarehouse``:

- view models become Spark views, their SQL kept beside the tables so every session has them;
- table models replace the table whole (``write_table``);
- incremental models replace the months of their window (``write_months``: dynamic partition
  overwrite, every row checked to lie in the window as part of the write);
- ``$partition_start`` / ``$partition_end`` become Spark's named parameters (``:partition_start``)
  and are bound by ``spark.sql(query, args=...)``, never pasted into the text.

YAML tests and singular tests run as the same failing-rows queries the DuckDB checks run
(``checks.failing_rows_sql``), translated the same way, and give the same verdict, failing-row
count and sample.

The SQL assets call these when ``engine: spark`` (``core/engine.py``); with the default
``engine: duckdb`` nothing here is imported.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import dagster as dg

from churn_assets.core.spark_warehouse import SparkWarehouse, first_line  # no pyspark at import
from churn_assets.sql_models.checks import SAMPLE_ROWS, CheckPlan, check_result, query_failed_result
from churn_assets.sql_models.loader import WINDOW_PARAMETERS, SqlModel
from churn_assets.sql_models.transpile import transpile_sql


class SparkModelError(RuntimeError):
    """A model could not be built on Spark; the message names the model and its file."""


def spark_sql(warehouse: SparkWarehouse, sql: str, source: str) -> str:
    """DuckDB SQL as Spark SQL, refusing what Spark cannot reproduce (functions checked
    against the running session's registry)."""
    spark = warehouse.session()
    return transpile_sql(sql, "spark", strict=True, source=source, function_exists=spark.catalog.functionExists)


def model_spark_sql(warehouse: SparkWarehouse, model: SqlModel) -> str:
    return spark_sql(warehouse, model.sql, f"model {model.relation} ({model.path})")


def _query(warehouse: SparkWarehouse, sql: str, params: dict[str, Any], what: str):
    """The query's DataFrame. Spark analyses it here (names, types, functions), so a query
    Spark does not accept fails before any job runs, with Spark's reason in one line."""
    from pyspark.errors import AnalysisException, ParseException

    try:
        return warehouse.sql(sql, params)
    except (AnalysisException, ParseException) as error:
        raise SparkModelError(f"{what}: Spark refused the translated SQL: {first_line(error)}") from error


def run_model(
    warehouse: SparkWarehouse, model: SqlModel, start: date | None = None, end: date | None = None
) -> dict[str, Any]:
    """Build ``model`` on Spark: a view (kept for every later session), the whole table, or for
    an incremental model the months [start, end). Returns the model's columns in its own order
    and what was written (row count, or rows per month of the window)."""
    what = f"model {model.relation} ({model.path})"
    kind = model.config.materialized
    if model.config.is_incremental and (start is None or end is None):
        raise SparkModelError(f"{what}: an incremental model needs its window (start, end)")
    sql = model_spark_sql(warehouse, model)
    window = {WINDOW_PARAMETERS[0]: start, WINDOW_PARAMETERS[1]: end}
    # Only the parameters the model uses: the others are not in its text.
    frame = _query(warehouse, sql, {name: window[name] for name in model.parameters}, what)
    built: dict[str, Any] = {"columns": list(frame.columns)}
    if kind == "view":
        warehouse.write_view(model.relation, sql)
    elif kind == "table":
        built["row_count"] = warehouse.write_table(model.relation, frame)
    else:
        built.update(warehouse.write_months(model.relation, frame, model.config.partition_by, start, end))
    return built


def evaluate_check(warehouse: SparkWarehouse, plan: CheckPlan) -> dg.AssetCheckResult:
    """One check's failing-rows query on Spark: the verdict, count and sample that
    ``checks.evaluate_check`` gives on DuckDB. A query Spark cannot run fails the check
    with the reason, as a DuckDB error does."""
    try:
        failing_sql = spark_sql(warehouse, plan.failing_sql, f"check {plan.name} ({plan.source})")
        failing_rows = _query(warehouse, failing_sql, {}, f"check {plan.name} ({plan.source})")
        failing = failing_rows.count()
        sample = failing_rows.limit(SAMPLE_ROWS).collect() if failing else []
        columns = failing_rows.columns
    except Exception as error:  # refused translation, Spark analysis or a failed job
        reason = first_line(error)
        return query_failed_result(plan, f"The check query failed on Spark ({plan.source}): {reason}", reason,
                                   {"engine": "spark"})
    return check_result(plan, failing, columns, [tuple(row) for row in sample], {"engine": "spark"})
