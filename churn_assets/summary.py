"""The short summary `churn demo` / `churn run` print at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def summary_lines(con: duckdb.DuckDBPyConnection) -> list[str]:
    lines = ["", "Summary"]
    rows = con.execute(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
        "WHERE table_schema IN ('raw', 'staging', 'features', 'ml', 'monitoring') "
        "ORDER BY table_schema, table_name"
    ).fetchall()
    for (name,) in rows:
        count = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        lines.append(f"  {name:<34} {count:>12,} rows")
    if _table_exists(con, "ml", "model_versions"):
        champion = con.execute(
            "SELECT version, algorithm, test_auc FROM ml.model_versions WHERE is_champion LIMIT 1"
        ).fetchone()
        if champion:
            lines.append(f"  champion: {champion[1]} {champion[0]} (test ROC-AUC {champion[2]:.3f})")
    if _table_exists(con, "monitoring", "drift"):
        drifted = con.execute(
            "SELECT strftime(month, '%Y-%m'), share_drifted FROM monitoring.drift_summary "
            "ORDER BY month"
        ).fetchall() if _table_exists(con, "monitoring", "drift_summary") else []
        if drifted:
            months = ", ".join(f"{m} ({s:.0%})" for m, s in drifted if s and s >= 0.3)
            lines.append(f"  drift: {months or 'no month with 30%+ drifted features'}")
    return lines
