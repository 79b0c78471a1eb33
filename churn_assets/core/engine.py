"""Which engine builds the warehouse's large tables: DuckDB on this machine (the default) or
Apache Spark (docs/scale-out.md).

``engine: spark`` in churn.yaml (or ``engine: {name: spark, spark: {master: ..., location: ...}}``)
moves the row-scale work of the same asset graph onto Spark:

- ``raw.*``: the deliveries land as Spark tables (``source/spark_landing.py``);
- every SQL model and its YAML / singular tests run as Spark SQL (``sql_models/spark_models.py``);
- the training set reaches the driver as a seeded, stratified sample (``training/spark_sample.py``);
- ``ml.predictions`` is scored on the executors, the champion broadcast (``scoring/spark_scoring.py``).

What stays on the driver is small by construction: the model registry, evaluation, drift
verdicts, performance and serving tables remain in the DuckDB warehouse. Those steps read the
Spark tables through DuckDB views over the same Parquet files (``mirror_spark_tables``), so one
SQL console, one checks runner and one HTTP service see every table whichever engine wrote it.
pyspark is imported only when the engine is spark: laptop runs never load it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field

from churn_assets.core.spark_warehouse import SparkSettings, SparkWarehouse, split_relation  # no pyspark at import

if TYPE_CHECKING:
    import duckdb

# The training sample's size rule (training/spark_sample.py): a training set up to this many
# rows comes whole, a larger one as a sample of about this size; each class keeps at least
# DEFAULT_MIN_CLASS_ROWS (all of it when it has fewer). 2M rows x ~40 features is a few GB of
# pandas on the driver, where the candidates and tuning run.
DEFAULT_SAMPLE_ROWS = 2_000_000
DEFAULT_MIN_CLASS_ROWS = 50_000


class EnginePolicy(dg.ConfigurableResource):
    """Which engine builds the raw tables, the SQL models, the training sample and the
    predictions: duckdb on this machine, or spark (docs/scale-out.md)."""

    name: Literal["duckdb", "spark"] = Field(
        default="duckdb", description="duckdb (one machine) or spark (the settings under spark:)."
    )
    training_sample_rows: int = Field(
        default=DEFAULT_SAMPLE_ROWS,
        description="spark: a training set of at most this many rows reaches the driver whole; "
        "a larger one as a seeded sample of about this size, stratified by the label.",
    )
    training_sample_min_class_rows: int = Field(
        default=DEFAULT_MIN_CLASS_ROWS,
        description="spark: rows a class keeps at least (all of them when it has fewer) when the "
        "training set is sampled.",
    )
    spark: SparkSettings = Field(default_factory=SparkSettings)

    @property
    def on_spark(self) -> bool:
        return self.name == "spark"

    def check(self) -> None:
        if self.training_sample_rows < 1 or self.training_sample_min_class_rows < 0:
            raise ValueError(
                "engine: training_sample_rows must be positive and training_sample_min_class_rows "
                f"not negative (got {self.training_sample_rows}, {self.training_sample_min_class_rows})"
            )
        if self.spark.shuffle_partitions < 1:
            raise ValueError(f"engine.spark.shuffle_partitions must be positive, got {self.spark.shuffle_partitions}")

    def kind(self) -> str:
        """The Dagster kind of the assets this engine builds."""
        return self.name

    def spark_warehouse(self) -> SparkWarehouse:
        """The Spark warehouse of these settings (its session starts on first use)."""
        return SparkWarehouse(**self.spark.model_dump())

    def folders_behind_views(self) -> tuple[str, ...]:
        """The local folders the DuckDB views over the Spark tables read (``churn sql``'s
        sandbox keeps them readable); none on engine duckdb or with the warehouse on object
        storage (the sandbox loads no extension, so no httpfs)."""
        if not self.on_spark:
            return ()
        root = self.spark_warehouse().root
        return (duckdb_readable(root),) if root.startswith("file:") else ()


def engine_section(value: Any) -> Any:
    """``engine: spark`` is short for ``engine: {name: spark}``."""
    return {"name": value} if isinstance(value, str) else value


# -- the DuckDB views over the Spark tables ---------------------------------------------

# Spark SQL type -> DuckDB type, for a view over a table with no data file yet.
_SPARK_TO_DUCKDB = {
    "string": "VARCHAR", "boolean": "BOOLEAN", "tinyint": "TINYINT", "smallint": "SMALLINT",
    "int": "INTEGER", "bigint": "BIGINT", "float": "FLOAT", "double": "DOUBLE", "date": "DATE",
    "timestamp_ntz": "TIMESTAMP", "timestamp": "TIMESTAMPTZ", "binary": "BLOB",
}


class EngineError(RuntimeError):
    """The Spark warehouse cannot be read from the DuckDB side; the message says why."""


def duckdb_readable(uri: str) -> str:
    """The Spark warehouse URI as DuckDB reads it: a local path, or an object-store URL."""
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("s3a", "s3n"):
        return "s3" + uri[len(scheme):]
    if scheme in ("s3", "gs", "gcs", "abfss", "az", "https", "http"):
        return uri
    raise EngineError(
        f"DuckDB cannot read the Spark warehouse at {uri} ({scheme}:): the model registry, "
        "evaluation, drift and serving read the Spark tables through DuckDB, so put the warehouse "
        "on a local or shared folder, s3a://, gs:// or abfss://"
    )


def duckdb_type(spark_type: str) -> str:
    if spark_type in _SPARK_TO_DUCKDB:
        return _SPARK_TO_DUCKDB[spark_type]
    match = re.fullmatch(r"decimal\((\d+),(\d+)\)", spark_type)
    if match:
        return f"DECIMAL({match[1]}, {match[2]})"
    raise EngineError(f"no DuckDB type for Spark's {spark_type}")


def mirror_spark_tables(con: duckdb.DuckDBPyConnection, warehouse: SparkWarehouse, relations: list[str],
                        column_order: dict[str, list[str]] | None = None) -> None:
    """Make each of ``relations`` a DuckDB view over its Spark table's Parquet files, in the
    caller's transaction. A DuckDB table of the same name (built before the engine was switched)
    is replaced: with engine spark, the Spark warehouse holds the truth.

    ``column_order``: a relation's columns as its model wrote them (Spark keeps the month column
    of a partitioned table last; the view restores the model's order).
    """
    for relation in relations:
        schema, table = split_relation(relation)
        columns = warehouse.columns(relation)
        partitions = warehouse.partition_columns(relation)
        order = (column_order or {}).get(relation) or [name for name, _ in columns]
        by_name = {name.lower(): (name, kind) for name, kind in columns}
        selected = ", ".join(f'"{by_name[c.lower()][0]}"' for c in order)
        folder = duckdb_readable(warehouse.table_path(relation))
        if warehouse.has_data_files(relation):
            pattern = f"{folder}/{'*/' * len(partitions)}*.parquet".replace("'", "''")
            types = ", ".join(f"'{name}': '{duckdb_type(kind)}'" for name, kind in columns if name in partitions)
            hive = f", hive_partitioning = true, hive_types = {{{types}}}" if partitions else ", hive_partitioning = false"
            body = f"SELECT {selected} FROM read_parquet('{pattern}'{hive})"
        else:
            typed = ", ".join(f'CAST(NULL AS {duckdb_type(by_name[c.lower()][1])}) AS "{by_name[c.lower()][0]}"'
                              for c in order)
            body = f"SELECT {typed} WHERE false"
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        kind = con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchone()
        if kind and kind[0] != "VIEW":
            con.execute(f'DROP TABLE "{schema}"."{table}"')
        con.execute(f'CREATE OR REPLACE VIEW "{schema}"."{table}" AS {body}')
