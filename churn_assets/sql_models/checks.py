"""YAML tests and singular tests as check plans: the query returning a test's failing rows
(it passes when that returns none), and the verdict Dagster gets from them.

``check_assets.py`` makes the plans asset checks (one AssetChecksDefinition per model, one per
singular test), so `churn check` can run them against the current warehouse without
re-materializing anything; on DuckDB they read through a short-lived read-only connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from churn_assets.core.metadata import markdown_cell, markdown_table
from churn_assets.sql_models.loader import DataTest, SingularTest, SqlModel

if TYPE_CHECKING:
    import duckdb

SAMPLE_ROWS = 5


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_relation(key: dg.AssetKey) -> str:
    return ".".join(quote_identifier(part) for part in key.path)


def _literal(value: Any) -> str:
    """A YAML scalar as a DuckDB literal (no sqlglot: this runs at code-location load)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (date, datetime)):
        return f"{'TIMESTAMP' if isinstance(value, datetime) else 'DATE'} '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def failing_rows_sql(relation_key: dg.AssetKey, test: DataTest) -> str:
    """The query returning the rows that violate ``test`` (empty when it passes).

    Like dbt, value tests (accepted_values, range, relationships, expression) ignore
    rows where the tested value is NULL: not_null is the test that forbids NULLs.
    """
    relation = quote_relation(relation_key)
    column = quote_identifier(test.column) if test.column else None
    args = test.args
    if test.kind == "not_null":
        return f"SELECT * FROM {relation} WHERE {column} IS NULL"
    if test.kind == "unique":
        if args.get("columns"):
            columns = ", ".join(quote_identifier(c) for c in args["columns"])
            return (
                f"SELECT {columns}, count(*) AS duplicate_rows FROM {relation} "
                f"GROUP BY ALL HAVING count(*) > 1"
            )
        return (
            f"SELECT {column}, count(*) AS duplicate_rows FROM {relation} "
            f"WHERE {column} IS NOT NULL GROUP BY ALL HAVING count(*) > 1"
        )
    if test.kind == "accepted_values":
        values = ", ".join(_literal(v) for v in args["values"])
        return f"SELECT * FROM {relation} WHERE {column} IS NOT NULL AND {column} NOT IN ({values})"
    if test.kind == "relationships":
        assert test.to_key is not None
        parent = quote_relation(test.to_key)
        field = quote_identifier(str(args["field"]))
        return (
            f"SELECT child.* FROM {relation} AS child WHERE child.{column} IS NOT NULL "
            f"AND NOT EXISTS (SELECT 1 FROM {parent} AS parent WHERE parent.{field} = child.{column})"
        )
    if test.kind == "range":
        conditions = []
        if args.get("min") is not None:
            conditions.append(f"{column} < {_literal(args['min'])}")
        if args.get("max") is not None:
            conditions.append(f"{column} > {_literal(args['max'])}")
        return f"SELECT * FROM {relation} WHERE {' OR '.join(conditions)}"
    if test.kind == "expression":
        return f"SELECT * FROM {relation} WHERE NOT ({args['expression']})"
    raise ValueError(f"unknown test type {test.kind!r}")


def describe_test(test: DataTest) -> str:
    column = test.column
    args = test.args
    if test.kind == "not_null":
        return f"{column} is never NULL"
    if test.kind == "unique":
        columns = args.get("columns") or [column]
        return f"({', '.join(columns)}) is unique" if len(columns) > 1 else f"{columns[0]} is unique"
    if test.kind == "accepted_values":
        return f"{column} is one of {list(args['values'])}"
    if test.kind == "relationships":
        return f"every {column} exists in {args['to']}.{args['field']}"
    if test.kind == "range":
        low = args.get("min")
        high = args.get("max")
        if low is not None and high is not None:
            return f"{column} is between {low} and {high}"
        return f"{column} >= {low}" if low is not None else f"{column} <= {high}"
    return f"{args['expression']} holds for every row"


