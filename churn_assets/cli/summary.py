"""The short summary `churn demo` / `churn run` print at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from churn_assets.monitoring.drift import DriftPolicy


def summary_lines(con: duckdb.DuckDBPyConnection, drift_policy: DriftPolicy, decision: dict | None = None) -> list[str]:
    """Rows per table, the champion and the latest promotion ``decision``, and the months whose
    drift reached an error level of ``drift_policy`` (the same levels the drift checks and the
    retraining sensor use)."""
    from churn_assets.core.warehouse import table_exists

    lines = ["", "Summary"]
    rows = con.execute(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
        "WHERE table_schema IN ('raw', 'staging', 'features', 'ml', 'monitoring') "
        "ORDER BY table_schema, table_name"
    ).fetchall()
    for (name,) in rows:
        count = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        lines.append(f"  {name:<34} {count:>12,} rows")
    if table_exists(con, "ml.model_versions"):
        cursor = con.execute("SELECT * FROM ml.model_versions WHERE is_champion LIMIT 1")
        row = cursor.fetchone()
        if row:
            champion = dict(zip([d[0] for d in cursor.description], row))
            cv = f"CV ROC-AUC {champion['cv_auc']:.4f}, " if champion.get("cv_auc") is not None else ""
            lines.append(f"  champion: {champion['algorithm']} {champion['version']} "
                         f"({cv}test ROC-AUC {champion['test_auc']:.4f})")
    if decision:
        lines.append(f"  promotion: {decision['outcome'].replace('_', ' ')}: {decision['reason']}")
    if table_exists(con, "monitoring.drift_summary"):
        levels = drift_policy.thresholds()
        drifted = con.execute(
            "SELECT strftime(month, '%Y-%m'), share_drifted, max_psi, max_psi_feature "
            "FROM monitoring.drift_summary "
            # Warm-up months before the training data starts differ by construction.
            "WHERE month >= (SELECT min(snapshot_month) FROM features.training_set) "
            "AND (share_drifted >= ? OR max_psi >= ? OR prediction_drift_score >= ?) ORDER BY month",
            [levels.share_error, levels.psi_error, levels.prediction_error],
        ).fetchall()
        shown = ", ".join(
            f"{month} ({share:.0%} of features, PSI {psi:.2f} on {feature})"
            for month, share, psi, feature in drifted
        )
        lines.append(f"  drift at error level: {shown or 'none'}")
    return lines
