"""Point-in-time (leakage) check for a time-partitioned SQL model.

For a sample of months M and rows of the stored model, the model is recomputed as if the
warehouse had never seen anything dated on or after the first day of M+1, and the
recomputed rows must equal the stored ones. A feature that peeks at the future (a window
without its upper bound, a "latest" that is not "latest as of M") changes when the future
is removed, so it shows up as a mismatch.

How: the model's SQL is parsed with sqlglot and every schema-qualified relation it reads is
replaced by a CTE over a truncated copy: ``SELECT * FROM rel WHERE <time_column> < $cutoff``.
Upstream view/table models of the same project are inlined the same way (their own SQL,
rewritten recursively), so truncation happens at the true sources (the raw tables) and a
leak inside staging is caught too. Everything runs as one read-only statement per month
with bound parameters: no temporary objects, so the check works on a read-only connection.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    from sqlglot import exp

    from churn_assets.sql_models.loader import SqlModel
    from churn_assets.sql_models.project import SqlProject

CUTOFF_PARAMETER = "pit_cutoff"
DEFAULT_MONTHS = 4
MAX_REPORTED_MISMATCHES = 20
INLINED_KINDS = ("view", "table")


class LeakageCheckError(ValueError):
    """The check cannot run: unknown model, missing time column, table not materialized..."""


@dataclass(frozen=True)
class LeakageResult:
    passed: bool
    rows_compared: int
    mismatches: int
    sample_of_mismatches: list[dict[str, Any]]
    months: list[str] = field(default_factory=list)
    # Relation -> the time column it was truncated on; sources without one are read whole.
    truncated_relations: dict[str, str] = field(default_factory=dict)
    untruncated_relations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verdict = "point-in-time correct" if self.passed else "LEAKAGE"
        text = (
            f"{verdict}: {self.rows_compared} rows compared over {len(self.months)} month(s) "
            f"({', '.join(m[:7] for m in self.months)}), {self.mismatches} mismatching"
        )
        if self.untruncated_relations:
            text += f"; read untruncated (no time column): {', '.join(self.untruncated_relations)}"
        return text

    def as_metadata(self) -> dict[str, Any]:
        """JSON-friendly values for an AssetCheckResult's metadata."""
        return {
            "rows_compared": self.rows_compared,
            "mismatches": self.mismatches,
            "months": [m[:7] for m in self.months],
            "truncated_relations": self.truncated_relations,
            "untruncated_relations": self.untruncated_relations,
            "sample_of_mismatches": self.sample_of_mismatches,
        }


def project_models(project: SqlProject | Path | str) -> tuple[dict[str, SqlModel], Path]:
    """The loader's models keyed by lower-case ``schema.table``, and the project's sql dir.

    ``project`` is what ``load_sql_project`` returns, or a sql folder, which is then read by
    ``load_sql_project`` (the raw tables as external assets, no parse cache). The check has
    no reader of its own: every model the loader turns into an asset (subfolders, ``.yml``
    or ``.yaml`` properties) is a model here.
    """
    if isinstance(project, (str, Path)):
        from churn_assets.source.raw_assets import RAW_ASSET_KEYS
        from churn_assets.sql_models.project import load_sql_project

        project = load_sql_project(Path(project), RAW_ASSET_KEYS, use_cache=False)
    return {m.relation.lower(): m for m in project.models}, project.sql_dir


def unique_columns(model: SqlModel) -> list[str] | None:
    """The columns that identify a row: a model-level ``unique: {columns: [...]}`` test,
    else the first column with a ``unique`` test; None when there is neither."""
    column_tests = sum(len(column.tests) for column in model.columns)
    for test in model.tests[column_tests:]:  # model-level tests follow the column-level ones
        if test.kind == "unique" and test.args.get("columns"):
            return list(test.args["columns"])
    for column in model.columns:
        if any(test.kind == "unique" for test in column.tests):
            return [column.name]
    return None


def _source_time_columns() -> dict[str, str]:
    from churn_assets.source.contract import RAW_TABLES

    return {f"raw.{name}": table.time_column for name, table in RAW_TABLES.items()}


