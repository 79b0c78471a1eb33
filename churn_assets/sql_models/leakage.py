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
ENTITIES_PARAMETER = "pit_entities"
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
    # "full month", or "sampled <entity>": only the sampled entities recomputed, from
    # sources restricted to them (restricted_relations) as row_depends_on declares.
    method: str = "full month"
    restricted_relations: list[str] = field(default_factory=list)
    # Sampled rows of the first failing month that differ only when the sources are
    # restricted to the sample (that month is recomputed unrestricted to find out): the
    # row_depends_on declaration is wrong for them. declaration_wrong: and none of that
    # month's mismatches is a leak.
    cross_entity_mismatches: int = 0
    declaration_wrong: bool = False
    diagnosis: str | None = None

    def summary(self) -> str:
        if self.passed:
            verdict = "point-in-time correct"
        elif self.declaration_wrong:
            verdict = "WRONG row_depends_on DECLARATION"
        else:
            verdict = "LEAKAGE"
        text = (
            f"{verdict}: {self.rows_compared} rows compared over {len(self.months)} month(s) "
            f"({', '.join(m[:7] for m in self.months)}, {self.method}), {self.mismatches} mismatching"
        )
        if self.diagnosis:
            text += f"; {self.diagnosis}"
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
            "method": self.method,
            "restricted_relations": self.restricted_relations,
            "cross_entity_mismatches": self.cross_entity_mismatches,
            "declaration_wrong": self.declaration_wrong,
            "diagnosis": self.diagnosis,
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


def _source_columns() -> dict[str, set[str]]:
    from churn_assets.source.contract import RAW_TABLES

    return {f"raw.{name}": {c.lower() for c in table.column_names} for name, table in RAW_TABLES.items()}


