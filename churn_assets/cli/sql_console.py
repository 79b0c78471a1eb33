"""Printing query results for `churn sql`."""

from __future__ import annotations

import csv
import json
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb


def print_relation(con: duckdb.DuckDBPyConnection, query: str, fmt: str, *, max_rows: int = 50, out=None) -> int:
    """Run ``query`` and print its result as a table, CSV or one JSON document (an array of
    objects, one per row); returns the row count."""
    out = out or sys.stdout
    cursor = con.execute(single_statement(con, query))
    columns = [d[0] for d in cursor.description or []]
    rows = cursor.fetchall()
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(rows)
    elif fmt == "json":
        records = [{c: (None if isinstance(v, float) and v != v else v) for c, v in zip(columns, row)} for row in rows]
        json.dump(records, out, default=str, indent=1, allow_nan=False)
        out.write("\n")
    else:
        shown = rows[:max_rows]
        cells = [[_cell(v) for v in row] for row in shown]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        line = "+".join("-" * (w + 2) for w in widths)
        out.write(" | ".join(c.ljust(w) for c, w in zip(columns, widths)) + "\n")
        out.write(line + "\n")
        for row in cells:
            out.write(" | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths)) + "\n")
        more = f" (showing {len(shown)})" if len(rows) > len(shown) else ""
        out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''}{more})\n")
    return len(rows)


class QueryError(ValueError):
    """A query `churn sql` does not run (empty, or several statements)."""


# Statements that only read. The sandbox already stops writes outside its readable folders;
# inside them (the Spark warehouse on engine: spark, and DuckDB's own temp_directory) DuckDB's
# COPY ... TO would still write, so anything that is not a read is refused before it runs.
READING_STATEMENTS = ("SELECT", "EXPLAIN", "PRAGMA", "CALL")
# PRAGMAs that only describe; others run SQL files (import_database) or change settings.
READING_PRAGMAS = frozenset({
    "show_tables", "show_tables_expanded", "show_databases", "database_list", "database_size",
    "table_info", "show", "storage_info", "metadata_info", "functions", "collations", "version",
    "platform", "user_agent",
})
_EXPLAIN_PREFIX = re.compile(r"^\s*explain\s+(?:analy[sz]e\s+|\([^)]*\)\s*)?", re.IGNORECASE)
_PRAGMA_NAME = re.compile(r"^\s*pragma\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_PIVOT = re.compile(r"\b(?:un)?pivot\b", re.IGNORECASE)


def single_statement(con: duckdb.DuckDBPyConnection, query: str) -> str:
    """``query`` when it is exactly one statement that reads; QueryError otherwise (only the
    last result of several would be shown, and the others would run unseen)."""
    statements = con.extract_statements(query) if query.strip() else []
    if not statements:
        raise QueryError("No SQL given: pass one statement, e.g. churn sql \"select * from ml.model_versions\"")
    if len(statements) > 1:
        raise QueryError(f"{len(statements)} statements given; churn sql runs one per call")
    refused = _not_a_read(con, statements[0])
    if refused:
        raise QueryError(f"churn sql is read-only: {refused} is not run "
                         "(it runs SELECT, CALL, the PRAGMAs that describe, and EXPLAIN of those)")
    return query


def _not_a_read(con: duckdb.DuckDBPyConnection, statement) -> str | None:
    """What makes ``statement`` more than a read ("a COPY statement"), or None."""
    kind, text = statement.type.name, statement.query
    if kind == "MULTI" and _PIVOT.search(text):  # DuckDB runs a PIVOT as several statements
        return None
    if kind not in READING_STATEMENTS:
        return f"a {kind} statement"
    if kind == "PRAGMA":
        name = _PRAGMA_NAME.match(text)
        return None if name and name[1].lower() in READING_PRAGMAS else f"PRAGMA {name[1] if name else text.strip()}"
    if kind == "EXPLAIN":
        # EXPLAIN ANALYZE runs the statement it explains: that one must read too.
        inner = _EXPLAIN_PREFIX.sub("", text, count=1)
        try:
            explained = con.extract_statements(inner)
        except Exception:  # duckdb.ParserError: nothing we can vouch for
            return "an EXPLAIN of a statement that does not parse alone"
        if len(explained) != 1:
            return "an EXPLAIN of several statements"
        refused = _not_a_read(con, explained[0])
        return f"an EXPLAIN of {refused}" if refused else None
    return None


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