class _Rewriter:
    """Rewrites model SQL so every source it reaches is truncated at ``$pit_cutoff``."""

    def __init__(self, models: dict[str, SqlModel], time_columns: dict[str, str], inline: bool):
        self.models = models
        self.time_columns = time_columns
        self.inline = inline
        self.ctes: dict[str, exp.Expression] = {}  # relation -> CTE body, dependencies first
        self.truncated: dict[str, str] = {}
        self.untruncated: list[str] = []

    @staticmethod
    def cte_name(relation: str) -> str:
        return "__pit_" + relation.replace(".", "__")

    def rewrite(self, sql: str, model: str, stack: tuple[str, ...] = ()) -> exp.Expression:
        import sqlglot
        from sqlglot import exp

        try:
            tree = sqlglot.parse_one(sql, read="duckdb")
        except sqlglot.errors.ParseError as error:
            raise LeakageCheckError(f"{model}: SQL does not parse: {error}") from error
        for table in list(tree.find_all(exp.Table)):
            if not table.db or not isinstance(table.this, exp.Identifier):
                continue  # a CTE reference or a table function
            relation = f"{table.db}.{table.name}".lower()
            self._define(relation, stack + (model,))
            alias = table.alias or table.name
            table.replace(
                exp.Table(
                    this=exp.to_identifier(self.cte_name(relation)),
                    alias=exp.TableAlias(this=exp.to_identifier(alias)),
                )
            )
        return tree

    def _define(self, relation: str, stack: tuple[str, ...]) -> None:
        from sqlglot import exp

        if relation in self.ctes:
            return
        if relation in stack:
            raise LeakageCheckError(f"circular model references: {' -> '.join(stack + (relation,))}")
        upstream = self.models.get(relation)
        kind = upstream.config.materialized if upstream else None
        if self.inline and upstream is not None and kind in INLINED_KINDS:
            self.ctes[relation] = self.rewrite(upstream.sql, relation, stack)
            return
        time_column = self.time_columns.get(relation)
        if time_column is None and upstream is not None:
            time_column = upstream.config.time_column or upstream.config.partition_by
        schema, table = relation.split(".")
        body = exp.select("*").from_(exp.table_(table, db=schema))
        if time_column:
            body = body.where(
                exp.LT(this=exp.column(time_column), expression=exp.Placeholder(this=CUTOFF_PARAMETER))
            )
            self.truncated[relation] = time_column
        else:
            self.untruncated.append(relation)
        self.ctes[relation] = body

    def with_truncated_sources(self, tree: exp.Expression) -> exp.Expression:
        from sqlglot import exp

        key = "with_" if "with_" in exp.Select.arg_types else "with"
        own = tree.args.get(key)
        definitions = [
            exp.CTE(this=body, alias=exp.TableAlias(this=exp.to_identifier(self.cte_name(rel))))
            for rel, body in self.ctes.items()
        ]
        tree.set(key, exp.With(expressions=definitions + (own.expressions if own else [])))
        return tree


def point_in_time_sql(
    project: SqlProject | Path | str,
    model: str = "features.customer_features",
    *,
    time_columns: dict[str, str] | None = None,
    inline_upstream_models: bool = True,
) -> tuple[str, dict[str, str], list[str]]:
    """The model's SQL with every source truncated at ``$pit_cutoff`` (exclusive).

    Returns (sql, truncated relation -> time column, relations read untruncated).
    ``time_columns`` overrides or adds the time column of a relation; by default raw
    tables use the contract's time column and models their YAML ``time_column``.
    ``project``: see ``project_models``.
    """
    models, sql_dir = project_models(project)
    return _point_in_time_sql(models, sql_dir, model, time_columns, inline_upstream_models)


def _target(models: dict[str, SqlModel], sql_dir: Path, model: str) -> SqlModel:
    if model.lower() not in models:
        raise LeakageCheckError(f"no model {model!r} in {sql_dir} (have: {', '.join(sorted(models))})")
    return models[model.lower()]


def _point_in_time_sql(models, sql_dir, model, time_columns, inline_upstream_models):
    target = _target(models, sql_dir, model)
    columns = {**_source_time_columns(), **(time_columns or {})}
    rewriter = _Rewriter(models, columns, inline_upstream_models)
    tree = rewriter.rewrite(target.sql, target.relation.lower())
    sql = rewriter.with_truncated_sources(tree).sql(dialect="duckdb")
    return sql, rewriter.truncated, rewriter.untruncated