class _Rewriter:
    """Rewrites model SQL so every source it reaches is truncated at ``$pit_cutoff``.

    With ``entity`` set, a model that declares ``row_depends_on`` with that entity column
    reads the relations it uses restricted to ``entity IN $pit_entities`` as well (those
    that have the column; its declared globals whole), recursively through inlined models
    with the same declaration. An inlined model without it is computed whole and then
    restricted on its output column, which is exact whatever it computes.
    """

    def __init__(
        self,
        models: dict[str, SqlModel],
        time_columns: dict[str, str],
        inline: bool,
        entity: str | None = None,
        relation_columns: dict[str, set[str]] | None = None,
    ):
        self.models = models
        self.time_columns = time_columns
        self.inline = inline
        self.entity = entity
        self.relation_columns = relation_columns or {}
        # (relation, restricted to the sampled entities) -> CTE body, dependencies first
        self.ctes: dict[tuple[str, bool], exp.Expression] = {}
        self.truncated: dict[str, str] = {}
        self.untruncated: list[str] = []
        self.restricted: list[str] = []

    @staticmethod
    def cte_name(relation: str, restricted: bool = False) -> str:
        return "__pit_" + relation.replace(".", "__") + ("__sample" if restricted else "")

    def _declares_entity(self, model: SqlModel | None) -> bool:
        dependency = model.config.row_depends_on if model is not None else None
        return (
            self.entity is not None
            and dependency is not None
            and dependency.entity.lower() == self.entity.lower()
        )

    def _has_entity_column(self, relation: str) -> bool:
        columns = self.relation_columns.get(relation)
        if columns is None and relation in self.models:  # not stored: its YAML columns
            columns = {c.name.lower() for c in self.models[relation].columns}
        if columns is None:  # a raw table not in the warehouse: the contract's columns
            columns = _source_columns().get(relation)
        return columns is not None and self.entity is not None and self.entity.lower() in columns

    def rewrite(
        self, sql: str, model: str, stack: tuple[str, ...] = (), restricted: bool = False
    ) -> exp.Expression:
        import sqlglot
        from sqlglot import exp

        try:
            tree = sqlglot.parse_one(sql, read="duckdb")
        except sqlglot.errors.ParseError as error:
            raise LeakageCheckError(f"{model}: SQL does not parse: {error}") from error
        global_relations: set[str] = set()
        global_ctes: set[str] = set()
        if restricted:
            global_relations, global_ctes = self._globals(tree, model)
        for table in list(tree.find_all(exp.Table)):
            if not table.db or not isinstance(table.this, exp.Identifier):
                continue  # a CTE reference or a table function
            relation = f"{table.db}.{table.name}".lower()
            restrict = (
                restricted
                and relation not in global_relations
                and not (_enclosing_ctes(table) & global_ctes)
            )
            self._define(relation, stack + (model,), restrict)
            alias = table.alias or table.name
            table.replace(
                exp.Table(
                    this=exp.to_identifier(self.cte_name(relation, restrict)),
                    alias=exp.TableAlias(this=exp.to_identifier(alias)),
                )
            )
        return tree

    def _globals(self, tree: exp.Expression, model: str) -> tuple[set[str], set[str]]:
        """The declared globals of ``model``: relations it reads and CTEs of its SQL."""
        from sqlglot import exp

        dependency = self.models[model].config.row_depends_on
        reads = {
            f"{t.db}.{t.name}".lower()
            for t in tree.find_all(exp.Table)
            if t.db and isinstance(t.this, exp.Identifier)
        }
        ctes = {cte.alias.lower() for cte in tree.find_all(exp.CTE)}
        relations, names = set(), set()
        for name in dependency.globals:
            key = name.lower()
            if "." in key and key in reads:
                relations.add(key)
            elif "." not in key and key in ctes:
                names.add(key)
            else:
                what = "a relation it reads" if "." in key else "a CTE of its SQL"
                raise LeakageCheckError(
                    f"{model}: row_depends_on.globals names {name!r}, which is not {what}"
                )
        return relations, names

    def _define(self, relation: str, stack: tuple[str, ...], restricted: bool = False) -> None:
        from sqlglot import exp

        if (relation, restricted) in self.ctes:
            return
        if relation in stack:
            raise LeakageCheckError(f"circular model references: {' -> '.join(stack + (relation,))}")
        upstream = self.models.get(relation)
        kind = upstream.config.materialized if upstream else None
        if self.inline and upstream is not None and kind in INLINED_KINDS:
            if restricted and self._declares_entity(upstream):
                self.ctes[(relation, True)] = self.rewrite(upstream.sql, relation, stack, restricted=True)
            elif restricted:
                # Computed whole, then restricted on its output: exact for any SQL.
                self._define(relation, stack, restricted=False)
                self.ctes[(relation, True)] = self._restrict(
                    exp.select("*").from_(exp.to_identifier(self.cte_name(relation))), relation
                )
            else:
                self.ctes[(relation, False)] = self.rewrite(upstream.sql, relation, stack)
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
        elif relation not in self.untruncated:
            self.untruncated.append(relation)
        self.ctes[(relation, restricted)] = self._restrict(body, relation) if restricted else body

    def _restrict(self, body: exp.Select, relation: str) -> exp.Select:
        """``body`` limited to the sampled entities when ``relation`` has the entity column."""
        import sqlglot

        if not self._has_entity_column(relation):
            return body  # e.g. a lookup table: read whole, like a global
        if relation not in self.restricted:
            self.restricted.append(relation)
        return body.where(
            sqlglot.parse_one(
                f"{self.entity} IN (SELECT unnest(${ENTITIES_PARAMETER}))", read="duckdb"
            )
        )

    def with_truncated_sources(self, tree: exp.Expression) -> exp.Expression:
        from sqlglot import exp

        key = "with_" if "with_" in exp.Select.arg_types else "with"
        own = tree.args.get(key)
        definitions = [
            exp.CTE(
                this=body,
                alias=exp.TableAlias(this=exp.to_identifier(self.cte_name(rel, restricted))),
            )
            for (rel, restricted), body in self.ctes.items()
        ]
        tree.set(key, exp.With(expressions=definitions + (own.expressions if own else [])))
        return tree


def _enclosing_ctes(node: exp.Expression) -> set[str]:
    """Lower-case aliases of the CTEs ``node`` sits in."""
    from sqlglot import exp

    names = set()
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.CTE):
            names.add(parent.alias.lower())
        parent = parent.parent
    return names


