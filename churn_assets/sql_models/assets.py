"""SQL models as Dagster assets: one asset per model, materialized in DuckDB.

- view / table models: ``CREATE OR REPLACE VIEW|TABLE`` in one transaction.
- incremental models: monthly partitions; the window is bound to ``$partition_start`` /
  ``$partition_end`` and written as delete + insert in one transaction. A multi-month
  backfill runs once over the whole range (single-run backfill policy).
A failing statement rolls the transaction back, so the previous table, view or partition
stays as it was, and the error names the SQL file.
"""

from __future__ import annotations

import warnings
from datetime import date
from typing import Any

import dagster as dg

from churn_assets.core.metadata import markdown_table, partition_row_counts, table_metadata
from churn_assets.core.partitions import month_window, monthly_partitions
from churn_assets.core.warehouse import WAREHOUSE_POOL, table_exists
from churn_assets.sql_models.checks import quote_identifier, quote_relation
from churn_assets.sql_models.loader import SqlModel, SqlProjectError

class SqlModelError(dg.Failure):
    """A model failed to materialize; the message names its SQL file."""


def _describe_config(model: SqlModel) -> str:
    config = model.config
    text = config.materialized
    if config.is_incremental:
        text += f", partitioned monthly by {config.partition_by}"
    return text


def definition_metadata(model: SqlModel, sql_root=None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "sql": dg.MetadataValue.md(f"```sql\n{model.sql}\n```"),
        "path": dg.MetadataValue.path(str(model.path)),
        "materialized": _describe_config(model),
        **table_metadata(table_name=model.relation),
    }
    if model.yaml_path:
        metadata["yaml_path"] = dg.MetadataValue.path(str(model.yaml_path))
    if model.config.time_column:
        metadata["time_column"] = model.config.time_column
    if model.columns:
        metadata.update(
            table_metadata(
                column_schema=dg.TableSchema(
                    columns=[
                        dg.TableColumn(name=c.name, type="unknown", description=c.description)
                        for c in model.columns
                    ]
                )
            )
        )
    return metadata


def _window(context: dg.AssetExecutionContext) -> tuple[date, date]:
    return month_window(context.partition_keys)


def _columns(con, relation: str) -> list[tuple[str, str, bool]]:
    return [(row[0], row[1], row[2] == "YES") for row in con.execute(f"DESCRIBE {relation}").fetchall()]


# Marks the error the window guard raises inside DuckDB, so that it can be told from any
# other failure and reported in the model's terms.
WINDOW_GUARD_MARK = "churn-window-guard:"


def _write_incremental(con, model: SqlModel, start: date, end: date) -> dict[str, Any]:
    """Replace the window [start, end) of an incremental model with the model's rows, in the
    caller's transaction (so an error anywhere rolls the whole write back).

    The rows go straight into the target: no staged copy. The output columns come from
    DESCRIBE (DuckDB binds the query, it does not run it), and the window is guarded
    inside the INSERT itself: a row outside it raises an error from the projection,
    which aborts the statement and, with it, the transaction.
    """
    import duckdb

    relation = quote_relation(model.key)
    partition_column = quote_identifier(model.config.partition_by or "")
    window = {"partition_start": start, "partition_end": end}
    model_params = {name: window[name] for name in model.parameters}

    output = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM (\n{model.sql}\n)", model_params).fetchall()]
    if model.config.partition_by.lower() not in {c.lower() for c in output}:
        raise SqlModelError(
            f"{model.path}: partition_by column {model.config.partition_by!r} is not among "
            f"the model's output columns {output}"
        )
    # Rows outside the window would survive the next delete of this window and be inserted
    # again: the model must filter on $partition_start / $partition_end. The guard is in
    # the projection above the model, not in a WHERE, so DuckDB cannot evaluate it on a
    # row before the model's own filters have dropped it (a projection is never pushed
    # below them); CASE returns the partition value itself for every row in the window.
    guarded = (
        f"SELECT * REPLACE (CASE WHEN {partition_column} IS NULL "
        f"OR {partition_column} < $partition_start OR {partition_column} >= $partition_end "
        f"THEN error('{WINDOW_GUARD_MARK}' || coalesce(CAST({partition_column} AS VARCHAR), 'NULL')) "
        f"ELSE {partition_column} END AS {partition_column})\n"
        f"FROM (\n{model.sql}\n)"
    )

    exists = table_exists(con, f"{model.schema}.{model.name}")
    if exists:
        existing = [c[0] for c in _columns(con, relation)]
        if {c.lower() for c in existing} != {c.lower() for c in output}:
            added = sorted(set(output) - set(existing))
            removed = sorted(set(existing) - set(output))
            raise SqlModelError(
                f"{model.path}: the model's columns no longer match {model.relation} "
                f"(new: {added or '-'}, gone: {removed or '-'}). Rebuild it: "
                f"DROP TABLE {model.relation}, then backfill every partition."
            )
    try:
        if exists:
            deleted = con.execute(
                f"DELETE FROM {relation} WHERE {partition_column} >= $partition_start "
                f"AND {partition_column} < $partition_end",
                window,
            ).fetchone()[0]
            con.execute(f"INSERT INTO {relation} BY NAME {guarded}", window)
        else:
            deleted = 0
            con.execute(f"CREATE TABLE {relation} AS {guarded}", window)
    except duckdb.Error as error:
        text = str(error)
        if WINDOW_GUARD_MARK not in text:
            raise
        example = text.split(WINDOW_GUARD_MARK, 1)[1].strip().splitlines()[0]
        raise SqlModelError(
            f"{model.path}: rows have {model.config.partition_by} outside the window "
            f"[{start}, {end}) (e.g. {example}); filter the SQL with "
            f"$partition_start / $partition_end"
        ) from None
    # The window was emptied before the insert and every inserted row is in it, so the
    # window's rows are exactly the inserted ones: a scan of one column, not of a copy.
    rows_by_month = con.execute(
        f"SELECT strftime(date_trunc('month', {partition_column}), '%Y-%m'), count(*) "
        f"FROM {relation} WHERE {partition_column} >= $partition_start "
        f"AND {partition_column} < $partition_end GROUP BY ALL ORDER BY 1",
        window,
    ).fetchall()
    return {
        "rows_deleted": deleted,
        "rows_by_month": {month: n for month, n in rows_by_month},
        "window": f"[{start}, {end})",
    }