def _month_start(value: str | dt.date) -> dt.date:
    if isinstance(value, dt.date):
        return value.replace(day=1)
    parts = str(value).strip().split("-")
    try:
        return dt.date(int(parts[0]), int(parts[1]), 1)
    except (IndexError, ValueError) as error:
        raise LeakageCheckError(f"not a month: {value!r} (expected YYYY-MM)") from error


def _next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _spread(items: list, count: int) -> list:
    """``count`` items evenly spread over ``items``, always including the last."""
    if len(items) <= count:
        return items
    step = (len(items) - 1) / (count - 1)
    return sorted({items[round(i * step)] for i in range(count)})


def check_point_in_time(
    con: duckdb.DuckDBPyConnection,
    project: SqlProject | Path | str,
    model: str = "features.customer_features",
    months: list[str] | None = None,
    sample: int | None = 500,
    *,
    seed: int = 0,
    time_columns: dict[str, str] | None = None,
    inline_upstream_models: bool = True,
    tolerance: float = 1e-9,
) -> LeakageResult:
    """Recompute sampled rows of ``model`` with all data dated after their month removed.

    ``months``: 'YYYY-MM' strings; by default up to four stored months spread over the
    table (the last one included). ``sample``: rows compared per month (None = all).
    The model's month column is its YAML ``partition_by`` (or ``time_column``); rows are
    matched on its model-level ``unique`` columns, else compared as whole rows.
    Floating-point values match within ``tolerance`` (relative and absolute), because
    parallel sums in DuckDB may differ in the last bits between runs.
    ``project``: the loader's project object or a sql folder (see ``project_models``).
    """
    models, sql_dir = project_models(project)
    sql, truncated, untruncated = _point_in_time_sql(
        models, sql_dir, model, time_columns, inline_upstream_models
    )
    target = _target(models, sql_dir, model)
    month_column = target.config.partition_by or target.config.time_column
    if not month_column:
        raise LeakageCheckError(
            f"{model}: needs config partition_by or time_column in its YAML to know which "
            "month a row belongs to"
        )
    stored_months = _stored_months(con, model, month_column)
    if months is None:
        chosen = _spread(stored_months, DEFAULT_MONTHS)
    else:
        chosen = sorted({_month_start(m) for m in months})
        missing = [m.isoformat()[:7] for m in chosen if m not in stored_months]
        if missing:
            raise LeakageCheckError(f"{model} holds no rows for month(s) {', '.join(missing)}")

    keys = unique_columns(target)
    compared = mismatching = 0
    examples: list[dict[str, Any]] = []
    for month in chosen:
        stored, recomputed, stored_total, recomputed_total = _month_rows(
            con, sql, model, month_column, month, keys, sample, seed
        )
        if stored_total != recomputed_total:
            mismatching += abs(stored_total - recomputed_total)
            examples.append(
                {
                    month_column: month.isoformat(),
                    "problem": "row count differs",
                    "stored": stored_total,
                    "recomputed": recomputed_total,
                }
            )
        rows, bad, found = _compare(stored, recomputed, keys, tolerance)
        compared += rows
        mismatching += bad
        examples.extend(found[: MAX_REPORTED_MISMATCHES - len(examples)])
    return LeakageResult(
        passed=mismatching == 0,
        rows_compared=compared,
        mismatches=mismatching,
        sample_of_mismatches=examples[:MAX_REPORTED_MISMATCHES],
        months=[m.isoformat() for m in chosen],
        truncated_relations=truncated,
        untruncated_relations=untruncated,
    )


def _stored_months(con, model: str, month_column: str) -> list[dt.date]:
    import duckdb

    try:
        rows = con.execute(
            f"SELECT DISTINCT CAST(date_trunc('month', {month_column}) AS DATE) AS m "
            f"FROM {model} ORDER BY m"
        ).fetchall()
    except duckdb.CatalogException as error:
        raise LeakageCheckError(f"{model} is not materialized in this warehouse: {error}") from error
    return [row[0] for row in rows]


