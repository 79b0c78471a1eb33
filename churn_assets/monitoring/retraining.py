"""Why the model should be retrained now, read from the monitoring tables.

The retraining sensor maps each ``Reason`` to a RunRequest with ``reason.run_key``. Run
keys name the champion and the month that triggered the reason, so a reason that
persists after a retraining which did not replace the champion does not request the
same run again, while a new month, or a new champion drifting, gets a new key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from churn_assets.monitoring.champion import champion_record, table_exists
from churn_assets.monitoring.drift import DRIFT_SUMMARY_TABLE, DriftThresholds, drift_verdict
from churn_assets.monitoring.performance import LABELS_TABLE, PERFORMANCE_TABLE, DecaySettings

if TYPE_CHECKING:
    import duckdb

DRIFT, DECAY, NEW_DATA = "drift", "decay", "new_data"


class RetrainingPolicy(dg.ConfigurableResource):
    """When the champion is decaying and when a new model is due: read by the
    performance_decay check and the retraining sensor (drift levels are the drift policy's)."""

    decay_margin: float = Field(
        default=DecaySettings.max_drop,
        description="Realised AUC this far below the champion's test AUC fails the decay check and calls for retraining.")
    decay_severity: str = Field(default=DecaySettings.severity, description="Severity of a decay failure: WARN or ERROR.")
    new_labelled_months: int = Field(
        default=3, description="Retrain after this many labelled months newer than the champion's.")
    first_model_labelled_months: int = Field(
        default=3, description="Labelled months needed before the first model is trained.")

    def decay(self) -> DecaySettings:
        return DecaySettings(max_drop=self.decay_margin, severity=self.decay_severity)


@dataclass(frozen=True)
class Reason:
    kind: str
    month: date | None
    detail: str
    run_key: str


def _month_text(month: date | None) -> str:
    return f"{month:%Y-%m}" if month else "none"


def _labelled_months(con: duckdb.DuckDBPyConnection) -> list[date]:
    if not table_exists(con, LABELS_TABLE):
        return []
    return [r[0] for r in con.execute(
        f"SELECT DISTINCT snapshot_month FROM {LABELS_TABLE} WHERE churned IS NOT NULL ORDER BY 1"
    ).fetchall()]


def retraining_reasons(
    con: duckdb.DuckDBPyConnection,
    *,
    drift: DriftThresholds,
    decay_margin: float,
    new_labelled_months: int,
    first_model_labelled_months: int = 1,
) -> list[Reason]:
    """At most one reason per kind, each for the latest month that triggers it.

    - drift: the latest month whose drift (measured against the current champion's
      reference) fails a drift check with ERROR under ``drift`` (``drift_verdict``: the
      share of drifted features, the largest PSI of a feature that may page, the
      prediction drift score or the importance-weighted PSI);
    - decay: the latest month whose realised AUC of the champion's predictions is more
      than ``decay_margin`` below the champion's test AUC;
    - new_data: at least ``new_labelled_months`` labelled months newer than the last month
      the champion was trained or tested on (or any labelled month when there is no
      champion yet).
    """
    if new_labelled_months < 1:
        raise ValueError(f"new_labelled_months must be at least 1, got {new_labelled_months}")
    champion = champion_record(con)
    labelled = _labelled_months(con)
    if champion is None:
        if not labelled or len(labelled) < first_model_labelled_months:
            return []
        latest = labelled[-1]
        return [Reason(
            NEW_DATA, latest,
            f"no champion yet; {len(labelled)} labelled month(s) up to {_month_text(latest)}",
            f"{NEW_DATA}-none-{_month_text(latest)}",
        )]

    reasons: list[Reason] = []
    if table_exists(con, DRIFT_SUMMARY_TABLE):
        # The checks' own verdict decides, so the sensor retrains on exactly the months whose
        # drift fails a drift check with ERROR (one home for the rule: drift.drift_verdict).
        cursor = con.execute(
            f"SELECT * FROM {DRIFT_SUMMARY_TABLE} WHERE model_version = ? ORDER BY month DESC", [champion.version]
        )
        names = [d[0] for d in cursor.description]
        for values in cursor.fetchall():
            summary = dict(zip(names, values))
            _, severity, verdict = drift_verdict(summary, drift)
            if severity == "ERROR":
                month = summary["month"]
                reasons.append(Reason(
                    DRIFT, month,
                    f"{_month_text(month)} against {champion.version}: {verdict['description']}",
                    f"{DRIFT}-{champion.version}-{_month_text(month)}",
                ))
                break
    if table_exists(con, PERFORMANCE_TABLE) and champion.test_auc is not None:
        row = con.execute(
            f"SELECT month, auc FROM {PERFORMANCE_TABLE} "
            "WHERE model_version = ? AND auc IS NOT NULL AND auc < ? ORDER BY month DESC LIMIT 1",
            [champion.version, champion.test_auc - decay_margin],
        ).fetchone()
        if row:
            month, auc = row
            reasons.append(Reason(
                DECAY, month,
                f"realised AUC {auc:.4f} in {_month_text(month)} is more than {decay_margin:g} below "
                f"the test AUC {champion.test_auc:.4f} of {champion.version}",
                f"{DECAY}-{champion.version}-{_month_text(month)}",
            ))
    trained_until = champion.last_labelled_month
    newer = [m for m in labelled if trained_until is None or m > trained_until]
    if len(newer) >= new_labelled_months:
        reasons.append(Reason(
            NEW_DATA, newer[-1],
            f"{len(newer)} labelled month(s) after {_month_text(trained_until)}, the last month "
            f"{champion.version} was trained or tested on (threshold {new_labelled_months})",
            f"{NEW_DATA}-{champion.version}-{_month_text(newer[-1])}",
        ))
    return reasons
