"""Discovery and parsing of the sql/ folder: SQL files, their YAML, and the model graph.

Everything here runs when the code location loads, so it stays free of DuckDB and of
Dagster asset construction: it turns files into plain, validated ``SqlModel`` records and
fails with a message naming the offending file(s) as soon as anything is inconsistent.
sqlglot and yaml are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    from sqlglot import exp

MATERIALIZATIONS = ("view", "table", "incremental")
DEFAULT_MATERIALIZATION = "view"
# Named parameters an incremental model may use; bound by the loader at execution time.
WINDOW_PARAMETERS = ("partition_start", "partition_end")
SEVERITIES = ("error", "warn")
SINGULAR_TESTS_FOLDER = "tests"
YAML_SUFFIXES = (".yml", ".yaml")
SHARED_YAML_STEM = "_models"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONFIG_KEYS = {"materialized", "partition_by", "time_column", "row_depends_on"}
_ROW_DEPENDS_ON_KEYS = {"entity", "globals"}
_MODEL_KEYS = {"name", "description", "config", "columns", "tests"}
_COLUMN_KEYS = {"name", "description", "tests"}
_COMMON_TEST_ARGS = {"severity", "name"}
# Arguments each test type takes (beyond severity/name), and which of them are required.
_TEST_ARGS: dict[str, tuple[set[str], set[str]]] = {
    "not_null": ({"column"}, set()),
    "unique": ({"column", "columns"}, set()),
    "accepted_values": ({"column", "values"}, {"values"}),
    "relationships": ({"column", "to", "field"}, {"to", "field"}),
    "range": ({"column", "min", "max"}, set()),
    "expression": ({"expression"}, {"expression"}),
}


class SqlProjectError(ValueError):
    """The sql/ folder is inconsistent; the message names the file(s) at fault."""


@dataclass(frozen=True)
class RowDependency:
    """``config: row_depends_on: {entity: customer_id, globals: [...]}``: a row of the model
    with entity value v is computed only from the rows with ``entity = v`` of the relations
    it reads (those that have the column), plus ``globals`` read whole: relations
    (``schema.table``) or CTEs of the model's own SQL (a bare name) that compute values
    shared by every row, such as the latest observed month. The point-in-time check uses it
    to recompute only the sampled entities, and verifies it on the sample."""

    entity: str
    globals: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "globals": list(self.globals)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RowDependency | None:
        if data is None:
            return None
        return cls(entity=data["entity"], globals=tuple(data.get("globals") or ()))


@dataclass(frozen=True)
class ModelConfig:
    materialized: str = DEFAULT_MATERIALIZATION
    partition_by: str | None = None
    time_column: str | None = None
    row_depends_on: RowDependency | None = None

    @property
    def is_incremental(self) -> bool:
        return self.materialized == "incremental"

    def as_dict(self) -> dict[str, Any]:
        return {
            "materialized": self.materialized,
            "partition_by": self.partition_by,
            "time_column": self.time_column,
            "row_depends_on": self.row_depends_on.as_dict() if self.row_depends_on else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        return cls(
            materialized=data["materialized"],
            partition_by=data["partition_by"],
            time_column=data["time_column"],
            row_depends_on=RowDependency.from_dict(data.get("row_depends_on")),
        )


@dataclass(frozen=True)
class DataTest:
    """One YAML test of a model, which becomes one asset check."""

    kind: str
    check_name: str
    severity: str
    # The column a column-level test applies to (None for model-level combinations).
    column: str | None
    args: Mapping[str, Any]
    # Where the test was declared, for error messages.
    source: Path
    # Resolved asset key of a relationships test's parent table.
    to_key: dg.AssetKey | None = None

    @property
    def is_blocking(self) -> bool:
        return self.severity == "error"


@dataclass(frozen=True)
class ColumnDoc:
    name: str
    description: str | None
    tests: tuple[DataTest, ...] = ()


@dataclass(frozen=True)
class SqlModel:
    key: dg.AssetKey
    schema: str
    name: str
    path: Path
    sql: str
    config: ModelConfig
    description: str | None
    columns: tuple[ColumnDoc, ...]
    # Every YAML test of the model: column-level tests first, then model-level ones.
    tests: tuple[DataTest, ...]
    deps: tuple[dg.AssetKey, ...]
    # Named parameters the SQL uses ($partition_start, $partition_end).
    parameters: frozenset[str]
    yaml_path: Path | None = None

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def code_version(self) -> str:
        # row_depends_on only tells the point-in-time check how rows depend on each other;
        # it does not change what the model computes, so it is not part of the version.
        config = {k: v for k, v in self.config.as_dict().items() if k != "row_depends_on"}
        payload = json.dumps({"sql": self.sql, "config": config}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def column_description(self, column: str) -> str | None:
        for doc in self.columns:
            if doc.name.lower() == column.lower():
                return doc.description
        return None


@dataclass(frozen=True)
class SingularTest:
    """``sql/<schema>/tests/<name>.sql``: a SELECT returning failing rows."""

    schema: str
    name: str
    path: Path
    sql: str
    severity: str
    # The assets it is attached to as a check.
    targets: tuple[dg.AssetKey, ...]
    # Every table it reads.
    deps: tuple[dg.AssetKey, ...]

    @property
    def is_blocking(self) -> bool:
        return self.severity == "error"


@dataclass(frozen=True)
class ParsedProject:
    sql_dir: Path
    # In dependency order: every model comes after the models it reads.
    models: tuple[SqlModel, ...]
    singular_tests: tuple[SingularTest, ...]
    # raw.<name> tables referenced by SQL that no Python asset produces (ingested tables).
    external_keys: tuple[dg.AssetKey, ...]


@dataclass
class _ModelFile:
    schema: str
    name: str
    path: Path


@dataclass
class _ParsedSql:
    expression: exp.Expr
    references: list[tuple[str, str]]
    parameters: frozenset[str]


def discover_model_files(sql_dir: Path) -> list[_ModelFile]:
    """Every model file under ``sql_dir``: ``<schema>/<table>.sql`` (subfolders allowed)."""
    sql_dir = Path(sql_dir)
    if not sql_dir.is_dir():
        raise SqlProjectError(f"SQL folder {sql_dir} does not exist")
    files: list[_ModelFile] = []
    for path in sorted(sql_dir.rglob("*.sql")):
        parts = path.relative_to(sql_dir).parts
        if SINGULAR_TESTS_FOLDER in parts[1:-1]:
            continue
        if len(parts) < 2:
            raise SqlProjectError(
                f"{path}: a model must live in a schema folder, e.g. "
                f"{sql_dir}/staging/{path.name}"
            )
        schema, name = parts[0], path.stem
        for label, value in (("schema folder", schema), ("table name", name)):
            if not _IDENTIFIER.match(value):
                raise SqlProjectError(
                    f"{path}: {label} {value!r} is not a plain SQL identifier "
                    "(letters, digits and underscores, not starting with a digit)"
                )
        files.append(_ModelFile(schema=schema, name=name, path=path))
    return files


def discover_singular_test_files(sql_dir: Path) -> list[tuple[str, Path]]:
    tests: list[tuple[str, Path]] = []
    for path in sorted(Path(sql_dir).rglob("*.sql")):
        parts = path.relative_to(sql_dir).parts
        if len(parts) >= 3 and SINGULAR_TESTS_FOLDER in parts[1:-1]:
            tests.append((parts[0], path))
    return tests


def read_sql(path: Path) -> str:
    text = path.read_text(encoding="utf-8").strip()
    # A trailing semicolon would break the SQL once it is wrapped in CREATE ... AS / INSERT.
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if not text:
        raise SqlProjectError(f"{path}: the file is empty; it must hold one SELECT statement")
    return text


def parse_select(path: Path, sql: str) -> _ParsedSql:
    """Parse one SELECT and collect the tables it reads and the named parameters it uses.

    Table references come from sqlglot scopes, so CTE names, subquery aliases and table
    functions (read_parquet(...), range(...), unnest(...)) are never mistaken for tables.
    """
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError
    from sqlglot.optimizer.scope import traverse_scope

    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except ParseError as error:
        raise SqlProjectError(f"{path}: cannot parse the SQL: {error}") from error
    if len(statements) != 1:
        raise SqlProjectError(
            f"{path}: expected exactly one SELECT statement, found {len(statements)}"
        )
    expression = statements[0]
    if isinstance(expression, exp.Subquery):
        expression = expression.unnest()
    if not isinstance(expression, exp.Query):
        raise SqlProjectError(
            f"{path}: expected a SELECT statement (CTEs allowed), found "
            f"{expression.key.upper()}; the loader writes the table itself"
        )

    references: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for scope in traverse_scope(expression):
        for source in scope.sources.values():
            if not isinstance(source, exp.Table) or not isinstance(source.this, exp.Identifier):
                continue
            if source.catalog:
                raise SqlProjectError(
                    f"{path}: {source.sql('duckdb')} names a database; write "
                    "<schema>.<table> (the warehouse is the only database)"
                )
            if not source.db:
                raise SqlProjectError(
                    f"{path}: table {source.name!r} is not schema-qualified and is not a CTE; "
                    f"write <schema>.{source.name} (e.g. staging.{source.name})"
                )
            reference = (source.db, source.name)
            if reference not in seen:
                seen.add(reference)
                references.append(reference)

    parameters: set[str] = set()
    for placeholder in expression.find_all(exp.Placeholder, exp.Parameter):
        name = str(placeholder.name or "")
        if not name or name.isdigit():
            raise SqlProjectError(
                f"{path}: positional parameter {placeholder.sql('duckdb')!r}; only the named "
                f"parameters ${WINDOW_PARAMETERS[0]} and ${WINDOW_PARAMETERS[1]} are bound"
            )
        if name not in WINDOW_PARAMETERS:
            raise SqlProjectError(
                f"{path}: unknown parameter ${name}; only ${WINDOW_PARAMETERS[0]} and "
                f"${WINDOW_PARAMETERS[1]} are bound"
            )
        parameters.add(name)
    return _ParsedSql(expression=expression, references=references, parameters=frozenset(parameters))


def _load_yaml(path: Path) -> dict:
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise SqlProjectError(f"{path}: invalid YAML: {error}") from error
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise SqlProjectError(f"{path}: expected a mapping with a `models:` list at the top")
    unknown = set(document) - {"models", "version"}
    if unknown:
        raise SqlProjectError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected `models`")
    models = document.get("models") or []
    if not isinstance(models, list):
        raise SqlProjectError(f"{path}: `models` must be a list")
    return document


def _slug(text: str, limit: int = 60) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:limit].rstrip("_") or "check"


def _default_check_name(kind: str, column: str | None, args: Mapping[str, Any]) -> str:
    if kind == "unique" and args.get("columns"):
        return "unique_" + "__".join(_slug(c) for c in args["columns"])
    if kind == "relationships":
        return f"relationships_{_slug(column or '')}__{_slug(str(args['to']))}"
    if kind == "expression":
        return "expression_" + _slug(str(args["expression"]), 50)
    return f"{kind}_{_slug(column or '')}"


def _parse_test(
    entry: Any, column: str | None, model_name: str, source: Path
) -> DataTest:
    where = f"{source}: model {model_name!r}" + (f", column {column!r}" if column else "")
    if isinstance(entry, str):
        kind, raw_args = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        kind, raw_args = next(iter(entry.items()))
        raw_args = raw_args if raw_args is not None else {}
    else:
        raise SqlProjectError(
            f"{where}: a test must be a name (`- not_null`) or a one-key mapping "
            f"(`- range: {{min: 0}}`), got {entry!r}"
        )
    if kind not in _TEST_ARGS:
        raise SqlProjectError(
            f"{where}: unknown test type {kind!r}; expected one of {sorted(_TEST_ARGS)}"
        )
    if not isinstance(raw_args, dict):
        raise SqlProjectError(f"{where}: arguments of test {kind!r} must be a mapping, got {raw_args!r}")
    allowed, required = _TEST_ARGS[kind]
    unknown = set(raw_args) - allowed - _COMMON_TEST_ARGS
    if unknown:
        raise SqlProjectError(
            f"{where}: test {kind!r} does not take {sorted(unknown)}; it takes "
            f"{sorted(allowed | _COMMON_TEST_ARGS)}"
        )
    missing = required - set(raw_args)
    if missing:
        raise SqlProjectError(f"{where}: test {kind!r} needs {sorted(missing)}")

    args = dict(raw_args)
    severity = str(args.pop("severity", "error")).lower()
    if severity not in SEVERITIES:
        raise SqlProjectError(f"{where}: severity must be error or warn, got {severity!r}")
    explicit_name = args.pop("name", None)
    test_column = args.pop("column", None) or column
    if column and raw_args.get("column") and raw_args["column"] != column:
        raise SqlProjectError(f"{where}: test {kind!r} names another column {raw_args['column']!r}")

    if kind == "unique":
        if "columns" in args:
            columns = args["columns"]
            if not isinstance(columns, list) or not columns or not all(
                isinstance(c, str) for c in columns
            ):
                raise SqlProjectError(f"{where}: unique `columns` must be a non-empty list of names")
        elif test_column is None:
            raise SqlProjectError(f"{where}: a model-level unique test needs `columns: [...]`")
    elif kind in ("not_null", "accepted_values", "relationships", "range") and test_column is None:
        raise SqlProjectError(
            f"{where}: test {kind!r} must sit under a column (or name one with `column:`)"
        )
    if kind == "accepted_values":
        values = args["values"]
        if not isinstance(values, list) or not values:
            raise SqlProjectError(f"{where}: accepted_values `values` must be a non-empty list")
    if kind == "range":
        if args.get("min") is None and args.get("max") is None:
            raise SqlProjectError(f"{where}: range needs `min`, `max` or both")
        for bound in ("min", "max"):
            value = args.get(bound)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise SqlProjectError(f"{where}: range `{bound}` must be a number, got {value!r}")
    if kind == "expression":
        _validate_expression(str(args["expression"]), where)
    if kind == "relationships":
        if not isinstance(args["to"], str) or not isinstance(args["field"], str):
            raise SqlProjectError(f"{where}: relationships `to` and `field` must be names")

    if explicit_name is not None:
        if not isinstance(explicit_name, str) or not _IDENTIFIER.match(explicit_name):
            raise SqlProjectError(
                f"{where}: test name {explicit_name!r} must be letters, digits and underscores"
            )
        check_name = explicit_name
    else:
        check_name = _default_check_name(kind, test_column, args)
    return DataTest(
        kind=kind,
        check_name=check_name,
        severity=severity,
        column=test_column,
        args=args,
        source=source,
    )


def _validate_expression(expression: str, where: str) -> None:
    import sqlglot
    from sqlglot.errors import ParseError

    try:
        sqlglot.parse_one(f"SELECT 1 WHERE {expression}", read="duckdb")
    except ParseError as error:
        raise SqlProjectError(f"{where}: expression {expression!r} does not parse: {error}") from error


def _parse_config(raw: Any, where: str) -> ModelConfig:
    if raw is None:
        return ModelConfig()
    if not isinstance(raw, dict):
        raise SqlProjectError(f"{where}: `config` must be a mapping")
    unknown = set(raw) - _CONFIG_KEYS
    if unknown:
        raise SqlProjectError(
            f"{where}: unknown config key(s) {sorted(unknown)}; expected {sorted(_CONFIG_KEYS)}"
        )
    materialized = str(raw.get("materialized", DEFAULT_MATERIALIZATION)).lower()
    if materialized not in MATERIALIZATIONS:
        raise SqlProjectError(
            f"{where}: materialized must be one of {list(MATERIALIZATIONS)}, got {materialized!r}"
        )
    partition_by = raw.get("partition_by")
    if materialized == "incremental" and not partition_by:
        raise SqlProjectError(
            f"{where}: an incremental model needs `partition_by` (its DATE month column)"
        )
    if materialized != "incremental" and partition_by:
        raise SqlProjectError(
            f"{where}: `partition_by` only applies to incremental models (this one is {materialized})"
        )
    for key in ("partition_by", "time_column"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not _IDENTIFIER.match(value)):
            raise SqlProjectError(f"{where}: `{key}` must be a column name, got {value!r}")
    return ModelConfig(
        materialized=materialized,
        partition_by=partition_by,
        time_column=raw.get("time_column"),
        row_depends_on=_parse_row_depends_on(raw.get("row_depends_on"), where),
    )


def _parse_row_depends_on(raw: Any, where: str) -> RowDependency | None:
    if raw is None:
        return None
    usage = "expected `row_depends_on: {entity: <column>, globals: [<schema.table or CTE>, ...]}`"
    if not isinstance(raw, dict):
        raise SqlProjectError(f"{where}: `row_depends_on` must be a mapping; {usage}, got {raw!r}")
    unknown = set(raw) - _ROW_DEPENDS_ON_KEYS
    if unknown:
        raise SqlProjectError(f"{where}: unknown `row_depends_on` key(s) {sorted(unknown)}; {usage}")
    entity = raw.get("entity")
    if not isinstance(entity, str) or not _IDENTIFIER.match(entity):
        raise SqlProjectError(f"{where}: `row_depends_on.entity` must be a column name, got {entity!r}")
    globals_ = raw.get("globals") or []
    if not isinstance(globals_, list):
        raise SqlProjectError(f"{where}: `row_depends_on.globals` must be a list, got {globals_!r}")
    for name in globals_:
        parts = name.split(".") if isinstance(name, str) else []
        if not parts or len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise SqlProjectError(
                f"{where}: `row_depends_on.globals` entries are a relation (schema.table) or a "
                f"CTE name of the model's SQL, got {name!r}"
            )
    if len({g.lower() for g in globals_}) != len(globals_):
        raise SqlProjectError(f"{where}: `row_depends_on.globals` lists a name twice: {globals_}")
    return RowDependency(entity=entity, globals=tuple(globals_))


@dataclass
class _ModelYaml:
    source: Path
    description: str | None
    config: ModelConfig
    columns: list[ColumnDoc] = field(default_factory=list)
    model_tests: list[DataTest] = field(default_factory=list)


def _description(entry: Mapping[str, Any], where: str) -> str | None:
    description = entry.get("description")
    if description is not None and not isinstance(description, str):
        # Dagster only takes text; an unquoted `description: 42` would fail deep inside it.
        raise SqlProjectError(f"{where}: `description` must be text, got {description!r}")
    return description


def _parse_model_yaml(entry: Any, source: Path) -> tuple[str, _ModelYaml]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise SqlProjectError(f"{source}: every entry under `models` needs a `name`, got {entry!r}")
    name = entry["name"]
    where = f"{source}: model {name!r}"
    unknown = set(entry) - _MODEL_KEYS
    if unknown:
        raise SqlProjectError(f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(_MODEL_KEYS)}")
    config = _parse_config(entry.get("config"), where)
    columns: list[ColumnDoc] = []
    seen_columns: set[str] = set()
    for column_entry in entry.get("columns") or []:
        if not isinstance(column_entry, dict) or not isinstance(column_entry.get("name"), str):
            raise SqlProjectError(f"{where}: every column needs a `name`, got {column_entry!r}")
        column_name = column_entry["name"]
        unknown = set(column_entry) - _COLUMN_KEYS
        if unknown:
            raise SqlProjectError(
                f"{where}, column {column_name!r}: unknown key(s) {sorted(unknown)}"
            )
        if column_name.lower() in seen_columns:
            raise SqlProjectError(f"{where}: column {column_name!r} is listed twice")
        seen_columns.add(column_name.lower())
        tests = tuple(
            _parse_test(t, column_name, name, source) for t in column_entry.get("tests") or []
        )
        columns.append(
            ColumnDoc(
                column_name,
                _description(column_entry, f"{where}, column {column_name!r}"),
                tests,
            )
        )
    model_tests = [_parse_test(t, None, name, source) for t in entry.get("tests") or []]
    return name, _ModelYaml(
        source=source,
        description=_description(entry, where),
        config=config,
        columns=columns,
        model_tests=model_tests,
    )


def _collect_yaml(sql_dir: Path, files: Sequence[_ModelFile]) -> dict[tuple[str, str], _ModelYaml]:
    """YAML docs per (schema, table): ``_models.yml`` in any folder or ``<table>.yml``."""
    documented: dict[tuple[str, str], _ModelYaml] = {}
    known = {(f.schema.lower(), f.name.lower()) for f in files}
    yaml_paths = sorted(
        p for suffix in YAML_SUFFIXES for p in sql_dir.rglob(f"*{suffix}")
        if len(p.relative_to(sql_dir).parts) >= 2
    )
    for path in yaml_paths:
        schema = path.relative_to(sql_dir).parts[0]
        if path.stem != SHARED_YAML_STEM and (schema.lower(), path.stem.lower()) not in known:
            raise SqlProjectError(
                f"{path}: no model {schema}.{path.stem} to describe (a per-model YAML must sit "
                f"beside {path.stem}.sql; shared docs go in {SHARED_YAML_STEM}.yml)"
            )
        for entry in _load_yaml(path).get("models") or []:
            name, doc = _parse_model_yaml(entry, path)
            key = (schema.lower(), name.lower())
            if key not in known:
                raise SqlProjectError(
                    f"{path}: model {name!r} has no SQL file {schema}/{name}.sql"
                )
            if key in documented:
                raise SqlProjectError(
                    f"model {schema}.{name} is described twice: in {documented[key].source} "
                    f"and in {path}"
                )
            documented[key] = doc
    return documented


class _Resolver:
    """Maps a (schema, table) reference to an asset key, case-insensitively like DuckDB."""

    def __init__(self, models: Mapping[tuple[str, str], dg.AssetKey], external: Iterable[dg.AssetKey]):
        self._models = dict(models)
        self._external = {
            tuple(p.lower() for p in key.path): key for key in external if len(key.path) == 2
        }
        self.ingested: dict[tuple[str, str], dg.AssetKey] = {}

    def resolve(self, schema: str, table: str, where: str) -> dg.AssetKey:
        lookup = (schema.lower(), table.lower())
        if lookup in self._models:
            return self._models[lookup]
        if lookup in self._external:
            return self._external[lookup]
        if lookup[0] == "raw":
            # A table loaded with `churn ingest --table raw.NAME`: an external asset.
            return self.ingested.setdefault(lookup, dg.AssetKey(["raw", table]))
        import difflib

        candidates = [".".join(k) for k in (*self._models, *self._external)]
        close = difflib.get_close_matches(f"{lookup[0]}.{lookup[1]}", candidates, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise SqlProjectError(
            f"{where}: unknown table {schema}.{table}: no sql/{schema}/{table}.sql model and "
            f"not a raw table{hint}"
        )


def parse_sql_project(sql_dir: Path, external_assets: Sequence[dg.AssetKey] = ()) -> ParsedProject:
    """Read and validate every model, YAML file and singular test under ``sql_dir``."""
    import graphlib

    sql_dir = Path(sql_dir).resolve()
    files = discover_model_files(sql_dir)

    by_relation: dict[tuple[str, str], _ModelFile] = {}
    for model_file in files:
        relation = (model_file.schema.lower(), model_file.name.lower())
        if relation in by_relation:
            raise SqlProjectError(
                f"table {model_file.schema}.{model_file.name} is defined twice: "
                f"{by_relation[relation].path} and {model_file.path}"
            )
        by_relation[relation] = model_file
    external_relations = {tuple(p.lower() for p in k.path) for k in external_assets}
    for relation, model_file in by_relation.items():
        if relation in external_relations:
            raise SqlProjectError(
                f"{model_file.path}: {'.'.join(relation)} is already produced by a Python asset"
            )

    documented = _collect_yaml(sql_dir, files)
    keys = {rel: dg.AssetKey([f.schema, f.name]) for rel, f in by_relation.items()}
    resolver = _Resolver(keys, external_assets)

    models: dict[dg.AssetKey, SqlModel] = {}
    for relation, model_file in by_relation.items():
        sql = read_sql(model_file.path)
        parsed = parse_select(model_file.path, sql)
        doc = documented.get(relation)
        config = doc.config if doc else ModelConfig()
        deps = tuple(
            dict.fromkeys(resolver.resolve(s, t, str(model_file.path)) for s, t in parsed.references)
        )
        if parsed.parameters and not config.is_incremental:
            raise SqlProjectError(
                f"{model_file.path}: uses ${', $'.join(sorted(parsed.parameters))} but is "
                f"materialized as {config.materialized}; only incremental models get a window"
            )
        tests = _resolve_tests(doc, resolver)
        models[keys[relation]] = SqlModel(
            key=keys[relation],
            schema=model_file.schema,
            name=model_file.name,
            path=model_file.path,
            sql=sql,
            config=config,
            description=doc.description if doc else None,
            columns=tuple(doc.columns) if doc else (),
            tests=tests,
            deps=deps,
            parameters=parsed.parameters,
            yaml_path=doc.source if doc else None,
        )

    graph = {key: [d for d in m.deps if d in models] for key, m in models.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        cycle = error.args[1]
        chain = " -> ".join(f"{models[k].relation} ({models[k].path})" for k in cycle)
        raise SqlProjectError(f"dependency cycle between SQL models: {chain}") from error

    singular = _parse_singular_tests(sql_dir, resolver, models)
    _check_unique_check_names(models.values(), singular)
    return ParsedProject(
        sql_dir=sql_dir,
        models=tuple(models[k] for k in order),
        singular_tests=tuple(singular),
        external_keys=tuple(resolver.ingested.values()),
    )


def _resolve_tests(doc: _ModelYaml | None, resolver: _Resolver) -> tuple[DataTest, ...]:
    if doc is None:
        return ()
    resolved: list[DataTest] = []
    for test in [t for c in doc.columns for t in c.tests] + doc.model_tests:
        if test.kind == "relationships":
            target = str(test.args["to"])
            parts = target.split(".")
            if len(parts) != 2:
                raise SqlProjectError(
                    f"{test.source}: relationships `to: {target}` must be <schema>.<table>"
                )
            to_key = resolver.resolve(parts[0], parts[1], str(test.source))
            test = dataclasses.replace(test, to_key=to_key)
        resolved.append(test)
    return tuple(resolved)


def _parse_singular_tests(
    sql_dir: Path, resolver: _Resolver, models: Mapping[dg.AssetKey, SqlModel]
) -> list[SingularTest]:
    tests: list[SingularTest] = []
    seen: dict[tuple[str, str], Path] = {}
    for schema, path in discover_singular_test_files(sql_dir):
        if not _IDENTIFIER.match(path.stem):
            raise SqlProjectError(f"{path}: test name {path.stem!r} must be a plain identifier")
        slot = (schema.lower(), path.stem.lower())
        if slot in seen:
            raise SqlProjectError(f"two singular tests named {path.stem!r}: {seen[slot]} and {path}")
        seen[slot] = path
        sql = read_sql(path)
        first_line = sql.splitlines()[0].strip().lower().replace(" ", "")
        severity = "warn" if first_line == "--severity:warn" else "error"
        parsed = parse_select(path, sql)
        if parsed.parameters:
            raise SqlProjectError(f"{path}: singular tests run on the whole table; drop the parameters")
        if not parsed.references:
            raise SqlProjectError(f"{path}: the test reads no table, so it has nothing to check")
        deps = tuple(dict.fromkeys(resolver.resolve(s, t, str(path)) for s, t in parsed.references))
        same_schema = tuple(k for k in deps if k in models and k.path[0].lower() == schema.lower())
        targets = same_schema or (deps[0],)
        tests.append(
            SingularTest(schema=schema, name=path.stem, path=path, sql=sql, severity=severity, targets=targets, deps=deps)
        )
    return tests


def _check_unique_check_names(models: Iterable[SqlModel], singular: Sequence[SingularTest]) -> None:
    declared: dict[tuple[dg.AssetKey, str], Path] = {}
    for model in models:
        for test in model.tests:
            slot = (model.key, test.check_name)
            if slot in declared:
                raise SqlProjectError(
                    f"{test.source}: model {model.relation} has two tests named "
                    f"{test.check_name!r}; give one of them a `name:`"
                )
            declared[slot] = test.source
    for test in singular:
        for target in test.targets:
            slot = (target, test.name)
            if slot in declared:
                raise SqlProjectError(
                    f"{test.path}: a check named {test.name!r} already exists on "
                    f"{target.to_user_string()} (declared in {declared[slot]})"
                )
            declared[slot] = test.path


def find_model_file(sql_dir: Path, model_or_file: str | Path) -> Path:
    """A model's SQL file from ``schema.table``, a bare unique ``table`` name, or a path."""
    candidate = Path(model_or_file)
    if candidate.suffix == ".sql" and candidate.is_file():
        return candidate
    files = discover_model_files(Path(sql_dir))
    text = str(model_or_file).strip()
    if "." in text:
        schema, _, table = text.partition(".")
        matches = [f for f in files if (f.schema.lower(), f.name.lower()) == (schema.lower(), table.lower())]
    else:
        matches = [f for f in files if f.name.lower() == text.lower()]
    if len(matches) == 1:
        return matches[0].path
    if not matches:
        known = ", ".join(f"{f.schema}.{f.name}" for f in files) or "none"
        raise SqlProjectError(f"no model {text!r} under {sql_dir} (models: {known})")
    raise SqlProjectError(
        f"{text!r} is ambiguous: " + ", ".join(f"{f.schema}.{f.name}" for f in matches)
    )
