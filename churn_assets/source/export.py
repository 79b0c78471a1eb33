"""A dataset project's source: the user's own export (one CSV or Parquet file) as ``raw.<table>``.

``churn init`` copies the file into the project and writes the ``source:`` section of
``churn.yaml``; the ``raw/<table>`` asset reloads it on every run, exactly as delivered plus one
column, ``delivery_month``: the first day of the month each row describes (its time column's
month, or the project's one snapshot month). That column is what the SQL models partition on,
what ``churn run`` reads the months to run from, and what the point-in-time check truncates.
The whole table is replaced in one transaction, so a failed load leaves the previous one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from churn_assets.core.engine import EnginePolicy
from churn_assets.core.metadata import table_metadata
from churn_assets.core.warehouse import WAREHOUSE_POOL, Warehouse

if TYPE_CHECKING:
    import pyarrow as pa

DELIVERY_MONTH_COLUMN = "delivery_month"
DEFAULT_TABLE = "raw.export"
# Text layouts a time column may have, tried in this order; DATE/TIMESTAMP columns need none.
TIME_FORMATS = ("%Y-%m-%d", "%Y-%m", "%Y%m", "%Y/%m/%d", "%Y/%m", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y",
                "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")


class ExportError(ValueError):
    """The export cannot be used as the project's source; the message names the file and column."""


class SourcePolicy(dg.ConfigurableResource):
    """Where a dataset project's rows come from (churn.yaml ``source:``). No ``file``: the built-in
    project's monthly deliveries under ``$CHURN_HOME/source``."""

    file: str | None = Field(default=None, description="The export, relative to the project folder (CSV or Parquet).")
    table: str = Field(default=DEFAULT_TABLE, description="The raw table the export is loaded into.")
    time_column: str | None = Field(
        default=None, description="Column of the export giving each row's month; null: one snapshot.")
    time_format: str | None = Field(
        default=None, description="strptime layout of a text time column (e.g. '%Y-%m'); null for dates.")
    month: str | None = Field(default=None, description="YYYY-MM of a file without a time column.")

    @property
    def from_export(self) -> bool:
        return self.file is not None

    @property
    def table_name(self) -> str:
        return self.table.split(".", 1)[1]

    def path(self, project_root: Path) -> Path:
        return (Path(project_root) / self.file).resolve()

    def check(self) -> None:
        """Cross-field rules, run when the policies load; the message names the key."""
        import re

        from churn_assets.core.project import month_key

        if not re.fullmatch(r"raw\.[A-Za-z_][A-Za-z0-9_]*", self.table):
            raise ValueError(f"source.table: expected raw.NAME, got {self.table!r}")
        if self.month is not None:
            try:
                month_key(self.month)
            except ValueError as error:
                raise ValueError(f"source.month: {error}") from None
        if self.file and not self.time_column and not self.month:
            raise ValueError("source: a file without a time_column needs a month (YYYY-MM)")


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def month_sql(column: str, column_type: str | None, time_format: str | None) -> str:
    """DuckDB expression giving the first day of the month of ``column``'s values."""
    value = quoted(column)
    if time_format:
        layout = time_format.replace("'", "''")
        parsed = f"strptime(CAST({value} AS VARCHAR), '{layout}')"
    elif column_type and column_type.upper().startswith(("DATE", "TIMESTAMP")):
        parsed = value
    else:
        parsed = f"CAST({value} AS TIMESTAMP)"
    return f"CAST(date_trunc('month', {parsed}) AS DATE)"


def detect_time_format(con, relation: str, column: str, column_type: str) -> str | None:
    """The layout of a time column: None when its type is a date/timestamp, else the first of
    ``TIME_FORMATS`` that parses every non-empty value; ExportError when none does."""
    if column_type.upper().startswith(("DATE", "TIMESTAMP")):
        return None
    value = quoted(column)
    for layout in TIME_FORMATS:
        failures = con.execute(
            f"SELECT count(*) FROM {relation} WHERE {value} IS NOT NULL "
            f"AND try_strptime(CAST({value} AS VARCHAR), '{layout}') IS NULL"
        ).fetchall()[0][0]
        if failures == 0:
            return layout
    # fetchall: a result left half-read would block the connection's next statement.
    sample = next(iter(con.execute(
        f"SELECT CAST({value} AS VARCHAR) FROM {relation} WHERE {value} IS NOT NULL LIMIT 1").fetchall()), None)
    raise ExportError(f"time column '{column}': values such as {sample[0] if sample else None!r} are not dates "
                      f"in any layout tried ({', '.join(TIME_FORMATS)}); set source.time_format")


def with_months(data: pa.Table, policy: SourcePolicy, where: str):
    """A DuckDB connection holding the export as ``export`` with its ``delivery_month`` column."""
    import duckdb

    con = duckdb.connect()
    con.register("export_file", data)
    names = {name.lower(): name for name in data.column_names}
    if DELIVERY_MONTH_COLUMN in names:
        raise ExportError(f"{where}: the column name '{DELIVERY_MONTH_COLUMN}' is reserved for the month "
                          "each row describes; rename it in the file")
    if policy.time_column:
        if policy.time_column.lower() not in names:
            raise ExportError(f"{where}: no time column '{policy.time_column}' (columns: {', '.join(data.column_names)})")
        column = names[policy.time_column.lower()]
        column_type = con.execute(
            f"SELECT typeof({quoted(column)}) FROM export_file LIMIT 1").fetchall()[0][0]
        expression = month_sql(column, column_type, policy.time_format)
        try:
            con.execute(f"CREATE VIEW export AS SELECT *, {expression} AS {DELIVERY_MONTH_COLUMN} FROM export_file")
            empty = con.execute(f"SELECT count(*) FROM export WHERE {DELIVERY_MONTH_COLUMN} IS NULL").fetchall()[0][0]
        except duckdb.Error as error:
            raise ExportError(f"{where}: time column '{column}' does not parse as dates "
                              f"({policy.time_format or 'no layout'}): {error}") from None
        if empty:
            raise ExportError(f"{where}: time column '{column}' is empty in {empty:,} row(s)")
    else:
        from churn_assets.core.project import month_key

        if not policy.month:
            raise ExportError(f"{where}: source.month is required when there is no source.time_column")
        con.execute(f"CREATE VIEW export AS SELECT *, DATE '{month_key(policy.month)}' AS {DELIVERY_MONTH_COLUMN} "
                    "FROM export_file")
    return con


