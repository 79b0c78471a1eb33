"""What ``churn init`` learns from a user's export before it writes anything: which column is
the id, the month and the label (and its positive value), and what every other column is as a
feature, or why it cannot be one.

Everything is decided from the data, never from known column names (except to suggest a label
when none is named). A file that cannot become a project (no such column, a label with more
than two values, an empty file, duplicate ids in one month...) raises ``ExportError`` naming
the file and the column, before anything is written.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from churn_assets.core.project import current_month, month_key
from churn_assets.source.export import (
    DELIVERY_MONTH_COLUMN, ExportError, SourcePolicy, detect_time_format, month_sql, quoted, with_months,
)

ID_COLUMN, MONTH_COLUMN, LABEL_COLUMN = "customer_id", "snapshot_month", "churned"
RESERVED_NAMES = (ID_COLUMN, MONTH_COLUMN, LABEL_COLUMN, DELIVERY_MONTH_COLUMN)
POSITIVE_SPELLINGS = ("1", "1.0", "true", "yes", "y", "t")
# Named like a label, for a file given without --label.
LABEL_NAMES = re.compile(r"(^|_)(churn|churned|churn_flag|exited|attrition(_flag)?|is_churn|cancelled|canceled)($|_)")
# Named like the month a row describes, for a file whose ids are unique (one snapshot unless said).
TIME_NAMES = re.compile(r"(^|_)(month|snapshot|period|as_?of|observation)($|_)")
# A text column with more distinct values than this, and this share of its rows, is free text.
FREE_TEXT_MIN_VALUES = 50
FREE_TEXT_MIN_SHARE = 0.2
# Categorical columns with at most this many levels get an accepted_values test.
ACCEPTED_VALUES_MAX = 30
MIN_ROWS_PER_CLASS = 10
NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT", "UHUGEINT", "FLOAT", "REAL", "DOUBLE", "DECIMAL")
INTEGER_TYPES = NUMERIC_TYPES[:10]


@dataclass
class Column:
    """One column of the export and what the project makes of it."""

    name: str  # as in the file
    sql_name: str  # snake_case name in the SQL models
    type: str  # DuckDB type as read
    role: str  # "id", "time", "label", "feature" or "excluded"
    kind: str | None = None  # feature kind: "categorical", "numeric" or "date"
    reason: str | None = None  # why excluded
    distinct: int = 0
    nulls: int = 0
    values: list[str] | None = None  # levels of a categorical with few of them
    numeric_text: bool = False  # a text column whose values are all numbers (blanks aside)


@dataclass
class ExportProfile:
    path: Path
    rows: int
    columns: list[Column]
    id_column: str | None  # the file's id column; None: a row id is made
    label_column: str
    label_type: str
    positive: str
    negative: str
    time_column: str | None
    time_format: str | None
    month: str | None  # YYYY-MM of a single snapshot
    months: list[str]
    positives: int
    labelled: int
    notes: list[str] = field(default_factory=list)

    @property
    def feature_names(self) -> list[str]:
        """The feature columns as customer_features names them (a date becomes its age in days)."""
        return [f"{c.sql_name}_days" if c.kind == "date" else c.sql_name for c in self.features]

    @property
    def features(self) -> list[Column]:
        return [c for c in self.columns if c.role == "feature"]

    @property
    def excluded(self) -> list[Column]:
        return [c for c in self.columns if c.role == "excluded"]

    def source_policy(self, file: str, table: str) -> SourcePolicy:
        return SourcePolicy(file=file, table=table, time_column=self.time_column, time_format=self.time_format,
                            month=self.month)


def label_sql(column: str, positive: str) -> str:
    """1 where ``column`` holds the positive value (any case; 1 and 1.0 alike), 0 for the other, NULL if empty."""
    value = f"nullif(lower(trim(CAST({quoted(column)} AS VARCHAR))), '')"
    spellings = {positive.strip().lower()}
    if _plain(positive) != positive or positive.lstrip("-").isdigit():
        spellings |= {_plain(positive).lower(), _plain(positive).lower() + ".0"}
    listed = ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(spellings))
    return f"CASE WHEN {value} IN ({listed}) THEN 1 WHEN {value} IS NOT NULL THEN 0 END"


def snake_case(name: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    text = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    if not text:
        text = "column"
    if text[0].isdigit():
        text = f"c_{text}"
    return text


def plain_identifier(name: str) -> bool:
    """Whether ``name`` works unquoted as a column and a table name in DuckDB and in sqlglot
    (which reads the SQL models): not a keyword, not an operator such as ``xor``."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(f"SELECT a AS {name} FROM s.{name}", read="duckdb")
    except sqlglot.errors.SqlglotError:
        return False
    table = tree.find(exp.Table)
    return (tree.selects[0].alias == name and table is not None and table.name == name
            and name not in _duckdb_keywords())