def count_sql(sql: str, month_column: str) -> str:
    """``sql`` reduced to what decides its row count: the top-level SELECT keeps only its
    ``month_column`` and drops each LEFT JOIN that nothing else reads and that provably
    matches at most one row (its ON equates every column of a key the joined relation is
    unique on: a GROUP BY, DISTINCT or ``QUALIFY row_number() OVER (PARTITION BY ...) = 1``,
    carried through plain single-source selects). Such a join never changes the number of
    rows, so ``count(*)`` over the result equals ``count(*)`` over ``sql``, without
    computing the joined relations (DuckDB keeps LEFT JOINs even when nothing reads them).
    Anything it cannot prove stays, so the count is exact; unparseable shapes return ``sql``."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="duckdb")
    if not isinstance(tree, exp.Select) or tree.args.get("group") or tree.args.get("distinct"):
        return sql
    month = month_column.lower()
    kept = [p for p in tree.expressions if p.alias_or_name.lower() == month]
    if len(kept) != 1 or any(isinstance(p, exp.Star) or p.find(exp.Star) for p in tree.expressions):
        return sql
    if any(p.find(exp.AggFunc) for p in tree.expressions):
        return sql  # an aggregate without GROUP BY: one row whatever the joins
    tree.set("expressions", kept)
    joins = list(tree.args.get("joins") or [])
    for join in reversed(joins):
        target = join.this
        alias = target.alias_or_name.lower()
        if join.side.upper() != "LEFT" or join.kind.upper() not in ("", "OUTER") or join.args.get("using") or not join.args.get("on"):
            continue
        others = [e for e in tree.iter_expressions() if e is not join]
        if any(c.table.lower() == alias for e in others for c in e.find_all(exp.Column)):
            continue  # read by the projection, WHERE, QUALIFY or another join
        keys = _unique_keys(_relation_body(target), 0)
        equated = _equated_columns(join.args["on"], alias)
        if keys and any(key <= equated for key in keys):
            join.pop()
    return tree.sql(dialect="duckdb")


def _equated_columns(on: exp.Expression, alias: str) -> set[str]:
    """Columns of ``alias`` that a conjunct of ``on`` equates to something not of ``alias``."""
    from sqlglot import exp

    conjuncts = list(on.flatten()) if isinstance(on, exp.And) else [on]
    columns = set()
    for conjunct in conjuncts:
        if not isinstance(conjunct, exp.EQ):
            continue
        for mine, other in ((conjunct.this, conjunct.expression), (conjunct.expression, conjunct.this)):
            if (
                isinstance(mine, exp.Column)
                and mine.table.lower() == alias
                and all(c.table.lower() != alias for c in other.find_all(exp.Column))
            ):
                columns.add(mine.name.lower())
    return columns


def _relation_body(node: exp.Expression) -> exp.Expression | None:
    """The query a FROM/JOIN item reads: a subquery's, or the CTE its name refers to."""
    from sqlglot import exp

    if isinstance(node, exp.Subquery):
        return node.this
    if not isinstance(node, exp.Table) or node.db:
        return None
    name = node.name.lower()
    scope = node.parent
    while scope is not None:  # the nearest WITH that defines the name
        with_ = scope.args.get("with_") or scope.args.get("with") if isinstance(scope, exp.Query) else None
        if with_ is not None:
            for cte in with_.expressions:
                if cte.alias.lower() == name:
                    return cte.this
        scope = scope.parent
    return None


def _output_names(select: exp.Select, expressions: list[exp.Expression]) -> set[str] | None:
    """Output column names of ``select`` that are exactly ``expressions`` (None: one is not output)."""
    names = set()
    for expression in expressions:
        text = expression.sql(dialect="duckdb").lower()
        match = [
            p.alias_or_name.lower() for p in select.expressions
            if (p.this if p.alias else p).sql(dialect="duckdb").lower() == text
        ]
        if not match:
            return None
        names.add(match[0])
    return names


