"""The raw layer: each monthly delivery loaded into ``raw.<table>`` exactly as delivered.

One multi-asset writes all four raw tables of a month in a single transaction, so a month
is either fully present or not at all. A backfill over many months runs as one step
(single-run backfill policy) that loads month by month inside that one transaction.
"""


from pathlib import Path

import dagster as dg

from churn_assets.core.engine import EnginePolicy
from churn_assets.core.metadata import partition_row_counts, table_metadata
from churn_assets.core.partitions import monthly_partitions
from churn_assets.core.warehouse import WAREHOUSE_POOL, Warehouse
from churn_assets.core.paths import source_dir
from churn_assets.source.contract import DELIVERY_MONTH, RAW_SCHEMA, RAW_TABLES, Table

RAW_ASSET_KEYS = [dg.AssetKey([RAW_SCHEMA, name]) for name in RAW_TABLES]


def table_schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=c.dtype,
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in (*table.columns, DELIVERY_MONTH)
        ]
    )


def _create_table_sql(table: Table) -> str:
    columns = ", ".join(
        f"{c.name} {c.dtype}{'' if c.nullable else ' NOT NULL'}"
        for c in (*table.columns, DELIVERY_MONTH)
    )
    return f"CREATE TABLE IF NOT EXISTS {RAW_SCHEMA}.{table.name} ({columns})"


def load_months_into_warehouse(con, source: Path, months: list[str]) -> dict[str, dict[str, int]]:
    """Replace the given months of every raw table from their deliveries.

    Runs on the caller's connection (the caller owns the transaction). Returns rows loaded
    per table per month. Every delivery is read and validated before anything is deleted.
    """
    from churn_assets.source.deliveries import read_delivery

    con.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA}")
    for table in RAW_TABLES.values():
        con.execute(_create_table_sql(table))
    loaded: dict[str, dict[str, int]] = {name: {} for name in RAW_TABLES}
    for month in months:
        frames = read_delivery(source, month)
        for name, table in RAW_TABLES.items():
            frame = frames[name].assign(delivery_month=month)
            con.register("delivery_frame", frame)
            try:
                con.execute(
                    f"DELETE FROM {RAW_SCHEMA}.{name} WHERE delivery_month = ?::DATE", [month]
                )
                columns = ", ".join(table.column_names)
                casts = ", ".join(
                    f"CAST({c.name} AS {c.dtype})" for c in table.columns
                )
                con.execute(
                    f"INSERT INTO {RAW_SCHEMA}.{name} ({columns}, delivery_month) "
                    f"SELECT {casts}, CAST(delivery_month AS DATE) FROM delivery_frame"
                )
            finally:
                con.unregister("delivery_frame")
            loaded[name][month] = len(frame)
    return loaded


def _row_counts(con) -> dict[str, int]:
    return {name: con.execute(f"SELECT count(*) FROM {RAW_SCHEMA}.{name}").fetchone()[0] for name in RAW_TABLES}


def land_on_spark(warehouse: Warehouse, engine: EnginePolicy, source: Path, months: list[str]):
    """The months landed on the Spark warehouse, then the raw tables as DuckDB views over them;
    rows loaded per table per month, and each table's rows."""
    from churn_assets.core.engine import mirror_spark_tables
    from churn_assets.source.spark_landing import land_deliveries_on_spark

    spark_warehouse = engine.spark_warehouse()
    loaded = land_deliveries_on_spark(spark_warehouse, source, months, schema=RAW_SCHEMA)
    relations = [f"{RAW_SCHEMA}.{name}" for name in RAW_TABLES]
    order = {f"{RAW_SCHEMA}.{name}": [*table.column_names, DELIVERY_MONTH.name] for name, table in RAW_TABLES.items()}
    with warehouse.write() as con:
        mirror_spark_tables(con, spark_warehouse, relations, order)
        return loaded, _row_counts(con)


def raw_deliveries_asset(engine: str = "duckdb") -> dg.AssetsDefinition:
    """The raw layer's multi-asset; ``engine`` (duckdb or spark) is the kind it shows, the
    engine_policy resource decides where it lands when it runs."""

    @dg.multi_asset(
        name="raw_deliveries",
        specs=[
            dg.AssetSpec(
                key=dg.AssetKey([RAW_SCHEMA, name]),
                description=table.description,
                group_name=RAW_SCHEMA,
                kinds={engine, "parquet"},
                metadata={
                    **table_metadata(column_schema=table_schema(table), table_name=f"{RAW_SCHEMA}.{name}"),
                    "partition_column": "delivery_month",
                    "key_columns": ", ".join(table.key),
                },
                skippable=False,
            )
            for name, table in RAW_TABLES.items()
        ],
        partitions_def=monthly_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        code_version="raw-v1",
        description=(
            "Loads each month's delivery from $CHURN_HOME/source/YYYY-MM/ into the raw tables, "
            "validated against the raw contract, all four tables in one transaction "
                "(on Spark: all four checked before any is written, each month replaced whole)."
        ),
    )
    def raw_deliveries(context: dg.AssetExecutionContext, warehouse: Warehouse, engine_policy: EnginePolicy):
        months = list(context.partition_keys)
        source = source_dir()
        if engine_policy.on_spark:
            loaded, totals = land_on_spark(warehouse, engine_policy, source, months)
        else:
            with warehouse.write() as con:
                loaded = load_months_into_warehouse(con, source, months)
                totals = _row_counts(con)
        for name, table in RAW_TABLES.items():
            rows_by_month = loaded[name]
            partition_row_counts(context, rows_by_month, dg.AssetKey([RAW_SCHEMA, name]))
            yield dg.MaterializeResult(
                asset_key=dg.AssetKey([RAW_SCHEMA, name]),
                metadata={
                    **table_metadata(
                        row_count=totals[name], column_schema=table_schema(table)
                    ),
                    "rows_loaded": dg.MetadataValue.int(sum(rows_by_month.values())),
                    "months_loaded": dg.MetadataValue.text(
                        ", ".join(m[:7] for m in rows_by_month) or "-"
                    ),
                    "source": dg.MetadataValue.path(str(source)),
                },
            )

    return raw_deliveries


raw_deliveries = raw_deliveries_asset()
