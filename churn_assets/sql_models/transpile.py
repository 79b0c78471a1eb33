"""Translate the DuckDB SQL models to other engines with sqlglot.

The window parameters come out in each engine's own named-parameter syntax, so the same
model runs with that engine's parameter binding:

- spark:     ``:partition_start``  (``spark.sql(query, args={"partition_start": ...})``)
- snowflake: ``:partition_start``  (bind variables in Snowflake Scripting / the SQL API)
- bigquery:  ``@partition_start``  (query parameters)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from churn_assets.sql_models.loader import (
    SqlProjectError,
    discover_model_files,
    find_model_file,
    read_sql,
)

TRANSPILE_DIALECTS = ("spark", "snowflake", "bigquery")


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


def transpile_sql(sql: str, dialect: str, *, strict: bool = False, source: str = "<sql>") -> str:
    """DuckDB SQL rewritten for ``dialect``.

    With ``strict`` a construct the target cannot express raises SqlProjectError instead
    of being passed through as is.
    """
    import sqlglot
    from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError
    from sqlglot.transforms import eliminate_window_clause

    target = _check_dialect(dialect)
    level = ErrorLevel.RAISE if strict else ErrorLevel.WARN
    try:
        # Named windows (``WINDOW w AS (...)``) are written out at each ``OVER w``: not
        # every engine has the clause, and sqlglot 30's BigQuery generator fails on it.
        statements = [
            statement.transform(eliminate_window_clause).sql(target, pretty=True, unsupported_level=level)
            for statement in sqlglot.parse(sql, read="duckdb")
            if statement is not None
        ]
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
