"""Translate the DuckDB SQL models to other engines with sqlglot.

The window parameters come out in each engine's own named-parameter syntax, so the same
model runs with that engine's parameter binding:

- spark:     ``:partition_start``  (``spark.sql(query, args={"partition_start": ...})``)
- snowflake: ``:partition_start``  (bind variables in Snowflake Scripting / the SQL API)
- bigquery:  ``@partition_start``  (query parameters)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from churn_assets.sql_models.loader import (
    SqlProjectError,
    discover_model_files,
    find_model_file,
    read_sql,
)

if TYPE_CHECKING:
    from sqlglot import exp

TRANSPILE_DIALECTS = ("spark", "snowflake", "bigquery")


class UntranslatableError(SqlProjectError):
    """A construct of a model has no equivalent in the target engine; ``construct`` names it."""

    def __init__(self, message: str, construct: str) -> None:
        super().__init__(message)
        self.construct = construct


@dataclass(frozen=True)
class TranspileResult:
    model: str
    dialect: str
    ok: bool
    error: str | None = None


def _check_dialect(dialect: str) -> str:
    from sqlglot.dialects.dialect import Dialect

    name = dialect.strip().lower()
    try:
        Dialect.get_or_raise(name)
    except ValueError as error:
        raise SqlProjectError(
            f"unknown SQL dialect {dialect!r}; supported targets: {', '.join(TRANSPILE_DIALECTS)}"
        ) from error
    return name


def transpile_sql(
    sql: str,
    dialect: str,
    *,
    strict: bool = False,
    source: str = "<sql>",
    function_exists: Callable[[str], bool] | None = None,
) -> str:
    """DuckDB SQL rewritten for ``dialect``.

    With ``strict`` a construct the target cannot express raises SqlProjectError instead
    of being passed through as is (UntranslatableError for the ones this module knows,
    naming the construct). ``function_exists`` (Spark: the session's function registry)
    lets strict mode refuse a function sqlglot does not know, which it would otherwise copy
    into the output under its DuckDB name.
    """
    import sqlglot
    from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError
    from sqlglot.transforms import eliminate_window_clause

    target = _check_dialect(dialect)
    level = ErrorLevel.RAISE if strict else ErrorLevel.WARN
    try:
        # Named windows (``WINDOW w AS (...)``) are written out at each ``OVER w``: not
        # every engine has the clause, and sqlglot 30's BigQuery generator fails on it.
        statements = []
        for statement in sqlglot.parse(sql, read="duckdb"):
            if statement is None:
                continue
            statement = statement.transform(eliminate_window_clause)
            if target == "spark":
                statement = _for_spark(statement, source, strict=strict, function_exists=function_exists)
            statements.append(statement.sql(target, pretty=True, unsupported_level=level))
    except UntranslatableError:
        raise
    except (ParseError, UnsupportedError) as error:
        raise SqlProjectError(f"{source}: cannot transpile to {target}: {error}") from error
    except Exception as error:  # an internal sqlglot failure on an unusual construct
        raise SqlProjectError(
            f"{source}: sqlglot failed transpiling to {target} "
            f"({type(error).__name__}: {error})"
        ) from error
    return ";\n".join(statements)


def transpile_model(
    sql_dir: Path | str, model_or_file: str | Path, dialect: str, *, strict: bool = False
) -> str:
    """One model (``schema.table``, a unique table name, or a .sql path) in ``dialect``."""
    path = find_model_file(Path(sql_dir), model_or_file)
    return transpile_sql(read_sql(path), dialect, strict=strict, source=str(path))


def transpile_report(
    sql_dir: Path | str, dialects: Sequence[str] = TRANSPILE_DIALECTS
) -> list[TranspileResult]:
    """For every model and dialect: does it transpile without unsupported constructs?"""
    results: list[TranspileResult] = []
    for model_file in discover_model_files(Path(sql_dir)):
        name = f"{model_file.schema}.{model_file.name}"
        sql = read_sql(model_file.path)
        for dialect in dialects:
            try:
                transpile_sql(sql, dialect, strict=True, source=str(model_file.path))
            except SqlProjectError as error:
                results.append(TranspileResult(name, dialect, False, str(error)))
            else:
                results.append(TranspileResult(name, dialect, True))
    return results


# --- DuckDB -> Spark: what sqlglot's Spark generator does not do (or does wrongly) -------------
#
# Each rewrite below keeps DuckDB's meaning; each refusal is a construct whose meaning Spark
# cannot reproduce. Checked on sqlglot 30 / Spark 4.0 against the project's own models
# (tests/test_spark_engine.py builds them on both engines and compares every column).

# DuckDB's interval constructors; Spark builds intervals with make_ym_interval / make_dt_interval
# (INT arguments: DuckDB's BIGINT range values are cast, Spark's ANSI mode casts no narrower
# type implicitly).
_SPARK_INTERVALS = {
    "to_years": lambda x: ("make_ym_interval", [x, 0]),
    "to_months": lambda x: ("make_ym_interval", [0, x]),
    "to_days": lambda x: ("make_dt_interval", [x]),
}


def _refuse(source: str, construct: str, why: str) -> UntranslatableError:
    return UntranslatableError(f"{source}: cannot run on Spark: {construct}: {why}", construct)


def _for_spark(
    expression: exp.Expr,
    source: str,
    *,
    strict: bool,
    function_exists: Callable[[str], bool] | None,
) -> exp.Expr:
    from sqlglot import exp

    if strict:
        for join in expression.find_all(exp.Join):
            method = str(join.args.get("method") or "").upper()
            if method in ("ASOF", "POSITIONAL"):
                raise _refuse(source, f"{method} JOIN", "Spark has no such join")
        for columns in expression.find_all(exp.Columns):
            raise _refuse(source, columns.sql("duckdb"), "DuckDB's COLUMNS(...) star expression has no Spark form")

    def rewrite(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Table) and isinstance(node.this, exp.GenerateSeries):
            return _range_table(node)
        if isinstance(node, exp.Anonymous) and node.name.lower() in _SPARK_INTERVALS and len(node.expressions) == 1:
            name, args = _SPARK_INTERVALS[node.name.lower()](
                exp.cast(node.expressions[0].copy(), exp.DataType.build("INT"))
            )
            return exp.Anonymous(this=name, expressions=[exp.Literal.number(a) if isinstance(a, int) else a for a in args])
        if isinstance(node, exp.DateDiff) and node.args.get("date_part_boundary"):
            return _boundary_date_diff(node, source, strict)
        if isinstance(node, exp.Select) and node.args.get("qualify") and any(s.is_star for s in node.selects):
            return _qualify_keeping_columns(node)
        return node

    expression = expression.transform(rewrite)
    if strict and function_exists is not None:
        for function in expression.find_all(exp.Anonymous):
            if not function_exists(function.name):
                raise _refuse(
                    source, f"{function.name}()",
                    "a DuckDB function sqlglot does not translate, and Spark has no function of that name",
                )
    return expression


def _range_table(node: exp.Table) -> exp.Expr:
    """DuckDB's range(a, b) / generate_series(a, b) in FROM as Spark's range(a, b) table
    function: one BIGINT column, end exclusive (generate_series' inclusive end plus one). The
    column keeps DuckDB's name for it when the query gives none (Spark would call it id)."""
    from sqlglot import exp

    series: exp.GenerateSeries = node.this
    start, end, step = series.args.get("start"), series.args.get("end"), series.args.get("step")
    if not series.args.get("is_end_exclusive"):
        end = exp.Add(this=end.copy(), expression=exp.Literal.number(1))
    arguments = [start.copy(), end.copy()] + ([step.copy()] if step is not None else [])
    alias = node.args.get("alias")
    default_column = "range" if series.args.get("is_end_exclusive") else "generate_series"
    if alias is None:
        alias = exp.TableAlias(this=exp.to_identifier(default_column), columns=[exp.to_identifier(default_column)])
    elif not alias.columns:
        alias = alias.copy()
        alias.set("columns", [exp.to_identifier(default_column)])
    return exp.Table(this=exp.Anonymous(this="range", expressions=arguments), alias=alias)


def _boundary_date_diff(node: exp.DateDiff, source: str, strict: bool) -> exp.Expr:
    """DuckDB's date_diff(unit, a, b) counts the unit's boundaries between a and b; Spark's
    DATEDIFF(unit, ...) (timestampdiff) counts whole units, so 2024-01-31 .. 2024-02-01 is one
    month in DuckDB and none in Spark. Written out as calendar arithmetic, as a BIGINT like
    DuckDB's result."""
    from sqlglot import exp

    unit = str(node.args.get("unit").name if node.args.get("unit") is not None else "DAY").upper()
    end, start = node.this, node.expression

    def part(function, value):
        return function(this=value.copy())

    def years():
        return exp.Sub(this=part(exp.Year, end), expression=part(exp.Year, start))

    if unit == "DAY":
        # Spark's two-argument DATEDIFF(end, start): days between the two dates.
        result = exp.DateDiff(
            this=exp.cast(end.copy(), exp.DataType.build("DATE")),
            expression=exp.cast(start.copy(), exp.DataType.build("DATE")),
        )
    elif unit == "YEAR":
        result = years()
    elif unit in ("MONTH", "QUARTER"):
        per_year, function = (12, exp.Month) if unit == "MONTH" else (4, exp.Quarter)
        result = exp.Add(
            this=exp.Mul(this=exp.paren(years()), expression=exp.Literal.number(per_year)),
            expression=exp.paren(exp.Sub(this=part(function, end), expression=part(function, start))),
        )
    else:
        if strict:
            raise _refuse(
                source, f"date_diff('{unit.lower()}', ...)",
                f"DuckDB counts {unit.lower()} boundaries crossed, Spark's timestampdiff whole {unit.lower()}s",
            )
        return node
    return exp.cast(exp.paren(result), exp.DataType.build("BIGINT"))


def _qualify_keeping_columns(node: exp.Select) -> exp.Expr:
    """QUALIFY over ``SELECT t.*``: sqlglot's rewrite projects the window into a subquery and
    selects ``*`` from it, which brings the helper column (_w) along, so the two sides of a
    UNION no longer line up. The outer select leaves the helper columns out (Spark's
    ``* EXCEPT``)."""
    from sqlglot import exp
    from sqlglot.transforms import eliminate_qualify

    before = set(node.named_selects)
    rewritten = eliminate_qualify(node)
    inner = rewritten.find(exp.Subquery).this
    helpers = [name for name in inner.named_selects if name and name not in before]
    if helpers and len(rewritten.selects) == 1 and rewritten.selects[0].is_star:
        rewritten.set("expressions", [exp.Star(except_=[exp.column(name) for name in helpers])])
    return rewritten