@lru_cache(maxsize=1)
def _duckdb_keywords() -> frozenset[str]:
    import duckdb

    return frozenset(row[0] for row in duckdb.sql(
        "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved'").fetchall())


def _sql_names(names: list[str], reserved: set[str]) -> dict[str, str]:
    taken = set(RESERVED_NAMES) | reserved
    result = {}
    for name in names:
        base = snake_case(name)
        if base in taken or not plain_identifier(base):
            base = f"{base}_value"
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base}_{n}", n + 1
        taken.add(candidate)
        result[name] = candidate
    return result


def _find(names: dict[str, str], wanted: str | None, what: str, path: Path) -> str | None:
    if wanted is None:
        return None
    found = names.get(wanted.lower())
    if found is None:
        raise ExportError(f"{path}: no {what} column '{wanted}' (columns: {', '.join(names.values())})")
    return found


def _plain(value) -> str:
    text = str(value)
    return text[:-2] if text.endswith(".0") and text[:-2].lstrip("-").isdigit() else text


def _label_values(con, column: str, path: Path, positive: str | None) -> tuple[str, str]:
    values = [_plain(row[0]) for row in con.execute(
        f"SELECT DISTINCT CAST({quoted(column)} AS VARCHAR) FROM export_file WHERE {quoted(column)} IS NOT NULL "
        "ORDER BY 1").fetchall()]
    # One value per spelling up to case and blanks: ' Yes' and 'yes' are the same answer.
    by_case: dict[str, str] = {}
    for value in (v.strip() for v in values):
        by_case.setdefault(value.lower(), value)
    values = sorted(by_case.values())
    if len(values) > 2:
        shown = ", ".join(repr(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise ExportError(f"{path}: label '{column}' has {len(values)} values ({shown}); a churn label has two")
    if len(values) < 2:
        only = repr(values[0]) if values else "empty values"
        raise ExportError(f"{path}: label '{column}' has only {only}; a churn label needs both outcomes")
    if positive is not None:
        wanted = str(positive).strip().lower()
        if set(values) == {"false", "true"}:
            # DuckDB read the file's Yes/No (or Y/N, 1/0) as a boolean: accept its spelling too.
            wanted = {"yes": "true", "y": "true", "1": "true", "no": "false", "n": "false", "0": "false"}.get(
                wanted, wanted)
        matches = [v for v in values if v.lower() == wanted]
        if not matches:
            raise ExportError(f"{path}: --positive {positive!r} is not a value of label '{column}' "
                              f"({values[0]!r}, {values[1]!r})")
        chosen = matches[0]
    else:
        inferred = [v for v in values if v.lower() in POSITIVE_SPELLINGS]
        if len(inferred) != 1:
            raise ExportError(f"{path}: which value of label '{column}' means churned, {values[0]!r} or "
                              f"{values[1]!r}? Say it with --positive VALUE")
        chosen = inferred[0]
    return chosen, next(v for v in values if v != chosen)


def _guess_label(con, names: dict[str, str], path: Path) -> str:
    guesses = [name for name in names.values() if LABEL_NAMES.search(snake_case(name))]
    if len(guesses) == 1:
        return guesses[0]
    if not guesses:
        # Nothing named like a label: the columns with exactly two values are the candidates.
        guesses = [name for name in names.values() if con.execute(
            f"SELECT count(DISTINCT {quoted(name)}) FROM export_file").fetchall()[0][0] == 2]
    found = f" (candidates: {', '.join(guesses)})" if guesses else ""
    raise ExportError(f"{path}: name the label column with --label COL{found}")


def _is_date(column_type: str) -> bool:
    return column_type.upper().startswith(("DATE", "TIMESTAMP"))


def _time_candidates(con, names: dict[str, str], types: dict[str, str]) -> list[str]:
    """Columns whose values all parse as dates, those named like a month first."""
    found = []
    for name in names.values():
        column_type = types[name]
        if not (_is_date(column_type) or column_type == "VARCHAR" or column_type in INTEGER_TYPES):
            continue
        if column_type in INTEGER_TYPES:
            low, high = con.execute(f"SELECT min({quoted(name)}), max({quoted(name)}) FROM export_file").fetchall()[0]
            if low is None or not (190001 <= low <= high <= 210012):  # only YYYYMM integers count
                continue
        try:
            detect_time_format(con, "export_file", name, column_type)
        except ExportError:
            continue
        found.append(name)
    return sorted(found, key=lambda n: (not TIME_NAMES.search(snake_case(n)), found.index(n)))


def _duplicate(con, keys: list[str]) -> tuple | None:
    columns = ", ".join(keys)
    found = con.execute(
        f"SELECT {columns}, count(*) FROM export GROUP BY ALL HAVING count(*) > 1 ORDER BY count(*) DESC, "
        f"{columns} LIMIT 1").fetchall()
    return found[0] if found else None


def profile_export(path: str | Path, *, id_column: str | None = None, label: str | None = None,
                   positive: str | None = None, month: str | None = None,
                   time_column: str | None = None) -> ExportProfile:
    """Read ``path`` and decide every column's role; ExportError on anything unusable."""
    import duckdb

    from churn_assets.source.ingest import IngestError, read_table_file

    path = Path(path)
    try:
        data = read_table_file(path)
    except IngestError as error:
        raise ExportError(str(error)) from None
    rows = data.num_rows
    names = {name.lower(): name for name in data.column_names}
    if DELIVERY_MONTH_COLUMN in names:
        raise ExportError(f"{path}: the column name '{DELIVERY_MONTH_COLUMN}' is reserved; rename it in the file")
    con = duckdb.connect()
    con.register("export_file", data)
    types = {row[0]: row[1] for row in con.execute("DESCRIBE export_file").fetchall()}
    notes: list[str] = []

    id_name = _find(names, id_column, "id", path)
    label_name = _find(names, label, "label", path) or _guess_label(con, names, path)
    if label is None:
        notes.append(f"label: '{label_name}' (guessed from its name; pass --label to choose another)")
    if label_name == id_name:
        raise ExportError(f"{path}: '{label_name}' cannot be both the id and the label")
    positive_value, negative_value = _label_values(con, label_name, path, positive)

    time_name = _find(names, time_column, "time", path)
    if month is not None and time_name is not None:
        raise ExportError(f"{path}: --month is for a file of one snapshot; this one has time column '{time_name}'")
    ids_repeat = False
    if id_name is not None:
        ids_repeat = con.execute(
            f"SELECT count(DISTINCT {quoted(id_name)}) < count(*) FROM export_file").fetchall()[0][0]
    if time_name is None and month is None:
        candidates = [c for c in _time_candidates(con, names, types) if c not in (id_name, label_name)]
        if ids_repeat:
            # Several rows per id: the month column is the one that tells them apart.
            for candidate in candidates:
                fmt = detect_time_format(con, "export_file", candidate, types[candidate])
                unique = con.execute(
                    f"SELECT count(*) = count(DISTINCT ({quoted(id_name)}, {month_sql(candidate, types[candidate], fmt)})) "
                    "FROM export_file").fetchall()[0][0]
                if unique:
                    time_name = candidate
                    break
        else:
            named = [c for c in candidates if TIME_NAMES.search(snake_case(c))]
            time_name = named[0] if named else None
        if time_name:
            notes.append(f"time: '{time_name}' gives each row's month (pass --time COL to choose another)")
    if time_name is None:
        snapshot = month_key(month) if month else current_month()
        if month is None:
            notes.append(f"month: one snapshot, dated {snapshot[:7]} (pass --month YYYY-MM to date it otherwise)")
    else:
        snapshot = None
    try:
        time_format = detect_time_format(con, "export_file", time_name, types[time_name]) if time_name else None
    except ExportError as error:
        raise ExportError(f"{path}: {error}") from None
    policy = SourcePolicy(file=str(path), time_column=time_name, time_format=time_format,
                          month=snapshot[:7] if snapshot else None)
    con.close()
    con = with_months(data, policy, str(path))
    months = [str(row[0]) for row in con.execute(
        f"SELECT DISTINCT {DELIVERY_MONTH_COLUMN} FROM export ORDER BY 1").fetchall()]
    _check_months(path, months)

    if id_name is not None:
        empty = con.execute(f"SELECT count(*) FROM export WHERE {quoted(id_name)} IS NULL").fetchall()[0][0]
        if empty:
            raise ExportError(f"{path}: id column '{id_name}' is empty in {empty:,} row(s)")
        duplicate = _duplicate(con, [f"CAST({quoted(id_name)} AS VARCHAR)", DELIVERY_MONTH_COLUMN])
        if duplicate:
            where = f" in month {str(duplicate[1])[:7]}" if time_name else ""
            hint = "" if time_name else "; if the rows are monthly snapshots, name the month column with --time COL"
            raise ExportError(f"{path}: duplicate id {duplicate[0]!r}{where} in column '{id_name}' "
                              f"({duplicate[2]} rows){hint}")
    else:
        notes.append("id: none given, so each row gets a stable id made from a hash of its values "
                     "(pass --id COL if the file has one)")

    labelled, positives = con.execute(
        f"SELECT count({LABEL_COLUMN}), sum({LABEL_COLUMN}) FROM (SELECT {label_sql(label_name, positive_value)} "
        f"AS {LABEL_COLUMN} FROM export)").fetchall()[0]
    positives = int(positives or 0)
    if labelled < rows:
        notes.append(f"label: {rows - labelled:,} row(s) have no label: they are scored, not trained on")
    for outcome, count in (("churned", positives), ("stayed", labelled - positives)):
        if count < MIN_ROWS_PER_CLASS:
            raise ExportError(f"{path}: only {count} row(s) {outcome} (label '{label_name}'); at least "
                              f"{MIN_ROWS_PER_CLASS} of each outcome are needed to train and test a model")

    roles = {id_name: "id", time_name: "time", label_name: "label"}
    sql_names = _sql_names([n for n in data.column_names if n not in (id_name, label_name)], set())
    sql_names.update({id_name: ID_COLUMN, label_name: LABEL_COLUMN})
    columns = [_profile_column(con, name, types[name], roles.get(name, "feature"), sql_names[name], rows)
               for name in data.column_names]
    if id_name is None:
        unique = [c for c in columns if c.reason and c.reason.startswith("unique per row")]
        unique.sort(key=lambda c: not re.search(r"(^|_)id($|_)", c.sql_name))
        if unique:
            notes.append(f"id: column '{unique[0].name}' is unique per row; pass --id {shlex.quote(unique[0].name)} "
                         "if it identifies the customer")
    con.close()
    return ExportProfile(
        path=path, rows=rows, columns=columns, id_column=id_name, label_column=label_name,
        label_type=types[label_name], positive=positive_value, negative=negative_value, time_column=time_name, time_format=time_format,
        month=snapshot[:7] if snapshot else None, months=months, positives=positives, labelled=labelled,
        notes=notes,
    )


def _check_months(path: Path, months: list[str]) -> None:
    latest = current_month()
    future = [m for m in months if m > latest]
    if future:
        raise ExportError(f"{path}: rows dated in the future ({', '.join(m[:7] for m in future[:3])}); "
                          f"the latest month a project can hold is {latest[:7]}")
    if months and int(months[0][:4]) < 1900:
        raise ExportError(f"{path}: rows dated {months[0][:7]}: not a plausible month")


def _profile_column(con, name: str, column_type: str, role: str, sql_name: str, rows: int) -> Column:
    value = quoted(name)
    distinct, nulls = con.execute(
        f"SELECT count(DISTINCT {value}), count(*) - count({value}) FROM export").fetchall()[0]
    column = Column(name=name, sql_name=sql_name, type=column_type, role=role, distinct=distinct, nulls=nulls)
    if role != "feature":
        return column
    non_null = rows - nulls
    if column_type == "VARCHAR":
        blanks = con.execute(f"SELECT count(*) FROM export WHERE trim({value}) = ''").fetchall()[0][0]
        not_numbers = con.execute(
            f"SELECT count(*) FROM export WHERE trim({value}) <> '' AND TRY_CAST(trim({value}) AS DOUBLE) IS NULL"
        ).fetchall()[0][0]
        if not_numbers == 0 and non_null - blanks > 0:
            column.numeric_text = True
            column.nulls += blanks
            column.kind = "numeric"
        else:
            column.kind = "categorical"
    elif column_type == "BOOLEAN":
        column.kind = "categorical"
    elif column_type.split("(")[0] in NUMERIC_TYPES:
        column.kind = "numeric"
    elif _is_date(column_type):
        column.kind = "date"
    else:
        column.role, column.reason = "excluded", f"type {column_type} is not a feature type"
        return column
    if non_null == 0:
        column.role, column.reason = "excluded", "empty in every row"
    elif distinct <= 1:
        column.role, column.reason = "excluded", "constant (one value in every row)"
    elif distinct == rows and (column.kind == "categorical" or column_type in INTEGER_TYPES):
        column.role, column.reason = "excluded", "unique per row, like a row number or an identifier"
    elif (column.kind == "categorical" and distinct > FREE_TEXT_MIN_VALUES
          and distinct >= FREE_TEXT_MIN_SHARE * non_null):
        column.role, column.reason = "excluded", (f"free text: {distinct:,} distinct values in {non_null:,} rows "
                                                  "(too many to generalise)")
    if column.kind == "categorical" and column.role == "feature" and distinct <= ACCEPTED_VALUES_MAX:
        column.values = [str(row[0]) for row in con.execute(
            f"SELECT DISTINCT CAST({value} AS VARCHAR) FROM export WHERE {value} IS NOT NULL ORDER BY 1").fetchall()]
    return column
