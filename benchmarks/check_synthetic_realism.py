"""Does the synthetic source look like real churn data? Churn share, monthly rate and the
ROC-AUC a quick point-in-time model reaches on it.

Builds simple features per customer and snapshot month with pandas (tenure, contract,
services, charges, event counts of the snapshot month and the trailing three months,
usage, price changes), labels them with the shared rule (a snapshot in M and a
cancellation dated in M+1; unlabelled when M+1 is not observed), trains scikit-learn's
HistGradientBoostingClassifier on the older months and scores later months.

    uv run python benchmarks/check_synthetic_realism.py --customers 20000 --months 24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def realism_report(config) -> dict:
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from churn_assets.source.synthetic import generate_months

    customers, snapshots, cancellations, event_counts = [], [], [], []
    for key, frames in generate_months(config):
        customers.append(frames["customers"])
        snapshots.append(frames["subscriptions"])
        cancellations.append(frames["cancellations"])
        events = frames["events"]
        month = events["event_time"].dt.to_period("M").dt.to_timestamp()
        counts = (
            events.assign(month=month, n=1)
            .pivot_table(index=["customer_id", "month"], columns="event_type",
                         values="n", aggfunc="sum", fill_value=0)
        )
        sums = events.assign(month=month).pivot_table(
            index=["customer_id", "month"], columns="event_type", values="value",
            aggfunc="sum", fill_value=0.0,
        )
        counts = counts.join(sums, rsuffix="_value")
        event_counts.append(counts)
    customers = pd.concat(customers, ignore_index=True)
    snapshots = pd.concat(snapshots, ignore_index=True)
    cancellations = pd.concat(cancellations, ignore_index=True)
    event_counts = pd.concat(event_counts).fillna(0).groupby(level=[0, 1]).sum()

    observed_last = snapshots["snapshot_month"].max()
    frame = snapshots.merge(customers, on="customer_id", how="left")
    frame["tenure"] = (
        (frame["snapshot_month"].dt.year - frame["signup_date"].dt.year) * 12
        + frame["snapshot_month"].dt.month - frame["signup_date"].dt.month + 1
    )
    next_month = frame["snapshot_month"] + pd.offsets.MonthBegin(1)
    cancel_month = cancellations.assign(
        month=cancellations["cancel_date"].dt.to_period("M").dt.to_timestamp()
    )[["customer_id", "month"]]
    frame = frame.merge(
        cancel_month.assign(churned=1), left_on=["customer_id", next_month],
        right_on=["customer_id", "month"], how="left",
    ).drop(columns=["month", "key_1"], errors="ignore")
    frame["label"] = frame["churned"].fillna(0)
    frame.loc[next_month > observed_last, "label"] = np.nan

    # Trailing windows: this month, and this month plus the two before (about 90 days).
    wide = event_counts.reset_index()
    feature_types = [c for c in wide.columns if c not in ("customer_id", "month")]
    keys = frame[["customer_id", "snapshot_month"]].rename(columns={"snapshot_month": "month"})
    window = keys.merge(wide, on=["customer_id", "month"], how="left").fillna(0)
    trailing = window[feature_types].copy()
    for lag in (1, 2):
        shifted = wide.assign(month=wide["month"] + pd.offsets.MonthBegin(lag))
        trailing += keys.merge(shifted, on=["customer_id", "month"], how="left").fillna(0)[feature_types]
    frame = frame.join(window[feature_types]).join(trailing.add_suffix("_90d"))

    categorical = ["contract", "internet_service", "payment_method", "multiple_lines",
                   "online_security", "online_backup", "device_protection", "tech_support",
                   "streaming_tv", "streaming_movies", "gender"]
    for column in categorical:
        frame[column] = frame[column].astype("category").cat.codes
    numeric = ["tenure", "monthly_charges", "total_charges", "senior_citizen", "partner",
               "dependents", "paperless_billing", "phone_service"]
    features = categorical + numeric + feature_types + [f"{c}_90d" for c in feature_types]
    frame[numeric[3:]] = frame[numeric[3:]].astype(float)

    labelled = frame[frame["label"].notna()]
    months = sorted(labelled["snapshot_month"].unique())
    test_months = months[-3:]
    train = labelled[labelled["snapshot_month"] < test_months[0]]
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0)
    model.fit(train[features].astype(float), train["label"])
    aucs = {}
    for month in test_months:
        test = labelled[labelled["snapshot_month"] == month]
        aucs[str(month)[:7]] = roc_auc_score(test["label"], model.predict_proba(test[features].astype(float))[:, 1])
    ever = customers["customer_id"].nunique()
    churn_rate_by_month = labelled.groupby("snapshot_month")["label"].mean()
    return {
        "customers_ever": ever,
        "churned_share_of_ever": round(cancellations["customer_id"].nunique() / ever, 4),
        "monthly_churn_rate_mean": round(float(churn_rate_by_month.mean()), 4),
        "monthly_churn_rate_min_max": (round(float(churn_rate_by_month.min()), 4),
                                       round(float(churn_rate_by_month.max()), 4)),
        "active_first_last": (int((snapshots.snapshot_month == snapshots.snapshot_month.min()).sum()),
                              int((snapshots.snapshot_month == observed_last).sum())),
        "train_rows": len(train),
        "test_auc_by_month": {k: round(v, 4) for k, v in aucs.items()},
        "test_auc_mean": round(float(np.mean(list(aucs.values()))), 4),
        "churn_rate_by_month": {str(k)[:7]: round(float(v), 4) for k, v in churn_rate_by_month.items()},
    }


def main() -> None:
    from churn_assets.source.synthetic import GeneratorConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    report = realism_report(GeneratorConfig(customers=args.customers, months=args.months, seed=args.seed))
    for name, value in report.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
