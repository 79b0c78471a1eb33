"""The Spark warehouse: the same tables as the DuckDB warehouse, as Parquet under one location.

``<location>/<schema>/<table>/`` holds a table's Parquet files; a monthly table is partitioned
by its month column (``snapshot_month=2024-01-01/`` folders, the Hive layout every engine
reads). The folders are the truth: each SparkSession registers them in its (in-memory)
catalog as external tables, so ``staging.subscriptions`` in Spark SQL is the same name as in
DuckDB, and nothing but the files has to survive between sessions. No Hive metastore, no
Derby files in the working directory.

Writes never leave half a table or half a month:

- a whole table is written beside the old one (``<table>.tmp-<id>``) and swapped in by renames
  only once Spark has committed it; a failed write leaves the old table;
- a month (or a window of months) is written with dynamic partition overwrite: Spark writes
  the new files to a staging folder and, when every task has succeeded, replaces exactly the
  month folders the new rows fall in. A failed job leaves every month as it was. A month of
  the window that produced no rows at all is emptied afterwards, as DuckDB's delete of the
  window would.

File operations go through Hadoop's FileSystem (the one Spark writes with), so the location
may be ``file:``, ``hdfs://`` or ``s3a://``. pyspark is optional (``uv sync --extra spark``)
and imported only inside functions: the code location's import stays cheap.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from churn_assets.core.paths import spark_warehouse_dir

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

# A relation is <schema>.<table> with plain identifiers, as the SQL loader enforces for models;
# the name goes into DDL, so anything else is refused rather than quoted.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOG4J2_CONFIG = Path(__file__).with_name("spark_log4j2.properties")
# A table's Spark schema, kept in its folder (Spark's readers skip names starting with "_";
# DuckDB's views read *.parquet only).
_SCHEMA_FILE = "_churn_schema.json"
# Folders the warehouse writes next to a table while it replaces it; never tables themselves.
_TRANSIENT = re.compile(r"\.(tmp|old)-[0-9a-f]{32}$")
# The session's runtime conf remembers which location its catalog was registered from, so a
# second SparkWarehouse on the same session (getOrCreate returns the running one) does not
# list every folder again.
_REGISTERED_CONF = "churn.warehouse.registered"
# View models are kept as their Spark SQL, one file per view (<schema>.<name>.sql), since a
# Spark view lives only in a session's catalog; each session recreates them. The folder's
# name is no identifier, so it is never taken for a schema.
_VIEWS = ".views"

SPARK_MISSING = (
    "The Spark engine needs pyspark: `uv sync --extra spark` (and Java 17, e.g. Debian's "
    "openjdk-17-jre-headless)"
)


class SparkUnavailableError(RuntimeError):
    """pyspark (or Java) is not installed; the message says what to install."""


class SparkWriteError(RuntimeError):
    """A write was refused or failed; the previous table or months are unchanged."""


def split_relation(relation: str) -> tuple[str, str]:
    parts = relation.split(".")
    if len(parts) != 2 or not all(_IDENTIFIER.match(p) for p in parts):
        raise ValueError(f"{relation!r} is not <schema>.<table> with plain identifiers")
    return parts[0], parts[1]


def _quoted(relation: str) -> str:
    schema, table = split_relation(relation)
    return f"`{schema}`.`{table}`"


def require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as error:
        raise SparkUnavailableError(SPARK_MISSING) from error


class _FileSystem:
    """The few Hadoop FileSystem calls the warehouse needs, through Spark's JVM."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self._jvm = spark._jvm
        self._fs = self._path(root).getFileSystem(spark._jsc.hadoopConfiguration())

    def _path(self, text: str):
        return self._jvm.org.apache.hadoop.fs.Path(text)

    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._path(path)))

    def children(self, path: str, directories: bool = True) -> list[str]:
        """Names of the folders (or files) directly under ``path``; [] when it does not exist."""
        if not self.exists(path):
            return []
        return sorted(
            status.getPath().getName()
            for status in self._fs.listStatus(self._path(path))
            if bool(status.isDirectory()) == directories
        )

    def rename(self, source: str, target: str) -> None:
        if not self._fs.rename(self._path(source), self._path(target)):
            raise SparkWriteError(f"could not rename {source} to {target}")

    def delete(self, path: str) -> None:
        self._fs.delete(self._path(path), True)

    def write_text(self, path: str, text: str) -> None:
        stream = self._fs.create(self._path(path), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def read_text(self, path: str) -> str:
        stream = self._fs.open(self._path(path))
        try:
            return str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()


class SparkSettings(dg.Config):
    """churn.yaml ``engine.spark``: the SparkSession the Spark warehouse is queried and written with."""

    master: str = Field(
        default="local[2]",
        description="Spark master URL: local[N] on one machine, spark://host:7077, yarn, k8s://...",
    )
    location: str | None = Field(
        default=None,
        description="Warehouse folder or URI (file:, s3a://, gs://, abfss://); default "
        "$CHURN_HOME/spark-warehouse. On a cluster it must be storage every executor reaches.",
    )
    shuffle_partitions: int = Field(default=4, description="spark.sql.shuffle.partitions: a few per core of the cluster.")
    driver_memory: str = Field(default="1g", description="spark.driver.memory.")
    log_level: str = Field(default="ERROR", description="Spark's log level (WARN is chatty).")
    conf: dict[str, str] = Field(default_factory=dict, description="Further Spark settings, e.g. executor memory.")


class SparkWarehouse(SparkSettings):
    """Tables as Parquet under ``location`` (default ``$CHURN_HOME/spark-warehouse``), queried
    and written through one SparkSession built from these settings (churn.yaml ``engine.spark``;
    ``EnginePolicy.spark_warehouse()`` makes one)."""

    @property
    def root(self) -> str:
        """The location as a URI: a bare path is a local folder (``file:``), never the
        cluster's default file system by accident."""
        if self.location and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", self.location):
            return self.location.rstrip("/")
        path = Path(self.location).expanduser() if self.location else spark_warehouse_dir()
        return path.resolve().as_uri()

    def table_path(self, relation: str) -> str:
        schema, table = split_relation(relation)
        return f"{self.root}/{schema}/{table}"

    # --- the session -----------------------------------------------------------------

    def session(self) -> SparkSession:
        """The SparkSession (started on first use, then the running one), its catalog holding
        every table of the location."""
        require_pyspark()
        from pyspark.sql import SparkSession

        builder = (
            SparkSession.builder.master(self.master)
            .appName("churn-assets")
            .config("spark.driver.memory", self.driver_memory)
            .config("spark.sql.shuffle.partitions", str(self.shuffle_partitions))
            # Month folders are read from the files every time, never from partitions
            # recorded in a catalog: the folders are the truth, and a catalog entry made by
            # an earlier session would otherwise hide months written since.
            .config("spark.sql.hive.manageFilesourcePartitions", "false")
            .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
            # DuckDB's TIMESTAMP has no time zone; TIMESTAMP_NTZ is Spark's equal, and UTC
            # makes the date <-> timestamp casts the same on every machine.
            .config("spark.sql.timestampType", "TIMESTAMP_NTZ")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.warehouse.dir", self.root)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
        )
        if "spark.driver.extraJavaOptions" not in self.conf:
            # Read when the driver's JVM starts (a running session keeps its own).
            builder = builder.config("spark.driver.extraJavaOptions",
                                     f"-Dlog4j2.configurationFile={_LOG4J2_CONFIG.as_uri()} "
                                     f"-Dchurn.spark.log_level={self.log_level}")
        for key, value in self.conf.items():
            builder = builder.config(key, value)
        # Local executors are this machine's Python processes: run them on this very
        # interpreter, so they import the project as the driver does (PySpark's default,
        # `python3` on the PATH, may be another Python without it). The SparkContext reads it
        # once, when it starts; on a cluster the executors' Python is the deployment's
        # (PYSPARK_PYTHON, docs/scale-out.md).
        own_python = self.master.startswith("local") and not os.environ.get("PYSPARK_PYTHON")
        if own_python:
            os.environ["PYSPARK_PYTHON"] = sys.executable
        try:
            spark = builder.getOrCreate()
        except Exception as error:  # no Java, or a JVM that cannot start
            raise SparkUnavailableError(f"Spark did not start ({error}); {SPARK_MISSING}") from error
        finally:
            if own_python:
                os.environ.pop("PYSPARK_PYTHON", None)
        spark.sparkContext.setLogLevel(self.log_level)
        if spark.conf.get(_REGISTERED_CONF, "") != self.root:
            self._register_all(spark)
            spark.conf.set(_REGISTERED_CONF, self.root)
        return spark

    def stop(self) -> None:
        """Stop the running session (and its JVM's work); the next ``session()`` starts anew."""
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is not None:
            spark.stop()

    def _files(self, spark: SparkSession) -> _FileSystem:
        return _FileSystem(spark, self.root)

    def _register_all(self, spark: SparkSession) -> None:
        files = self._files(spark)
        for schema in files.children(self.root):
            if not _IDENTIFIER.match(schema):
                continue
            for table in files.children(f"{self.root}/{schema}"):
                if _IDENTIFIER.match(table) and not _TRANSIENT.search(table):
                    self._register(spark, f"{schema}.{table}")
        # A view may read another: each is made once what it reads exists. One that reads a
        # table gone since is left out; querying it then says the name is unknown.
        pending = {name.removesuffix(".sql"): files.read_text(self._view_path(name.removesuffix(".sql")))
                   for name in files.children(f"{self.root}/{_VIEWS}", directories=False) if name.endswith(".sql")}
        while pending:
            made = []
            for relation, sql in pending.items():
                try:
                    self._create_view(spark, relation, sql)
                except Exception:  # what it reads is not made yet (or no longer exists)
                    continue
                made.append(relation)
            if not made:
                break
            for relation in made:
                del pending[relation]

    def _view_path(self, relation: str) -> str:
        split_relation(relation)
        return f"{self.root}/{_VIEWS}/{relation}.sql"

    def _ensure_schema(self, spark: SparkSession, schema_name: str) -> None:
        # The schema's folder is the one its tables live in, not Spark's <name>.db default.
        location = f"{self.root}/{schema_name}".replace("\\", "\\\\").replace("'", "\\'")
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{schema_name}` LOCATION '{location}'")

    def _create_view(self, spark: SparkSession, relation: str, sql: str) -> None:
        self._ensure_schema(spark, split_relation(relation)[0])
        # A table of that name (the model was a table before) gives way; a view is replaced
        # below (Spark's DROP TABLE refuses a view).
        if spark.catalog.tableExists(relation) and spark.catalog.getTable(relation).tableType != "VIEW":
            spark.sql(f"DROP TABLE {_quoted(relation)}")
        spark.sql(f"CREATE OR REPLACE VIEW {_quoted(relation)} AS\n{sql}")

    def is_view(self, relation: str) -> bool:
        return self._files(self.session()).exists(self._view_path(relation))

    def _register(self, spark: SparkSession, relation: str, schema=None) -> None:
        """(Re)make the catalog entry of ``relation`` over its folder. A write gives the
        ``schema`` and it is kept beside the files, since a table of zero rows has no data file
        to read it from in a later session; a folder with neither is no table (left out)."""
        from pyspark.sql.types import StructType

        files, path = self._files(spark), self.table_path(relation)
        if schema is not None:
            files.write_text(f"{path}/{_SCHEMA_FILE}", schema.json())
        elif not _holds_parquet(files, path):
            if not files.exists(f"{path}/{_SCHEMA_FILE}"):
                return
            schema = StructType.fromJson(json.loads(files.read_text(f"{path}/{_SCHEMA_FILE}")))
        name = _quoted(relation)
        self._ensure_schema(spark, split_relation(relation)[0])
        # An external table: dropping the entry never touches the files.
        spark.sql(f"DROP TABLE IF EXISTS {name}")
        options = {"schema": schema} if schema is not None else {}
        spark.catalog.createTable(name, path=path, source="parquet", **options)

    # --- reading ---------------------------------------------------------------------

    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> DataFrame:
        """``spark.sql`` with named parameters (``:name``) bound by Spark, never pasted in."""
        return self.session().sql(query, args=dict(params) if params else None)

    def read(self, query: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """A query's rows as pandas (through Arrow)."""
        return self.sql(query, params).toPandas()

    def table_exists(self, relation: str) -> bool:
        split_relation(relation)
        return bool(self.session().catalog.tableExists(relation))

    def columns(self, relation: str) -> list[tuple[str, str]]:
        """``(name, Spark SQL type)`` of each column, as stored (partition column last)."""
        return [(f.name, f.dataType.simpleString()) for f in self.session().table(_quoted(relation)).schema]

    def partition_columns(self, relation: str) -> list[str]:
        """The columns the table's folders are partitioned by (``month=2024-01-01/``), outermost first."""
        files = self._files(self.session())
        path, found = self.table_path(relation), []
        while True:
            folders = [name for name in files.children(path) if "=" in name and not name.startswith(("_", "."))]
            if not folders:
                return found
            found.append(folders[0].split("=", 1)[0])
            path = f"{path}/{folders[0]}"

    def has_data_files(self, relation: str) -> bool:
        """Whether the table's folder holds at least one Parquet file (a table of zero rows may not)."""
        return _holds_parquet(self._files(self.session()), self.table_path(relation))

    # --- writing ---------------------------------------------------------------------

    def write_view(self, relation: str, sql: str) -> None:
        """Make ``relation`` a view of the Spark SQL ``sql``, kept for every later session.

        Spark analyses the query first: one it refuses changes nothing. A table of the same
        name (the model was a table before) is removed once the view stands.
        """
        spark = self.session()
        files = self._files(spark)
        self._create_view(spark, relation, sql)
        files.write_text(self._view_path(relation), sql)
        if files.exists(self.table_path(relation)):
            files.delete(self.table_path(relation))

    def _drop_view(self, spark: SparkSession, relation: str) -> None:
        """A table is replacing the view ``relation`` (the model was a view before)."""
        files = self._files(spark)
        if files.exists(self._view_path(relation)):
            spark.sql(f"DROP VIEW IF EXISTS {_quoted(relation)}")
            files.delete(self._view_path(relation))

    def dataframe(self, data: Any) -> DataFrame:
        """A Spark DataFrame from a Spark DataFrame, a pyarrow Table or a pandas DataFrame.

        Arrow's time-zone-less timestamps (DuckDB's TIMESTAMP) become TIMESTAMP_NTZ, not
        Spark's session-zone TIMESTAMP, so a value reads back as written on any machine.
        """
        from pyspark.sql import DataFrame as SparkFrame

        if isinstance(data, SparkFrame):
            return data
        import pyarrow as pa

        table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        spark = self.session()
        return spark.createDataFrame(table, schema=spark_schema_of_arrow(table.schema))

    def write_table(self, relation: str, data: Any) -> int:
        """Replace ``relation`` whole with ``data``; returns its row count.

        The new files are committed by Spark in a sibling folder first and only then swapped
        in, so a failed write (or a query that fails half-way) leaves the old table.
        """
        frame = self.dataframe(data)
        spark = self.session()
        files = self._files(spark)
        final = self.table_path(relation)
        token = uuid.uuid4().hex
        staged, retired = f"{final}.tmp-{token}", f"{final}.old-{token}"
        try:
            frame.write.mode("errorifexists").parquet(staged)
        except Exception as error:
            files.delete(staged)
            raise SparkWriteError(f"{relation}: the write failed, the table is unchanged: {first_line(error)}") from error
        with self._swapping(files, final, retired):
            files.rename(staged, final)
        self._drop_view(spark, relation)
        self._register(spark, relation, schema=frame.schema)
        return spark.table(_quoted(relation)).count()

    @contextmanager
    def _swapping(self, files: _FileSystem, final: str, retired: str) -> Iterator[None]:
        had_table = files.exists(final)
        if had_table:
            files.rename(final, retired)
        try:
            yield
        except BaseException:
            if had_table:
                files.rename(retired, final)
            raise
        if had_table:
            files.delete(retired)

    def write_months(
        self, relation: str, data: Any, partition_by: str, start: date, end: date
    ) -> dict[str, Any]:
        """Replace the months [start, end) of ``relation`` with ``data``, partitioned by the
        DATE column ``partition_by``.

        Every row must fall in the window: one that does not fails the Spark job (the check is
        part of the write itself, no second pass over the data), and a failed job leaves every
        month as it was. Months outside the window are never touched. Returns the window's
        rows per month and the months emptied because the new data had none.
        """
        from pyspark.sql import functions as F

        frame = self.dataframe(data)
        spark = self.session()
        files = self._files(spark)
        final = self.table_path(relation)
        column = _matching_column(frame.columns, partition_by)
        if column is None:
            raise SparkWriteError(
                f"{relation}: partition column {partition_by!r} is not among the columns {frame.columns}"
            )
        if self.table_exists(relation):
            existing = {name.lower() for name, _ in self.columns(relation)}
            if existing != {c.lower() for c in frame.columns}:
                raise SparkWriteError(
                    f"{relation}: the new rows' columns {sorted(frame.columns)} differ from the "
                    f"table's {sorted(existing)}; rebuild the table (delete its folder "
                    f"{final}) and write every month again"
                )
        before = self._window_folders(files, final, column, start, end)

        value = F.col(column)
        outside = value.isNull() | (value < F.lit(start)) | (value >= F.lit(end))
        message = F.concat(
            F.lit(f"{relation}: a row has {column} outside the window [{start}, {end}): "),
            F.coalesce(value.cast("string"), F.lit("NULL")),
        )
        guarded = frame.withColumn(column, F.when(outside, F.raise_error(message)).otherwise(value))
        existed = files.exists(final)
        try:
            guarded.write.mode("overwrite").option("partitionOverwriteMode", "dynamic").partitionBy(column).parquet(final)
        except Exception as error:
            if not existed and files.exists(final):
                files.delete(final)  # the folder Spark made for a first write that failed
            raise SparkWriteError(
                f"{relation}: the write failed, months [{start}, {end}) are unchanged: {first_line(error)}"
            ) from error

        # Dynamic overwrite replaces only the months that received rows; a month of the window
        # whose folder still holds exactly its old files got none, and is emptied as DuckDB's
        # delete of the window would.
        after = self._window_folders(files, final, column, start, end)
        emptied = [folder for folder, names in before.items() if after.get(folder) == names]
        for folder in emptied:
            files.delete(f"{final}/{folder}")
        self._drop_view(spark, relation)
        self._register(spark, relation, schema=_table_order(frame.schema, column))
        rows = self.sql(
            f"SELECT date_format({_backticked(column)}, 'yyyy-MM') AS month, count(*) AS n "
            f"FROM {_quoted(relation)} WHERE {_backticked(column)} >= :start AND {_backticked(column)} < :end "
            "GROUP BY 1 ORDER BY 1",
            {"start": start, "end": end},
        ).collect()
        return {
            "rows_by_month": {row["month"]: int(row["n"]) for row in rows},
            "months_emptied": [folder.split("=", 1)[1] for folder in emptied],
            "window": f"[{start}, {end})",
        }

    def _window_folders(
        self, files: _FileSystem, final: str, column: str, start: date, end: date
    ) -> dict[str, frozenset[str]]:
        """The month folders of ``final`` inside [start, end) and the files each holds."""
        folders: dict[str, frozenset[str]] = {}
        prefix = f"{column}="
        for folder in files.children(final):
            if not folder.startswith(prefix):
                continue
            try:
                month = date.fromisoformat(folder[len(prefix):])
            except ValueError:
                continue
            if start <= month < end:
                folders[folder] = frozenset(files.children(f"{final}/{folder}", directories=False))
        return folders


def _holds_parquet(files: _FileSystem, path: str) -> bool:
    """Whether the folder ``path`` or one of its partition folders holds a Parquet file."""
    if any(name.endswith(".parquet") for name in files.children(path, directories=False)):
        return True
    return any(_holds_parquet(files, f"{path}/{name}") for name in files.children(path)
               if "=" in name and not name.startswith(("_", ".")))


def _matching_column(columns: list[str], name: str) -> str | None:
    return next((c for c in columns if c.lower() == name.lower()), None)


def _backticked(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _table_order(schema, partition_column: str):
    """The schema a partitioned folder reads back with: the partition column last."""
    from pyspark.sql.types import StructType

    fields = [f for f in schema.fields if f.name != partition_column]
    return StructType(fields + [f for f in schema.fields if f.name == partition_column])


def spark_schema_of_arrow(arrow_schema):
    """Spark types for an Arrow schema, with time-zone-less timestamps as TIMESTAMP_NTZ."""
    import pyarrow as pa
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import from_arrow_type

    fields = []
    for field in arrow_schema:
        if pa.types.is_timestamp(field.type) and field.type.tz is None:
            spark_type = T.TimestampNTZType()
        else:
            spark_type = from_arrow_type(field.type)
        fields.append(T.StructField(field.name, spark_type, nullable=True))
    return T.StructType(fields)


def first_line(error: BaseException) -> str:
    """The line of an error's message that says what went wrong (Spark's run to pages): for an
    error raised in a Python worker, its exception line ("ModuleNotFoundError: ..."), else the
    first line; the error's type when it has no message."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    _, marker, python_part = text.partition("Traceback (most recent call last):")
    if marker:
        # The worker's traceback ends at its exception line (column 0; frames are indented),
        # before the JVM's stack ("\tat ...", "Driver stacktrace:").
        worker = re.split(r"\n(?:\tat |Driver stacktrace:|JVM stacktrace:)", python_part, maxsplit=1)[0]
        lines = [line for line in worker.splitlines() if line.strip() and not line[0].isspace()]
        if lines:
            return lines[-1].strip()
    return text.splitlines()[0]


__all__ = [
    "SPARK_MISSING",
    "SparkUnavailableError",
    "SparkWarehouse",
    "SparkWriteError",
    "first_line",
    "require_pyspark",
    "spark_schema_of_arrow",
    "split_relation",
]
