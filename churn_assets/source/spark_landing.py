"""Monthly deliveries landed in the Spark warehouse's raw tables, checked against the raw contract.

The Spark counterpart of ``raw_assets.load_months_into_warehouse``: the same delivery folders
(``source/YYYY-MM/<table>.parquet``), the same contract, the same ``raw.<table>`` columns with
``delivery_month``. Spark reads the files (every month of a table in one job), casts each column
to its contract type, and checks the contract with one aggregation per table: no row is
collected to the driver, whatever the base's size. Every table of every month is checked before
any is written; then each table's months are replaced by dynamic partition overwrite
(``SparkWarehouse.write_months``), so a month of a table is replaced whole or not at all. Spark
has no transaction across tables: a failure while writing the third table (a lost executor, a
full disk) leaves the first two with the new months; rerunning the same months repairs it, as
every write is idempotent per month.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn_assets.source.contract import DELIVERY_MONTH, RAW_SCHEMA, RAW_TABLES, Table
from churn_assets.source.deliveries import ContractError, delivery_dir

if TYPE_CHECKING:
    from churn_assets.core.spark_warehouse import SparkWarehouse

SPARK_TYPES = {"VARCHAR": "string", "DATE": "date", "TIMESTAMP": "timestamp_ntz", "DOUBLE": "double",
               "BOOLEAN": "boolean"}


def _month_after(month: date, months: int = 1) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _read_table(warehouse: SparkWarehouse, source: Path | str, table: Table, months: list[str]):
    """Every month's file of ``table`` as one DataFrame, each typed by the contract on its own
    (so one month's file with a missing column or another type is named, not silently read
    as NULLs or failed half-way), with the month's delivery_month and the untyped columns
    beside the typed ones for the checks."""
    from functools import reduce

    from pyspark.sql import functions as F

    from churn_assets.core.spark_warehouse import first_line

    spark = warehouse.session()
    # A URL stays text: Path would fold its "//".
    remote = "://" in str(source)
    parts = []
    for month in months:
        path = f"{str(source).rstrip('/')}/{month[:7]}/{table.name}.parquet" if remote else \
            delivery_dir(Path(source), month) / f"{table.name}.parquet"
        origin = f"delivery {month[:7]} table '{table.name}' ({path})"
        if not remote and not path.exists():
            raise ContractError(f"{origin}: missing file")
        try:
            known = None if remote else _footer_schema(path)
            raw = (spark.read.schema(known) if known is not None else spark.read).parquet(str(path))
        except Exception as error:
            raise ContractError(f"{origin}: not a readable Parquet file ({first_line(error)})") from error
        absent = [name for name in table.column_names if name not in raw.columns]
        if absent:
            unexpected = sorted(set(raw.columns) - set(table.column_names))
            hint = f"; unexpected columns: {', '.join(unexpected)}" if unexpected else ""
            raise ContractError(f"{origin}: table '{table.name}' is missing column(s) {', '.join(absent)}{hint}")
        parts.append(raw.select(
            *(F.col(c.name).cast("string").alias(f"_raw_{c.name}") for c in table.columns),
            *(_typed(raw.schema[c.name].dataType, c.name, SPARK_TYPES[c.dtype]) for c in table.columns),
            F.lit(date.fromisoformat(month)).alias(DELIVERY_MONTH.name),
        ))
    return reduce(lambda left, right: left.unionByName(right), parts)


def _footer_schema(path: Path):
    """The file's Spark schema from its Parquet footer, read on the driver, so Spark need not
    run a job per file to infer it (24 months x 4 tables of jobs is most of a small landing);
    None where Spark should infer it (a column with no values, which Arrow types as null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churn_assets.core.spark_warehouse import spark_schema_of_arrow

    schema = pq.read_schema(path)
    if any(pa.types.is_null(field.type) for field in schema):
        return None
    return spark_schema_of_arrow(schema)


def _typed(source_type, name: str, target: str):
    """``name`` cast to ``target``, NULL where a value does not convert. Spark refuses some
    casts outright when it analyses the query (a number to a date; a column pandas wrote with
    no values at all reads as INT): those go through the value's text, which converts nothing
    a direct cast would, so the checks name the column instead of Spark failing the job."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    temporal = (T.DateType, T.TimestampType, T.TimestampNTZType)
    scalar = (T.NumericType, T.BooleanType)
    direct = (
        isinstance(source_type, T.StringType)
        or target == "string"
        or (target in ("date", "timestamp_ntz") and isinstance(source_type, temporal))
        or (target in ("double", "boolean") and isinstance(source_type, scalar))
    )
    column = F.col(name) if direct else F.col(name).cast("string")
    return column.try_cast(target).alias(name)


def _violations(table: Table) -> list[tuple[str, Any]]:
    """(what is wrong, a Column true on each row that breaks it): the rules of
    ``deliveries.coerce_to_contract`` and ``check_dates_in_month``, as Spark expressions."""
    from pyspark.sql import functions as F

    month = F.col(DELIVERY_MONTH.name)
    rules: list[tuple[str, Any]] = []
    for column in table.columns:
        typed, raw = F.col(column.name), F.col(f"_raw_{column.name}")
        if not column.nullable:
            # pandas reads a NaN as missing, so the DuckDB path refuses it too.
            empty = raw.isNull() | F.isnan(typed) if column.dtype == "DOUBLE" else raw.isNull()
            rules.append((f"column '{column.name}' is empty", empty))
        rules.append((f"column '{column.name}' is not {column.dtype}", raw.isNotNull() & typed.isNull()))
        if column.categories is not None:
            rules.append((f"column '{column.name}' has a value outside {list(column.categories)}",
                          typed.isNotNull() & ~typed.isin(*column.categories)))
        if column.minimum is not None:
            rules.append((f"column '{column.name}' is below {column.minimum}", typed < F.lit(column.minimum)))
        if column.maximum is not None:
            rules.append((f"column '{column.name}' is above {column.maximum}", typed > F.lit(column.maximum)))
    next_month = F.add_months(month, 1)
    dated = {
        "subscriptions": [("snapshot_month", "is not the delivery month",
                           lambda v: (F.trunc(v, "month") != month))],
        "events": [("event_time", "is dated after the delivery month ends", lambda v: v >= next_month)],
        "customers": [("signup_date", "is dated after the delivery month ends", lambda v: v >= next_month)],
        "cancellations": [("cancel_date", "is dated after the month following the delivery month",
                           lambda v: v >= F.add_months(month, 2))],
    }
    for name, what, wrong in dated.get(table.name, []):
        rules.append((f"{table.name}.{name} {what}", wrong(F.col(name))))
    return rules


def _check(frame, table: Table) -> None:
    """One aggregation over the table's rows: how many break each rule, and the first month
    where one does; plus the keys that repeat within a month. Raises ContractError naming the
    table, the month, the rule and the count."""
    from pyspark.sql import functions as F

    rules = _violations(table)
    month = F.date_format(F.col(DELIVERY_MONTH.name), "yyyy-MM")
    aggregates = []
    for index, (_, broken) in enumerate(rules):
        hit = F.coalesce(broken, F.lit(False))
        aggregates += [F.sum(F.when(hit, 1).otherwise(0)).alias(f"n{index}"),
                       F.min(F.when(hit, month)).alias(f"m{index}")]
    counts = frame.agg(*aggregates).first()
    problems = [f"delivery {counts[f'm{i}']} table '{table.name}': {what} in {counts[f'n{i}']:,} row(s)"
                for i, (what, _) in enumerate(rules) if counts[f"n{i}"]]
    if problems:
        raise ContractError("; ".join(problems))
    key = [*table.key, DELIVERY_MONTH.name]
    repeated = frame.groupBy(*key).count().where(F.col("count") > 1).orderBy(DELIVERY_MONTH.name, *table.key).first()
    if repeated is not None:
        example = {name: repeated[name] for name in table.key}
        raise ContractError(
            f"delivery {repeated[DELIVERY_MONTH.name]:%Y-%m} table '{table.name}': duplicate key "
            f"({', '.join(table.key)}) in {repeated['count']} rows (e.g. {example})"
        )


def land_deliveries_on_spark(
    warehouse: SparkWarehouse, source: Path | str, months: list[str], *, schema: str = RAW_SCHEMA
) -> dict[str, dict[str, int]]:
    """Replace the given months (partition keys ``YYYY-MM-01``) of every raw table
    (``<schema>.<table>``) on the Spark warehouse from their deliveries; returns rows per
    table per month (``YYYY-MM``). ``source`` is a local folder or, on a cluster, a URL every
    executor reaches (``s3a://bucket/source``). Every table is checked against the contract
    before any is written; a month with no subscription row is refused, as DuckDB's loader
    refuses an empty month."""
    if not months:
        return {name: {} for name in RAW_TABLES}
    ordered = sorted(set(months))
    first = date.fromisoformat(ordered[0])
    if [date.fromisoformat(m) for m in ordered] != [_month_after(first, i) for i in range(len(ordered))]:
        raise ContractError(f"months {', '.join(m[:7] for m in ordered)} leave a gap: land consecutive months "
                            "(one window is replaced whole)")
    start, end = first, _month_after(first, len(ordered))
    frames = {}
    for name, table in RAW_TABLES.items():
        frame = _read_table(warehouse, source, table, ordered)
        _check(frame, table)
        frames[name] = frame.select(*table.column_names, DELIVERY_MONTH.name)
    snapshot_months = {row[0] for row in frames["subscriptions"].select(
        DELIVERY_MONTH.name).distinct().collect()}
    empty = [m[:7] for m in ordered if date.fromisoformat(m) not in snapshot_months]
    if empty:
        raise ContractError(f"delivery {empty[0]} is empty: no subscription snapshots")
    return {
        name: warehouse.write_months(f"{schema}.{name}", frame, DELIVERY_MONTH.name, start, end)["rows_by_month"]
        for name, frame in frames.items()
    }
