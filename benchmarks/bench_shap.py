"""Time SHAP for an XGBoost churn model: the booster's native contributions vs shap.

For each size, on the same model and rows, in one run:
- native: ``booster.predict(DMatrix, pred_contribs=True)`` (what churn_assets.training.explain uses),
- shap.TreeExplainer(booster).shap_values(X) (the shap package's public route),
- the reasons table (top-k up and down per row) built from the native contributions.
Optionally (``--interventional``) shap's own TreeSHAP with a background set, which does
not delegate to XGBoost, on a small sample to show what the non-native route costs.

    uv run python benchmarks/bench_shap.py                 # 10k and 100k rows
    uv run python benchmarks/bench_shap.py --sizes 10000 --rounds 100

Prints a Markdown table; speed is measured here, never asserted in tests.

Finding (shap 0.51, xgboost 3.2): for an XGBoost booster, TreeExplainer's default
tree-path-dependent mode calls the booster's own ``pred_contribs``, so both columns are the
same C++ computation (identical values) and the ratio stays near 1; shap's own
interventional TreeSHAP does not read categorical splits at all.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

CONTRACTS = ["Month-to-month", "One year", "Two year"]
INTERNET = ["DSL", "Fiber optic", "No"]
PAYMENT = ["Electronic check", "Mailed check", "Bank transfer", "Credit card"]
YES_NO = ["No", "Yes"]


def churn_like_frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """~20 features shaped like features.customer_features: categoricals and counts."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "contract": pd.Categorical(rng.choice(CONTRACTS, rows, p=[0.55, 0.25, 0.2]),
                                       categories=CONTRACTS),
            "internet_service": pd.Categorical(rng.choice(INTERNET, rows), categories=INTERNET),
            "payment_method": pd.Categorical(rng.choice(PAYMENT, rows), categories=PAYMENT),
            "paperless_billing": pd.Categorical(rng.choice(YES_NO, rows), categories=YES_NO),
            "senior_citizen": pd.Categorical(rng.choice(YES_NO, rows, p=[0.84, 0.16]),
                                             categories=YES_NO),
            "tenure_months": rng.integers(0, 72, rows).astype(float),
            "monthly_charges": rng.uniform(18, 120, rows),
            "charge_change_1m": rng.normal(0, 3, rows),
            "charge_change_3m": rng.normal(0, 5, rows),
            "support_calls_30d": rng.poisson(0.4, rows).astype(float),
            "support_calls_90d": rng.poisson(1.2, rows).astype(float),
            "late_payments_90d": rng.poisson(0.3, rows).astype(float),
            "outages_30d": rng.poisson(0.2, rows).astype(float),
            "days_since_support_call": rng.exponential(120, rows),
            "usage_gb": rng.gamma(2.0, 40.0, rows),
            "usage_change": rng.normal(0, 10, rows),
            "services_count": rng.integers(1, 9, rows).astype(float),
            "plan_change_3m": rng.integers(0, 2, rows).astype(float),
        }
    )
    logit = (
        -2.0
        + 1.4 * (frame["contract"] == "Month-to-month")
        + 0.6 * (frame["internet_service"] == "Fiber optic")
        - 0.035 * frame["tenure_months"]
        + 0.01 * frame["monthly_charges"]
        + 0.35 * frame["support_calls_30d"]
        + 0.5 * frame["late_payments_90d"]
        + 0.05 * frame["charge_change_1m"]
    )
    labels = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame, labels


def timed(function, repeats: int = 1):
    best = float("inf")
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=200, help="boosting rounds of the model")
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--interventional", type=int, default=0, metavar="ROWS",
                        help="also time shap's own interventional TreeSHAP on ROWS rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="best of N timings per method")
    args = parser.parse_args()

    import shap
    import xgboost as xgb

    from churn_assets.training import explain

    train_frame, train_labels = churn_like_frame(50_000, args.seed)
    start = time.perf_counter()
    booster = xgb.train(
        {"objective": "binary:logistic", "tree_method": "hist", "max_depth": args.depth,
         "eta": 0.05, "nthread": args.threads, "seed": args.seed, "max_cat_to_onehot": 4},
        xgb.DMatrix(train_frame, train_labels, enable_categorical=True),
        num_boost_round=args.rounds,
    )
    train_s = time.perf_counter() - start
    print(f"model: {args.rounds} trees, depth {args.depth}, {train_frame.shape[1]} features "
          f"(5 categorical), trained on 50,000 rows in {train_s:.1f}s; "
          f"threads={args.threads}; shap {shap.__version__}, xgboost {xgb.__version__}\n")

    print("| rows | native pred_contribs (s) | shap.TreeExplainer (s) | shap / native | "
          "max abs diff | additivity error | Saabas approx (s) | reasons table (s) | "
          "reason rows |", flush=True)
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for size in args.sizes:
        frame, _ = churn_like_frame(size, args.seed + size)
        native_s, contributions = timed(
            lambda: explain.xgboost_contributions(booster, frame), args.repeats
        )
        margin = explain.booster_margin(booster, frame)
        additivity = explain.additivity_error(contributions, margin)
        # shap's TreeExplainer cannot take pandas categories for XGBoost; it takes the codes.
        codes = frame.apply(lambda s: s.cat.codes.astype(float) if s.dtype == "category" else s)
        explainer = shap.TreeExplainer(booster)
        shap_s, shap_values = timed(
            lambda: explainer.shap_values(codes, check_additivity=False), args.repeats
        )
        agreement = float(np.max(np.abs(shap_values - contributions.values)))
        approx_s, _ = timed(
            lambda: explain.xgboost_contributions(booster, frame, approximate=True), args.repeats
        )
        keys = pd.DataFrame({"customer_id": [f"C{i:07d}" for i in range(size)]})
        reasons_s, reasons = timed(
            lambda: explain.top_reasons(contributions, frame, keys, k=args.top_k)
        )
        print(f"| {size:,} | {native_s:.2f} | {shap_s:.2f} | {shap_s / native_s:.2f}x | "
              f"{agreement:.1e} | {additivity:.1e} | {approx_s:.2f} | {reasons_s:.2f} | "
              f"{len(reasons):,} |", flush=True)

    if args.interventional:
        frame, _ = churn_like_frame(args.interventional, args.seed + 1)
        codes = frame.apply(lambda s: s.cat.codes.astype(float) if s.dtype == "category" else s)
        background = codes.iloc[:100]
        try:
            explainer = shap.TreeExplainer(booster, data=background,
                                           feature_perturbation="interventional")
            seconds, _ = timed(lambda: explainer.shap_values(codes, check_additivity=False))
            native_s, _ = timed(lambda: explain.xgboost_contributions(booster, frame))
            print(f"\nshap interventional TreeSHAP (100 background rows) on "
                  f"{args.interventional:,} rows: {seconds:.2f}s vs native {native_s:.3f}s "
                  f"({seconds / native_s:.0f}x)")
        except Exception as error:  # shap's own tree parser may not read categorical splits
            print(f"\nshap interventional TreeSHAP could not run on this model: {error}")


if __name__ == "__main__":
    main()