def _month_rows(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    model: str,
    month_column: str,
    month: dt.date,
    keys: list[str] | None,
    sample: int | None,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """Stored and recomputed rows of one month (the sampled keys only) and both row counts."""
    params = {"partition_start": month, "partition_end": _next_month(month), CUTOFF_PARAMETER: _next_month(month)}
    used = {name: value for name, value in params.items() if f"${name}" in sql}
    in_month = f"{month_column} >= $partition_start AND {month_column} < $partition_end"
    month_params = {"partition_start": params["partition_start"], "partition_end": params["partition_end"]}
    stored_total = con.execute(f"SELECT count(*) FROM {model} WHERE {in_month}", month_params).fetchall()[0][0]
    recomputed_month = f"SELECT * FROM ({sql}) AS recomputed WHERE {in_month}"
    all_params = {**used, **month_params}
    if keys is None or sample is None:
        stored = con.execute(f"SELECT * FROM {model} WHERE {in_month}", month_params).df()
        recomputed = con.execute(recomputed_month, all_params).df()
        return stored, recomputed, stored_total, len(recomputed)
    key_list = ", ".join(keys)
    sampled = (
        f"SELECT {key_list} FROM {model} WHERE {in_month} "
        f"ORDER BY hash({key_list}, {int(seed)}) LIMIT {int(sample)}"
    )
    stored = con.execute(
        f"SELECT s.* FROM {model} AS s SEMI JOIN ({sampled}) AS k USING ({key_list}) "
        f"WHERE {in_month}",
        month_params,
    ).df()
    recomputed = con.execute(
        f"SELECT r.* FROM (SELECT *, count(*) OVER () AS __pit_rows FROM ({recomputed_month})) AS r "
        f"SEMI JOIN ({sampled}) AS k USING ({key_list})",
        all_params,
    ).df()
    if recomputed.empty:
        recomputed_total = con.execute(f"SELECT count(*) FROM ({recomputed_month})", all_params).fetchall()[0][0]
    else:
        recomputed_total = int(recomputed["__pit_rows"].iloc[0])
    return stored, recomputed.drop(columns="__pit_rows"), stored_total, recomputed_total


def _compare(
    stored: pd.DataFrame, recomputed: pd.DataFrame, keys: list[str] | None, tolerance: float
) -> tuple[int, int, list[dict[str, Any]]]:
    """(rows compared, rows that differ, examples) for two frames of the same month."""
    import numpy as np
    import pandas as pd

    if list(stored.columns) != list(recomputed.columns):
        raise LeakageCheckError(
            "the stored table's columns differ from the model's current output "
            f"(stored: {list(stored.columns)}, model: {list(recomputed.columns)}); "
            "re-materialize the model before checking it"
        )
    if keys is None:
        keys = list(stored.columns)
        stored = stored.assign(__occurrence=stored.groupby(keys, dropna=False).cumcount())
        recomputed = recomputed.assign(__occurrence=recomputed.groupby(keys, dropna=False).cumcount())
        keys = keys + ["__occurrence"]
    merged = stored.merge(recomputed, on=keys, how="outer", suffixes=("", "__new"), indicator=True)
    values = [c for c in stored.columns if c not in keys]
    differs = pd.Series(merged["_merge"] != "both", index=merged.index)
    column_diffs: dict[str, pd.Series] = {}
    for column in values:
        old, new = merged[column], merged[f"{column}__new"]
        both_null = old.isna() & new.isna()
        if pd.api.types.is_float_dtype(old) or pd.api.types.is_float_dtype(new):
            a = pd.to_numeric(old, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            b = pd.to_numeric(new, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            same = np.isclose(a, b, rtol=tolerance, atol=tolerance)
            same = pd.Series(same, index=merged.index)
        else:
            same = (old == new).fillna(False).astype(bool)
        diff = ~(same | both_null) & (merged["_merge"] == "both")
        column_diffs[column] = diff
        differs |= diff
    examples = []
    for index in merged.index[differs.to_numpy()][:MAX_REPORTED_MISMATCHES]:
        row = merged.loc[index]
        example = {k: _plain(row[k]) for k in keys if k != "__occurrence"}
        if row["_merge"] != "both":
            example["problem"] = "only in stored table" if row["_merge"] == "left_only" else "only in recomputation"
        else:
            example["columns"] = {
                c: {"stored": _plain(row[c]), "recomputed": _plain(row[f"{c}__new"])}
                for c in values
                if column_diffs[c].loc[index]
            }
        examples.append(example)
    return int((merged["_merge"] != "right_only").sum()), int(differs.sum()), examples


def _plain(value: Any) -> Any:
    """JSON-friendly scalars for metadata."""
    import pandas as pd

    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


__all__ = [
    "LeakageCheckError",
    "LeakageResult",
    "check_point_in_time",
    "point_in_time_sql",
    "project_models",
    "unique_columns",
]