def lineage_markdown(lineage: dg.TableColumnLineage) -> str:
    """``output column | input columns`` for each output column, inputs as ``table.column``."""
    rows = [
        (column, ", ".join(f"{'.'.join(dep.asset_key.path)}.{dep.column_name}" for dep in deps) or "(computed)")
        for column, deps in lineage.deps_by_column.items()
    ]
    return markdown_table(["column", "computed from"], rows)


def _copy_ingested_to_spark(warehouse, spark_warehouse, ingested: tuple[dg.AssetKey, ...]) -> list[str]:
    """The tables `churn ingest` loaded into DuckDB that a model reads, copied whole to the Spark
    warehouse before the model runs there: DuckDB holds them (reference tables, small by
    nature), so every build sees the latest ingest. Returns the relations copied."""
    from churn_assets.core.warehouse import table_exists

    tables = {}
    with warehouse.read() as con:  # read first, then write Spark: the connection stays short
        for key in ingested:
            relation = ".".join(key.path)
            if table_exists(con, relation):  # else Spark's analysis names the missing table
                tables[relation] = con.sql(f"SELECT * FROM {quote_relation(key)}").to_arrow_table()
    for relation, table in tables.items():
        spark_warehouse.write_table(relation, table)
    return list(tables)


def _build_on_spark(engine, warehouse, model: SqlModel, start: date | None, end: date | None,
                    ingested: tuple[dg.AssetKey, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """Build ``model`` on the Spark warehouse; the warehouse and what was written."""
    from churn_assets.core.spark_warehouse import first_line
    from churn_assets.sql_models.spark_models import run_model

    spark_warehouse = engine.spark_warehouse()
    try:
        copied = _copy_ingested_to_spark(warehouse, spark_warehouse, ingested)
        return spark_warehouse, {**run_model(spark_warehouse, model, start, end), "copied_to_spark": copied}
    except Exception as error:  # a refused translation, Spark's analysis, a failed job or write
        raise SqlModelError(
            description=f"{model.path}: Spark failed to build {model.relation}: {first_line(error)}",
            metadata={"path": dg.MetadataValue.path(str(model.path)), "error": first_line(error), "engine": "spark"},
            allow_retries=False,
        ) from error


def materialize_model(context: dg.AssetExecutionContext, warehouse, model: SqlModel,
                      engine=None, ingested: tuple[dg.AssetKey, ...] = ()) -> dg.MaterializeResult:
    """Build ``model`` in DuckDB, or on Spark when ``engine`` (the EnginePolicy) says so; on
    Spark the DuckDB warehouse gets a view over the new table's Parquet files, so the lineage,
    the metadata and every DuckDB reader see it, and the ``ingested`` tables it reads (DuckDB's)
    are copied to Spark first."""
    import duckdb

    from churn_assets.core.engine import mirror_spark_tables
    from churn_assets.sql_models.lineage import column_lineage, upstream_columns

    relation = quote_relation(model.key)
    start = end = None
    if model.config.is_incremental:
        start, end = _window(context)
    on_spark = engine is not None and engine.on_spark
    written: dict[str, Any] = {}
    if on_spark:
        spark_warehouse, written = _build_on_spark(engine, warehouse, model, start, end, ingested)
    try:
        with warehouse.write() as con:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(model.schema)}")
            if model.config.materialized == "view":
                con.execute(f"CREATE OR REPLACE VIEW {relation} AS\n{model.sql}")
            elif on_spark:
                mirror_spark_tables(con, spark_warehouse, [model.relation], {model.relation: written["columns"]})
            elif model.config.materialized == "table":
                con.execute(f"CREATE OR REPLACE TABLE {relation} AS\n{model.sql}")
            else:
                written = _write_incremental(con, model, start, end)
            row_count = con.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]
            columns = _columns(con, relation)
            upstream = upstream_columns(con, model.deps)
    except duckdb.Error as error:
        raise SqlModelError(
            description=f"{model.path}: DuckDB failed to build {model.relation}: {error}",
            metadata={"path": dg.MetadataValue.path(str(model.path)), "error": str(error)},
            allow_retries=False,
        ) from error

    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=dtype,
                description=model.column_description(name),
                constraints=dg.TableColumnConstraints(nullable=nullable),
            )
            for name, dtype, nullable in columns
        ]
    )
    lineage = column_lineage(model, upstream)
    metadata: dict[str, Any] = {
        **table_metadata(
            column_schema=schema,
            column_lineage=lineage,
            row_count=int(row_count),
            table_name=model.relation,
        ),
        "materialized": _describe_config(model),
    }
    if lineage is not None and lineage.deps_by_column:
        # Open-source Dagster does not draw dagster/column_lineage (a Dagster+ view): the same
        # lineage as a table anyone can read.
        metadata["column_lineage_table"] = dg.MetadataValue.md(lineage_markdown(lineage))
    if on_spark:
        metadata["engine"] = "spark"
        if written["copied_to_spark"]:
            metadata["copied_to_spark"] = ", ".join(written["copied_to_spark"])
    if "window" in written:
        if "rows_deleted" in written:
            metadata["rows_deleted"] = dg.MetadataValue.int(int(written["rows_deleted"]))
        else:
            metadata["months_emptied"] = ", ".join(written["months_emptied"]) or "-"
        metadata["window"] = written["window"]
        partition_row_counts(context, written["rows_by_month"])
    return dg.MaterializeResult(metadata=metadata)