def _unique_keys(body: exp.Expression | None, depth: int) -> list[set[str]]:
    """Column sets ``body`` is unique on, as far as its shape proves it."""
    from sqlglot import exp

    if not isinstance(body, exp.Select) or depth > 20:
        return []
    keys = []
    if body.args.get("group") and not body.args["group"].args.get("rollup") and not body.args["group"].args.get("cube"):
        names = _output_names(body, list(body.args["group"].expressions))
        if names:
            keys.append(names)
    if body.args.get("distinct") and not body.args["distinct"].args.get("on"):
        keys.append({p.alias_or_name.lower() for p in body.expressions})
    qualify = body.args.get("qualify")
    condition = qualify.this if qualify is not None else None
    if (
        isinstance(condition, exp.EQ)
        and isinstance(condition.this, exp.Window)
        and isinstance(condition.this.this, exp.RowNumber)
        and condition.expression.sql() == "1"
        and condition.this.args.get("partition_by")
    ):
        names = _output_names(body, list(condition.this.args["partition_by"]))
        if names:
            keys.append(names)
    # A filter or a window over one relation keeps its keys, under the names it outputs.
    source = body.args.get("from_") or body.args.get("from")
    if source is not None and not body.args.get("joins") and not body.args.get("group") and not body.find(exp.Unnest):
        renamed = {}
        for p in body.expressions:
            inner = p.this if p.alias else p
            if isinstance(inner, exp.Column):
                renamed.setdefault(inner.name.lower(), p.alias_or_name.lower())
        for key in _unique_keys(_relation_body(source.this), depth + 1):
            if key <= set(renamed):
                keys.append({renamed[k] for k in key})
    return keys


def point_in_time_sql(
    project: SqlProject | Path | str,
    model: str = "features.customer_features",
    *,
    time_columns: dict[str, str] | None = None,
    inline_upstream_models: bool = True,
    sampled_entities: bool = False,
    relation_columns: dict[str, set[str]] | None = None,
) -> tuple[str, dict[str, str], list[str]]:
    """The model's SQL with every source truncated at ``$pit_cutoff`` (exclusive).

    Returns (sql, truncated relation -> time column, relations read untruncated).
    ``time_columns`` overrides or adds the time column of a relation; by default raw
    tables use the contract's time column and models their YAML ``time_column``.
    ``sampled_entities``: for a model that declares ``row_depends_on``, its sources are also
    restricted to ``<entity> IN $pit_entities`` (a list parameter), as described on
    ``_Rewriter``; ``relation_columns`` (lower-case relation -> lower-case column names,
    default: the YAML columns of models) says which relations have the entity column.
    ``project``: see ``project_models``.
    """
    models, sql_dir = project_models(project)
    target = _target(models, sql_dir, model)
    if sampled_entities and target.config.row_depends_on is None:
        raise LeakageCheckError(f"{model}: declares no row_depends_on, so it has no entity to sample")
    sql, truncated, untruncated, _ = _point_in_time_sql(
        models, sql_dir, model, time_columns, inline_upstream_models,
        entity=target.config.row_depends_on.entity if sampled_entities else None,
        relation_columns=relation_columns,
    )
    return sql, truncated, untruncated


def _target(models: dict[str, SqlModel], sql_dir: Path, model: str) -> SqlModel:
    if model.lower() not in models:
        raise LeakageCheckError(f"no model {model!r} in {sql_dir} (have: {', '.join(sorted(models))})")
    return models[model.lower()]


