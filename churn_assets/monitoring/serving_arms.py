"""Champion against challenger in production: the scores ``churn serve`` logged, joined with the
labels once the month after has shown who churned, side by side per arm.

Only scores of a known customer's own latest features count (``GET /v1/customers/{id}/score``;
a posted row may be a what-if with changed features), and each model's last logged score of a
customer-month counts once (a customer asked about ten times is one observation). Two comparisons, each of the latest champion and challenger the log
names:

- ``shadow``: customer-months both models scored (one answered, the other in shadow). Paired:
  the AUC difference and its interval come from a paired bootstrap of the same rows, the
  promotion gate's test.
- ``ab``: the customers each arm answered (A/B routing gives each customer one arm). Unpaired:
  each arm's AUC is bootstrapped on its own customers and the difference of the draws gives
  the interval.

The decision uses the shadow comparison when it has enough labelled rows, else the A/B one:
``challenger_better`` when the difference exceeds the promotion margin and its interval lies
above 0, ``champion_better`` when the interval lies below 0, ``no_clear_difference``
otherwise, and ``waiting_for_labels`` until each arm has ``serving.arm_min_labelled``
labelled customers and 10 churners. Margin, confidence, resamples and seed are the promotion
policy's, so the offline gate and the online comparison cannot be configured apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from churn_assets.core.warehouse import column_definitions, table_exists
from churn_assets.scoring.score_log import SCORE_LOG_TABLE

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from churn_assets.training.promotion import PromotionPolicy

LABELS_TABLE = "features.labels"
ARMS_TABLE = "monitoring.serving_arms"
MIN_POSITIVES = 10
ARMS_COLUMNS: dict[str, tuple[str, str]] = {
    "comparison": ("VARCHAR NOT NULL", "shadow (both models scored the same customers) or ab (each arm its own)."),
    "arm": ("VARCHAR NOT NULL", "champion or challenger."),
    "model_version": ("VARCHAR NOT NULL", "Registry version of the arm's model."),
    "customers": ("BIGINT NOT NULL", "Labelled customer-months the arm scored."),
    "positives": ("BIGINT NOT NULL", "Of those, customers who churned."),
    "auc": ("DOUBLE", "ROC-AUC of the arm's scores; NULL with one class only."),
    "auc_low": ("DOUBLE", "Lower end of the bootstrap interval of the AUC."),
    "auc_high": ("DOUBLE", "Upper end of the bootstrap interval of the AUC."),
}
WAITING = "waiting_for_labels"
CHALLENGER_BETTER = "challenger_better"
CHAMPION_BETTER = "champion_better"
NO_CLEAR_DIFFERENCE = "no_clear_difference"
NO_CHALLENGER = "no_challenger_served"


@dataclass
class ArmsComparison:
    rows: list[dict]
    decision: str
    reason: str
    comparison: str | None = None
    difference: float | None = None
    low: float | None = None
    high: float | None = None
    champion_version: str | None = None
    challenger_version: str | None = None

    def summary(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ("decision", "reason", "comparison", "difference", "low", "high",
                                                    "champion_version", "challenger_version")}


def labelled_scores(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Each model's last logged score per customer-month, with the label (labelled rows only)."""
    import pandas as pd

    columns = ["customer_id", "feature_month", "model_version", "arm", "answered", "served_at",
               "churn_probability", "churned"]
    if not (table_exists(con, SCORE_LOG_TABLE) and table_exists(con, LABELS_TABLE)):
        return pd.DataFrame(columns=columns)
    return con.execute(f"""
        SELECT s.customer_id, s.feature_month, s.model_version, s.arm, s.answered, s.served_at,
               s.churn_probability, CAST(l.churned AS INTEGER) AS churned
        FROM (
            SELECT *, row_number() OVER (PARTITION BY customer_id, feature_month, model_version
                                         ORDER BY served_at DESC, request_id DESC) AS latest
            FROM {SCORE_LOG_TABLE}
            -- Only scores of known customers' own features: a posted row may be a what-if.
            WHERE endpoint = 'customer' AND customer_id IS NOT NULL AND feature_month IS NOT NULL
        ) AS s
        JOIN {LABELS_TABLE} AS l ON l.customer_id = s.customer_id AND l.snapshot_month = s.feature_month
        WHERE s.latest = 1 AND l.churned IS NOT NULL
        ORDER BY s.customer_id, s.feature_month, s.model_version
    """).df()


