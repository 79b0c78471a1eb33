"""Column lineage of a SQL model: for each output column, the upstream columns it derives from.

Computed at materialization time, when DuckDB can tell the columns of every upstream
table, so ``SELECT *`` and unqualified columns are expanded correctly by sqlglot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import dagster as dg

from churn_assets.sql_models.loader import SqlModel

logger = logging.getLogger(__name__)


def upstream_columns(con, deps: tuple[dg.AssetKey, ...]) -> dict[dg.AssetKey, dict[str, str]]:
    """Column names and types of every upstream relation present in the warehouse."""
    found: dict[dg.AssetKey, dict[str, str]] = {}
    for key in deps:
        schema, table = key.path[0], key.path[-1]
        rows = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE lower(table_schema) = lower(?) AND lower(table_name) = lower(?) "
            "ORDER BY ordinal_position",
            [schema, table],
        ).fetchall()
        if rows:
            found[key] = {name: dtype for name, dtype in rows}
    return found


def column_lineage(
    model: SqlModel, columns_by_relation: Mapping[dg.AssetKey, Mapping[str, str]]
) -> dg.TableColumnLineage | None:
    """Lineage per output column; columns derived from no upstream column (literals,
    count(*)) are left out. Returns None when sqlglot cannot follow the SQL."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.lineage import lineage
    from sqlglot.optimizer.qualify import qualify
    from sqlglot.optimizer.scope import build_scope

    schema: dict[str, dict[str, dict[str, str]]] = {}
    for key, columns in columns_by_relation.items():
        schema.setdefault(key.path[0], {})[key.path[-1]] = dict(columns)
    key_by_relation = {(k.path[0].lower(), k.path[-1].lower()): k for k in model.deps}

    try:
        expression = sqlglot.parse_one(model.sql, read="duckdb")
        qualified = qualify(
            expression, schema=schema, dialect="duckdb", validate_qualify_columns=False
        )
        scope = build_scope(qualified)
        if scope is None:
            return None
        output_columns = list(dict.fromkeys(s.alias_or_name for s in qualified.selects))
    except Exception as error:  # sqlglot raises many error types on SQL it cannot follow
        logger.warning("column lineage unavailable for %s: %s", model.path, error)
        return None

    # All columns in one walk share sqlglot's cache; per column only if that walk fails.
    try:
        nodes = lineage(None, qualified, schema=schema, dialect="duckdb", scope=scope, copy=False)
    except Exception:
        nodes = {}
        for column in output_columns:
            if not column or column == "*":
                continue
            try:
                nodes[column] = lineage(column, qualified, schema=schema, dialect="duckdb", scope=scope)
            except Exception as error:
                logger.warning("no lineage for %s.%s: %s", model.relation, column, error)

    deps_by_column: dict[str, list[dg.TableColumnDep]] = {}
    for column, node in nodes.items():
        deps: dict[tuple[dg.AssetKey, str], None] = {}
        for step in node.walk():
            if step.downstream or not isinstance(step.source, exp.Table):
                continue
            key = key_by_relation.get((step.source.db.lower(), step.source.name.lower()))
            if key is None:
                continue
            upstream_column = exp.to_column(step.name).name if step.name else ""
            if upstream_column and upstream_column != "*":
                deps[(key, upstream_column)] = None
        if deps:
            deps_by_column[column] = [
                dg.TableColumnDep(asset_key=key, column_name=name) for key, name in deps
            ]
    if not deps_by_column:
        return None
    return dg.TableColumnLineage(deps_by_column=deps_by_column)