def _point_in_time_sql(
    models, sql_dir, model, time_columns, inline_upstream_models, entity=None, relation_columns=None
):
    target = _target(models, sql_dir, model)
    columns = {**_source_time_columns(), **(time_columns or {})}
    rewriter = _Rewriter(models, columns, inline_upstream_models, entity, relation_columns)
    tree = rewriter.rewrite(target.sql, target.relation.lower(), restricted=entity is not None)
    sql = rewriter.with_truncated_sources(tree).sql(dialect="duckdb")
    return sql, rewriter.truncated, rewriter.untruncated, rewriter.restricted


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
    full_recompute: bool = False,
) -> LeakageResult:
    """Recompute sampled rows of ``model`` with all data dated after their month removed.

    ``months``: 'YYYY-MM' strings; by default up to four stored months spread over the
    table (the last one included). ``sample``: per month, the entities compared when the
    model declares ``row_depends_on`` (all their rows of the month), else the rows compared
    (None = all rows, recomputed in full).
    The model's month column is its YAML ``partition_by`` (or ``time_column``); rows are
    matched on its model-level ``unique`` columns, else compared as whole rows.
    Floating-point values match within ``tolerance`` (relative and absolute), because
    parallel sums in DuckDB may differ in the last bits between runs.
    ``project``: the loader's project object or a sql folder (see ``project_models``).

    With ``row_depends_on: {entity: E}`` declared (and ``full_recompute`` false) only the
    sampled entities are recomputed: every source is truncated at the cutoff and restricted
    to ``E IN (sample)``; the month's row count is compared with a separate count over the
    recomputed month (every entity), which needs no feature column. A row that really
    depends on other entities' rows (a rank, an average over all customers) then differs
    from the stored row; the first mismatching month is recomputed for the same entities
    from unrestricted sources to tell such a wrong declaration from a leak.
    ``full_recompute=True`` recomputes every month in full (the way without a declaration).
    """
    models, sql_dir = project_models(project)
    target = _target(models, sql_dir, model)
    sql, truncated, untruncated, _ = _point_in_time_sql(
        models, sql_dir, model, time_columns, inline_upstream_models
    )
    month_column = target.config.partition_by or target.config.time_column
    if not month_column:
        raise LeakageCheckError(
            f"{model}: needs config partition_by or time_column in its YAML to know which "
            "month a row belongs to"
        )
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise LeakageCheckError(f"sample must be a positive number of rows or None (all), got {sample!r}")
    stored_months = _stored_months(con, model, month_column)
    if months is None:
        chosen = _spread(stored_months, DEFAULT_MONTHS)
    else:
        chosen = sorted({_month_start(m) for m in months})
        missing = [m.isoformat()[:7] for m in chosen if m not in stored_months]
        if missing:
            raise LeakageCheckError(f"{model} holds no rows for month(s) {', '.join(missing)}")

    keys = unique_columns(target)
    dependency = target.config.row_depends_on
    sampled = dependency is not None and sample is not None and not full_recompute
    sampled_sql, counting_sql, restricted = None, None, []
    if sampled:
        # The count reads the model's direct inputs truncated at their time columns (stored
        # upstream models are not recomputed from raw: deduplicating all history again is
        # most of the cost), with the joins that cannot change it dropped.
        direct_sql = sql if not inline_upstream_models else _point_in_time_sql(
            models, sql_dir, model, time_columns, False
        )[0]
        counting_sql = count_sql(direct_sql, month_column)
        sampled_sql, _, _, restricted = _point_in_time_sql(
            models, sql_dir, model, time_columns, inline_upstream_models,
            entity=dependency.entity, relation_columns=_relation_columns(con),
        )
    compared = mismatching = cross_entity = 0
    declaration_wrong = False
    examples: list[dict[str, Any]] = []
    diagnosis = None
    for month in chosen:
        entities = (
            _sample_entities(con, model, month_column, month, dependency.entity, sample, seed)
            if sampled else []
        )
        if entities:
            stored, recomputed, stored_total, recomputed_total = _sampled_month_rows(
                con, counting_sql, sampled_sql, model, month_column, month, dependency.entity, entities
            )
        else:
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
        if entities and bad and diagnosis is None:
            # Leak or wrong declaration? The same entities from unrestricted sources.
            unrestricted = _entity_rows(con, sql, month_column, month, dependency.entity, entities)
            _, still_bad, _ = _compare(stored, unrestricted, keys, tolerance)
            cross_entity = max(bad - still_bad, 0)
            diagnosis = _diagnosis(model, dependency.entity, month, bad, still_bad)
            declaration_wrong = still_bad == 0
            if declaration_wrong:
                found = [{**f, "problem": "differs only when the sources are restricted to the "
                                          "sampled entities"} for f in found]
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
        method=f"sampled {dependency.entity}" if sampled else "full month",
        restricted_relations=restricted,
        cross_entity_mismatches=cross_entity,
        declaration_wrong=declaration_wrong,
        diagnosis=diagnosis,
    )