def latest_versions(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The version each arm had in the most recent log rows."""
    if not table_exists(con, SCORE_LOG_TABLE):
        return {}
    rows = con.execute(f"SELECT arm, arg_max(model_version, served_at) FROM {SCORE_LOG_TABLE} GROUP BY arm").fetchall()
    return dict(rows)


def _arm_row(comparison: str, arm: str, version: str, labels, scores, policy: PromotionPolicy) -> tuple[dict, Any]:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from churn_assets.training.promotion import bootstrap_aucs

    labels = np.asarray(labels, dtype="int64")
    positives = int(labels.sum())
    row = {"comparison": comparison, "arm": arm, "model_version": version, "customers": len(labels),
           "positives": positives, "auc": None, "auc_low": None, "auc_high": None}
    draws = None
    if 0 < positives < len(labels):
        row["auc"] = float(roc_auc_score(labels, scores))
        draws = bootstrap_aucs(labels, np.asarray(scores), samples=policy.bootstrap_samples,
                               seed=policy.seed + (arm == "challenger"))
        alpha = (1 - policy.confidence) / 2
        row["auc_low"], row["auc_high"] = float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))
    return row, draws


def _enough(labels, minimum: int) -> bool:
    import numpy as np

    labels = np.asarray(labels)
    return len(labels) >= minimum and MIN_POSITIVES <= labels.sum() <= len(labels) - MIN_POSITIVES


def compare_arms(scores: pd.DataFrame, versions: dict[str, str], policy: PromotionPolicy,
                 min_labelled: int) -> ArmsComparison:
    import numpy as np

    from churn_assets.training.promotion import paired_bootstrap_auc_difference

    champion, challenger = versions.get("champion"), versions.get("challenger")
    if champion is None or challenger is None:
        return ArmsComparison([], NO_CHALLENGER, "the score log holds no challenger scores: switch on "
                              "serving.shadow or serving.challenger_share", champion_version=champion)
    rows: list[dict] = []
    alpha = (1 - policy.confidence) / 2
    by_version = {version: scores[scores["model_version"] == version] for version in (champion, challenger)}

    # shadow: the customer-months both scored, paired
    both = by_version[champion].merge(by_version[challenger], on=["customer_id", "feature_month"],
                                      suffixes=("_champion", "_challenger"))
    paired = None
    if len(both):
        labels = both["churned_champion"].to_numpy()
        for arm, version in (("champion", champion), ("challenger", challenger)):
            rows.append(_arm_row("shadow", arm, version, labels, both[f"churn_probability_{arm}"], policy)[0])
        if _enough(labels, min_labelled):
            paired = paired_bootstrap_auc_difference(
                labels, both["churn_probability_challenger"].to_numpy(), both["churn_probability_champion"].to_numpy(),
                samples=policy.bootstrap_samples, confidence=policy.confidence, seed=policy.seed)

    # ab: each arm's answered customers
    answered = {arm: by_version[version][by_version[version]["answered"].astype(bool)
                                         & (by_version[version]["arm"] == arm)]
                for arm, version in (("champion", champion), ("challenger", challenger))}
    unpaired = None
    if all(len(frame) for frame in answered.values()):
        draws = {}
        for arm, version in (("champion", champion), ("challenger", challenger)):
            row, draws[arm] = _arm_row("ab", arm, version, answered[arm]["churned"], answered[arm]["churn_probability"],
                                       policy)
            rows.append(row)
        ab_rows = {row["arm"]: row for row in rows if row["comparison"] == "ab"}
        if all(_enough(answered[arm]["churned"], min_labelled) for arm in answered) and \
                all(value is not None for value in draws.values()):
            size = min(len(draws["champion"]), len(draws["challenger"]))
            differences = draws["challenger"][:size] - draws["champion"][:size]
            unpaired = (ab_rows["challenger"]["auc"] - ab_rows["champion"]["auc"],
                        float(np.quantile(differences, alpha)), float(np.quantile(differences, 1 - alpha)))

    chosen, result = ("shadow", paired) if paired is not None else ("ab", unpaired)
    if result is None:
        counts = ", ".join(f"{row['comparison']} {row['arm']}: {row['customers']} labelled, {row['positives']} churned"
                           for row in rows) or "no labelled scores yet"
        return ArmsComparison(rows, WAITING, f"each arm needs {min_labelled} labelled customers and {MIN_POSITIVES} "
                              f"churners ({counts})", champion_version=champion, challenger_version=challenger)
    difference, low, high = result
    interval = f"{policy.confidence:.0%} CI [{low:+.4f}, {high:+.4f}]"
    if difference > policy.margin and low > 0:
        decision, reason = CHALLENGER_BETTER, (f"challenger {challenger} beats champion {champion} by "
                                               f"{difference:+.4f} AUC ({chosen}, {interval})")
    elif high < 0:
        decision, reason = CHAMPION_BETTER, f"champion {champion} beats challenger {challenger} by {-difference:.4f} AUC ({chosen}, {interval})"
    else:
        decision, reason = NO_CLEAR_DIFFERENCE, (f"AUC difference {difference:+.4f} ({chosen}, {interval}) does not "
                                                 f"clear the margin {policy.margin} with an interval above 0")
    return ArmsComparison(rows, decision, reason, chosen, difference, low, high, champion, challenger)


def write_arms(con: duckdb.DuckDBPyConnection, rows: list[dict]) -> None:
    import pandas as pd

    body = column_definitions(ARMS_COLUMNS)
    con.execute("CREATE SCHEMA IF NOT EXISTS monitoring")
    con.execute(f"CREATE OR REPLACE TABLE {ARMS_TABLE} ({body})")
    if rows:
        frame = pd.DataFrame(rows, columns=list(ARMS_COLUMNS))
        con.register("arm_rows", frame)
        con.execute(f"INSERT INTO {ARMS_TABLE} SELECT * FROM arm_rows")
        con.unregister("arm_rows")