def build_model_asset(model: SqlModel, engine: str = "duckdb",
                      ingested: tuple[dg.AssetKey, ...] = ()) -> dg.AssetsDefinition:
    """The model's asset; ``ingested``: the `churn ingest` tables among its inputs (copied to
    Spark before it builds there)."""
    incremental = model.config.is_incremental
    with warnings.catch_warnings():
        # The single-run backfill policy is what the design asks for; its "beta" notice
        # would otherwise print once per model every time the code location loads.
        warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
        return _model_asset(model, incremental, engine, tuple(k for k in model.deps if k in ingested))


def _model_asset(model: SqlModel, incremental: bool, engine: str,
                 ingested: tuple[dg.AssetKey, ...]) -> dg.AssetsDefinition:
    @dg.asset(
        key=model.key,
        deps=list(model.deps),
        description=model.description or f"SQL model {model.relation} ({model.path.name}).",
        group_name=model.schema,
        kinds={engine, "sql"},
        pool=WAREHOUSE_POOL,
        code_version=model.code_version,
        metadata=definition_metadata(model),
        partitions_def=monthly_partitions if incremental else None,
        backfill_policy=dg.BackfillPolicy.single_run() if incremental else None,
        required_resource_keys={"warehouse", "engine_policy"},
    )
    def _sql_model(context):
        return materialize_model(context, context.resources.warehouse, model, context.resources.engine_policy,
                                 ingested)

    return _sql_model


def build_external_asset(key: dg.AssetKey) -> dg.AssetSpec:
    if len(key.path) != 2:
        raise SqlProjectError(f"external table key {key.to_user_string()} must be [schema, table]")
    return dg.AssetSpec(
        key=key,
        description=(
            f"{key.path[0]}.{key.path[1]}: a table loaded into the warehouse outside Dagster "
            f"(`churn ingest --table {key.path[0]}.{key.path[1]}`), read by SQL models."
        ),
        group_name=key.path[0],
        kinds={"duckdb"},
        metadata=table_metadata(table_name=f"{key.path[0]}.{key.path[1]}"),
    )