def _diagnosis(model: str, entity: str, month: dt.date, bad: int, still_bad: int) -> str:
    where = f"{month.isoformat()[:7]}: {bad} sampled row(s) differ"
    if still_bad == 0:
        return (
            f"{where} only when the sources are restricted to the sampled {entity} values: "
            f"{model}'s rows depend on other {entity} values' rows, so its row_depends_on "
            f"declaration is wrong (name the shared values in row_depends_on.globals, or remove it)"
        )
    if still_bad < bad:
        return (
            f"{where}, {still_bad} of them also when recomputed from unrestricted sources (leakage); "
            f"the other {bad - still_bad} differ only when restricted to the sampled {entity} values, "
            f"so the row_depends_on declaration may be wrong too"
        )
    return f"{where} also when recomputed from unrestricted sources: leakage"


def _relation_columns(con) -> dict[str, set[str]]:
    """Lower-case relation -> its lower-case column names, from the warehouse's catalog."""
    columns: dict[str, set[str]] = {}
    for schema, table, column in con.execute(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns"
    ).fetchall():
        columns.setdefault(f"{schema}.{table}".lower(), set()).add(column.lower())
    return columns


def _month_filter(month_column: str, month: dt.date) -> tuple[str, dict[str, dt.date]]:
    return (
        f"{month_column} >= $partition_start AND {month_column} < $partition_end",
        {"partition_start": month, "partition_end": _next_month(month)},
    )


def _sample_entities(con, model, month_column, month, entity, sample, seed) -> list:
    """Up to ``sample`` distinct entity values of the stored month, in a seeded hash order."""
    in_month, params = _month_filter(month_column, month)
    rows = con.execute(
        f"SELECT {entity} FROM (SELECT DISTINCT {entity} FROM {model} "
        f"WHERE {in_month} AND {entity} IS NOT NULL) AS e "
        f"ORDER BY hash({entity}, {int(seed)}), {entity} LIMIT {int(sample)}",
        params,
    ).fetchall()
    return [row[0] for row in rows]


def _bind(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in params.items() if f"${name}" in sql}


def _entity_rows(con, sql, month_column, month, entity, entities) -> pd.DataFrame:
    """The recomputed month's rows of ``entities`` (from ``sql``, restricted or not)."""
    in_month, params = _month_filter(month_column, month)
    query = (
        f"SELECT * FROM ({sql}) AS recomputed WHERE {in_month} "
        f"AND {entity} IN (SELECT unnest(${ENTITIES_PARAMETER}))"
    )
    params = {**params, CUTOFF_PARAMETER: _next_month(month), ENTITIES_PARAMETER: entities}
    return con.execute(query, _bind(query, params)).df()


def _sampled_month_rows(con, counting_sql, sampled_sql, model, month_column, month, entity, entities):
    """Stored and recomputed rows of the sampled entities, and both months' row counts:
    the recomputed count is a count(*) over the truncated model (``count_sql`` of it),
    every entity."""
    in_month, params = _month_filter(month_column, month)
    stored_total = con.execute(f"SELECT count(*) FROM {model} WHERE {in_month}", params).fetchall()[0][0]
    stored_query = f"SELECT * FROM {model} WHERE {in_month} AND {entity} IN (SELECT unnest(${ENTITIES_PARAMETER}))"
    stored = con.execute(stored_query, {**params, ENTITIES_PARAMETER: entities}).df()
    count_query = f"SELECT count(*) FROM ({counting_sql}) AS recomputed WHERE {in_month}"
    count_params = {**params, CUTOFF_PARAMETER: _next_month(month)}
    recomputed_total = con.execute(count_query, _bind(count_query, count_params)).fetchall()[0][0]
    recomputed = _entity_rows(con, sampled_sql, month_column, month, entity, entities)
    return stored, recomputed, stored_total, recomputed_total


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
