"""Per-customer explanations: the top-k features pushing each scored customer's risk up and down."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from churn_assets.training.model import ChurnModel

EXPLANATIONS_TABLE = "ml.explanations"
# Reasons per direction per customer: ml/explanations' and the HTTP service's default.
DEFAULT_TOP_REASONS = 3

EXPLANATION_COLUMNS: dict[str, tuple[str, str]] = {
    "customer_id": ("VARCHAR NOT NULL", "Customer identifier."),
    "snapshot_month": ("DATE NOT NULL", "Snapshot month of the explained score (ml.predictions)."),
    "model_version": ("VARCHAR NOT NULL", "Registry version of the explained model."),
    "direction": ("VARCHAR NOT NULL", "increases_risk or decreases_risk."),
    "rank": ("INTEGER NOT NULL", "1 = the strongest reason in that direction."),
    "feature": ("VARCHAR NOT NULL", "Feature name (a column of features.customer_features)."),
    "feature_value": ("VARCHAR", "The customer's value of the feature, as text; NULL if missing."),
    "shap_value": ("DOUBLE NOT NULL", "SHAP contribution to the log-odds of churn."),
    "method": ("VARCHAR NOT NULL", "tree_shap or linear (exact), stacked (exact, of the ensemble), saabas (approximate) or permutation."),
}


def explanation_rows(model: ChurnModel, frame: pd.DataFrame, top_k: int,
                     background: pd.DataFrame | None = None,
                     approximate: bool = False) -> pd.DataFrame:
    """``ml.explanations`` rows for the customer-months in ``frame``."""
    from churn_assets.training.explain import explain, top_reasons

    contributions, _ = explain(model, frame, background=background, approximate=approximate)
    keys = frame[["customer_id", "snapshot_month"]].reset_index(drop=True)
    reasons = top_reasons(contributions, frame.reset_index(drop=True), keys, k=top_k)
    reasons.insert(2, "model_version", str(model.version))
    return reasons
