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
        from churn_assets.monitoring.drift import drift_verdict

        levels = drift_policy.thresholds()
        # Every measured month: warm-up months at the start of the data are compared with
        # later ones, which the verdict knows (reference_precedes) and does not page on.
        cursor = con.execute("SELECT * FROM monitoring.drift_summary ORDER BY month")
        names = [d[0] for d in cursor.description]
        shown = []
        for values in cursor.fetchall():
            row = dict(zip(names, values))
            # The drift checks' own verdict, so the summary lists what fails them with ERROR.
            if drift_verdict(row, levels)[1] != "ERROR":
                continue
            moved = f"; moved: {row['moved_features']}" if row.get("moved_features") else ""
            # The PSI that pages (importance-discounted) where measured, else the raw largest.
            value, feature = ((row["paging_psi"], row["paging_psi_feature"]) if row.get("paging_psi_feature")
                              else (row.get("max_psi"), row.get("max_psi_feature")))
            psi = f", PSI {value:.2f} on {feature}" if value is not None else ""
            if row.get("prediction_drift_score") is not None:
                psi += f", prediction drift {row['prediction_drift_score']:.2f}"
            shown.append(f"{row['month']:%Y-%m} ({row['share_drifted']:.0%} of features{psi}{moved})")
        lines.append(f"  drift at error level: {', '.join(shown) or 'none'}")
    return lines