def read_export(project_root: Path, policy: SourcePolicy):
    """The export as a DuckDB connection with an ``export`` view (file columns + delivery_month)."""
    from churn_assets.source.ingest import IngestError, read_table_file

    path = policy.path(project_root)
    if not path.is_file():
        raise ExportError(f"The project's export {path} is missing (churn.yaml source.file)")
    try:
        data = read_table_file(path)
    except IngestError as error:
        raise ExportError(str(error)) from None
    return with_months(data, policy, str(path))


def export_months(project_root: Path, policy: SourcePolicy) -> list[str]:
    """The months the export describes, as partition keys."""
    con = read_export(project_root, policy)
    try:
        return [str(row[0]) for row in con.execute(
            f"SELECT DISTINCT {DELIVERY_MONTH_COLUMN} FROM export ORDER BY 1").fetchall()]
    finally:
        con.close()


def load_export(warehouse_con, project_root: Path, policy: SourcePolicy) -> dict[str, Any]:
    """Replace ``raw.<table>`` with the export, on the caller's (transactional) connection."""
    from churn_assets.source.ingest import replace_raw_table

    source = read_export(project_root, policy)
    try:
        data = source.sql("SELECT * FROM export").to_arrow_table()
    finally:
        source.close()
    previous = [row[0] for row in warehouse_con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = ? "
        "ORDER BY ordinal_position", [policy.table_name]).fetchall()]
    missing = [c for c in previous if c.lower() not in {n.lower() for n in data.column_names}]
    if missing:
        # The project's SQL was written for these columns; a newer export without them would
        # fail there with a binder error far from the cause.
        raise ExportError(f"{policy.path(project_root)}: column(s) {', '.join(missing)} missing: {policy.table} has "
                          "them and the project's SQL reads them; put them back, or make a new project from this "
                          "file with `churn init`")
    replace_raw_table(warehouse_con, policy.table_name, data)
    months = warehouse_con.execute(
        f"SELECT {DELIVERY_MONTH_COLUMN}, count(*) FROM raw.{quoted(policy.table_name)} GROUP BY 1 ORDER BY 1"
    ).fetchall()
    return {"rows": data.num_rows, "rows_by_month": {str(m)[:7]: n for m, n in months}}


def copy_export_to_spark(con, engine: EnginePolicy, policy: SourcePolicy) -> None:
    """The export as loaded into DuckDB, written whole to the Spark warehouse too, where the
    project's SQL models read it when ``engine: spark``. The export is one file on this
    machine, so it passes through it anyway; DuckDB keeps its own (identical) table."""
    table = f"raw.{policy.table_name}"
    engine.spark_warehouse().write_table(table, con.sql(f"SELECT * FROM raw.{quoted(policy.table_name)}").to_arrow_table())


def export_asset(policy: SourcePolicy, project_root: Path, engine: str = "duckdb") -> dg.AssetsDefinition:
    """``raw/<table>``: the project's export, reloaded whole on every materialization."""
    key = dg.AssetKey(["raw", policy.table_name])
    path = policy.path(project_root)

    @dg.asset(
        key=key,
        group_name="raw",
        kinds={engine, "parquet" if path.suffix.lower() == ".parquet" else "csv"},
        pool=WAREHOUSE_POOL,
        description=(
            f"{policy.table}: the project's export ({policy.file}) exactly as delivered, plus "
            f"`{DELIVERY_MONTH_COLUMN}`, the month each row describes "
            f"({'from column ' + repr(policy.time_column) if policy.time_column else 'one snapshot, ' + str(policy.month)}). "
            "Replaced whole in one transaction."
        ),
        metadata={"source_file": dg.MetadataValue.path(str(path))},
    )
    # `context` unannotated: this module postpones annotations, and Dagster reads them as strings.
    def export(context, warehouse: Warehouse, engine_policy: EnginePolicy) -> dg.MaterializeResult:
        from churn_assets.core.partitions import register_months

        try:
            with warehouse.write() as con:
                loaded = load_export(con, project_root, policy)
                if engine_policy.on_spark:
                    # Inside the DuckDB transaction: a failed Spark write leaves both as they were.
                    copy_export_to_spark(con, engine_policy, policy)
        except ExportError as error:
            raise dg.Failure(str(error)) from None
        # A new export's months become partitions, whoever materialized it (the UI, a run).
        register_months(context.instance, [f"{month}-01" for month in loaded["rows_by_month"]])
        return dg.MaterializeResult(metadata={
            **table_metadata(row_count=loaded["rows"], table_name=policy.table),
            "rows_by_month": dg.MetadataValue.json(loaded["rows_by_month"]),
            "source_file": dg.MetadataValue.path(str(path)),
        })

    return export
