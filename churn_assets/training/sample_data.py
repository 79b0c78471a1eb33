"""Training frames for tests, benchmarks and notebooks that do not need the warehouse.

``telco_training_frame`` turns the IBM Telco CSV into the shape of features.training_set
(one labelled month); ``synthetic_training_frame`` makes a small multi-month frame whose
churn depends on its features, with the last month unlabelled like the real table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from churn_assets.source.ingest import TELCO_TO_CONTRACT

if TYPE_CHECKING:
    import pandas as pd

# The ingestion mapping plus the two Telco columns that the warehouse turns into other
# things (tenure -> signup date -> tenure_months, Churn -> a cancellation -> churned).
TELCO_RENAMES = {**TELCO_TO_CONTRACT, "tenure": "tenure_months", "Churn": "churned"}
YES_NO_COLUMNS = ("partner", "dependents", "phone_service", "paperless_billing")


def telco_training_frame(path: str | Path, snapshot_month: str = "2024-01-01") -> pd.DataFrame:
    """The Telco CSV as one labelled snapshot month with snake_case columns."""
    import pandas as pd

    raw = pd.read_csv(path)
    missing = sorted(set(TELCO_RENAMES) - set(raw.columns))
    if missing:
        raise ValueError(f"{path}: not a Telco-format file, missing column(s) {', '.join(missing)}")
    frame = raw[list(TELCO_RENAMES)].rename(columns=TELCO_RENAMES)
    frame["senior_citizen"] = frame["senior_citizen"].astype(bool)
    for name in YES_NO_COLUMNS:
        frame[name] = frame[name].eq("Yes")
    frame["total_charges"] = pd.to_numeric(frame["total_charges"].replace(" ", None), errors="coerce")
    frame["churned"] = frame["churned"].eq("Yes").astype("int8")
    frame.insert(1, "snapshot_month", pd.Timestamp(snapshot_month))
    return frame


def synthetic_training_frame(
    n_customers: int = 400,
    n_months: int = 6,
    seed: int = 0,
    names: dict[str, str] | None = None,
) -> pd.DataFrame:
    """A multi-month training frame; ``names`` renames columns (to test other schemas).

    Every customer appears in every month; the last month's label is NULL (not observed).
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    customers = np.array([f"C{i:05d}" for i in range(n_customers)])
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n_customers, p=[0.55, 0.25, 0.2])
    fiber = rng.random(n_customers) < 0.45
    paperless = rng.random(n_customers) < 0.6
    base_charge = np.where(fiber, 80.0, 45.0) + rng.normal(0, 10, n_customers)
    start_tenure = rng.integers(0, 60, n_customers)
    frames = []
    for month_index in range(n_months):
        month = pd.Timestamp("2024-01-01") + pd.DateOffset(months=month_index)
        tenure = start_tenure + month_index
        support_calls = rng.poisson(np.where(fiber, 1.2, 0.6))
        charges = base_charge + rng.normal(0, 3, n_customers)
        score = (
            -2.2
            + 1.4 * (contract == "Month-to-month")
            - 0.9 * (contract == "Two year")
            + 0.6 * fiber
            - 0.035 * tenure
            + 0.45 * support_calls
            + 0.3 * paperless
            # Interactions and thresholds a linear model cannot express, so trees have an edge.
            + 1.6 * (fiber & (support_calls >= 2))
            - 1.2 * ((tenure > 24) & (contract == "Month-to-month"))
            + rng.normal(0, 0.3, n_customers)
        )
        churned = (rng.random(n_customers) < 1 / (1 + np.exp(-score))).astype("float64")
        if month_index == n_months - 1:
            churned[:] = np.nan
        total = charges * np.maximum(tenure, 0)
        total[tenure == 0] = np.nan
        frames.append(pd.DataFrame({
            "customer_id": customers,
            "snapshot_month": month,
            "contract": contract,
            "internet_service": np.where(fiber, "Fiber optic", "DSL"),
            "paperless_billing": paperless,
            "tenure_months": tenure.astype("int64"),
            "monthly_charges": charges.round(2),
            "total_charges": total.round(2),
            "support_calls": support_calls.astype("int64"),
            "churned": churned,
        }))
    frame = pd.concat(frames, ignore_index=True)
    frame["churned"] = frame["churned"].astype("Int8")
    return frame.rename(columns=names or {})