@dataclass(frozen=True)
class CheckPlan:
    """Everything needed to evaluate one check."""

    asset_key: dg.AssetKey
    name: str
    severity: str
    failing_sql: str
    description: str
    source: Path
    additional_deps: tuple[dg.AssetKey, ...] = ()

    @property
    def check_key(self) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(self.asset_key, self.name)

    @property
    def dagster_severity(self) -> dg.AssetCheckSeverity:
        return dg.AssetCheckSeverity.ERROR if self.severity == "error" else dg.AssetCheckSeverity.WARN

    def spec(self) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            name=self.name,
            asset=self.asset_key,
            description=self.description,
            blocking=self.severity == "error",
            additional_deps=list(self.additional_deps),
            metadata={
                "severity": self.severity,
                "source": dg.MetadataValue.path(str(self.source)),
                "query": dg.MetadataValue.md(f"```sql\n{self.failing_sql}\n```"),
            },
        )


def model_check_plans(model: SqlModel) -> list[CheckPlan]:
    return [
        CheckPlan(
            asset_key=model.key,
            name=test.check_name,
            severity=test.severity,
            failing_sql=failing_rows_sql(model.key, test),
            description=describe_test(test),
            source=test.source,
            additional_deps=(test.to_key,) if test.to_key and test.to_key != model.key else (),
        )
        for test in model.tests
    ]


def singular_check_plans(test: SingularTest) -> list[CheckPlan]:
    return [
        CheckPlan(
            asset_key=target,
            name=test.name,
            severity=test.severity,
            failing_sql=test.sql,
            description=f"Singular test {test.path.name}: the query returns no rows",
            source=test.path,
            additional_deps=tuple(k for k in test.deps if k != target),
        )
        for target in test.targets
    ]


def _null_cell(value: Any) -> str:
    return "NULL" if value is None else markdown_cell(value)


def check_result(plan: CheckPlan, failing: int, columns: Sequence[str], sample: Sequence[tuple],
                 metadata: dict[str, Any] | None = None) -> dg.AssetCheckResult:
    """A check's result from its failing-row count and a sample of those rows (any engine)."""
    metadata = {"failing_rows": dg.MetadataValue.int(int(failing)), "severity": plan.severity, **(metadata or {})}
    if failing:
        metadata["failing_sample"] = dg.MetadataValue.md(markdown_table(columns, sample, cell=_null_cell))
    return dg.AssetCheckResult(
        asset_key=plan.asset_key,
        check_name=plan.name,
        passed=failing == 0,
        severity=plan.dagster_severity,
        description=plan.description if failing == 0 else f"{failing} failing row(s): not {plan.description}",
        metadata=metadata,
    )


def query_failed_result(plan: CheckPlan, description: str, reason: str,
                        metadata: dict[str, Any] | None = None) -> dg.AssetCheckResult:
    """A failed check whose query could not run: ``description`` says where, ``reason`` why."""
    return dg.AssetCheckResult(
        asset_key=plan.asset_key,
        check_name=plan.name,
        passed=False,
        severity=plan.dagster_severity,
        description=description,
        metadata={"error": dg.MetadataValue.text(reason), **(metadata or {})},
    )


def evaluate_check(con: duckdb.DuckDBPyConnection, plan: CheckPlan) -> dg.AssetCheckResult:
    """Run one check's query: the failing-row count plus a sample of failing rows."""
    import duckdb

    try:
        failing = con.execute(f"SELECT count(*) FROM ({plan.failing_sql}) AS failing").fetchone()[0]
        sample = con.execute(
            f"SELECT * FROM ({plan.failing_sql}) AS failing LIMIT {SAMPLE_ROWS}"
        )
        columns = [d[0] for d in sample.description]
        rows = sample.fetchall()
    except duckdb.Error as error:
        return query_failed_result(plan, f"The check query failed ({plan.source}): {error}", str(error))
    return check_result(plan, failing, columns, rows)
