"""Printing query results for `churn sql`."""

from __future__ import annotations

import csv
import json
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
# inside them (the Spark warehouse on engine: spark) DuckDB's COPY ... TO would still write.
READING_STATEMENTS = ("SELECT", "EXPLAIN", "PRAGMA", "CALL")


def single_statement(con: duckdb.DuckDBPyConnection, query: str) -> str:
    """``query`` when it is exactly one statement that reads; QueryError otherwise (only the
    last result of several would be shown, and the others would run unseen)."""
    statements = con.extract_statements(query) if query.strip() else []
    if not statements:
        raise QueryError("No SQL given: pass one statement, e.g. churn sql \"select * from ml.model_versions\"")
    if len(statements) > 1:
        raise QueryError(f"{len(statements)} statements given; churn sql runs one per call")
    kind = statements[0].type.name
    if kind not in READING_STATEMENTS:
        raise QueryError(f"churn sql is read-only: a {kind} statement is not run ({', '.join(READING_STATEMENTS)} are)")
    return query


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
