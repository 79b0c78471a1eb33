"""SHAP core: native TreeSHAP additivity, the permutation fallback, reasons table, plots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn_assets.training import explain

CATEGORIES = {
    "contract": ["Month-to-month", "One year", "Two year"],
    "paperless_billing": ["False", "True"],
}


@pytest.fixture(scope="module")
def customers() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(11)
    n = 1500
    frame = pd.DataFrame(
        {
            "contract": rng.choice(CATEGORIES["contract"], n),
            "paperless_billing": rng.choice([True, False], n),
            "tenure_months": rng.integers(0, 72, n).astype(float),
            "monthly_charges": rng.uniform(20, 110, n),
        }
    )
    frame.loc[rng.choice(n, 40, replace=False), "monthly_charges"] = np.nan
    logit = (-1.0 + 1.6 * (frame.contract == "Month-to-month") - 0.04 * frame.tenure_months
             + 0.01 * frame.monthly_charges.fillna(60))
    labels = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame, labels


@pytest.fixture(scope="module")
def booster_and_input(customers):
    import xgboost as xgb

    frame, labels = customers
    model_input = explain.booster_frame(frame, list(frame.columns), CATEGORIES)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "eta": 0.2, "nthread": 2, "seed": 0,
         "max_cat_to_onehot": 1},
        xgb.DMatrix(model_input, labels, enable_categorical=True),
        num_boost_round=40,
    )
    return booster, model_input


def test_native_contributions_add_up_to_the_margin(booster_and_input):
    booster, model_input = booster_and_input
    contributions = explain.xgboost_contributions(booster, model_input)
    assert contributions.values.shape == (len(model_input), 4)
    assert contributions.method == explain.NATIVE_METHOD
    margin = explain.booster_margin(booster, model_input)
    passed, metadata = explain.check_additivity(contributions, margin)
    assert passed, metadata
    assert metadata["max_abs_error"] < 1e-4 and metadata["rows_checked"] == len(model_input)
    # The margin really is the model's output: sigmoid(margin) == predict().
    import xgboost as xgb

    probabilities = booster.predict(xgb.DMatrix(model_input, enable_categorical=True))
    assert np.allclose(1 / (1 + np.exp(-margin)), probabilities, atol=1e-6)


def test_additivity_check_fails_when_contributions_are_off(booster_and_input):
    booster, model_input = booster_and_input
    contributions = explain.xgboost_contributions(booster, model_input)
    margin = explain.booster_margin(booster, model_input)
    contributions.values[5, 2] += 0.01
    passed, metadata = explain.check_additivity(contributions, margin)
    assert not passed
    assert metadata["rows_failing"] == 1 and metadata["worst_row"] == 5
    assert "1 of 1500 rows" in metadata["description"]


def test_booster_frame_uses_training_categories_and_refuses_missing_columns(booster_and_input):
    frame = pd.DataFrame(
        {
            "contract": ["Two year", "Lifetime"],
            "paperless_billing": [True, False],
            "tenure_months": [3.0, 4.0],
            "monthly_charges": [50.0, 60.0],
        }
    )
    prepared = explain.booster_frame(frame, list(frame.columns), CATEGORIES)
    # Codes follow the training order, whatever this frame contains; unseen -> missing.
    assert prepared["contract"].cat.codes.tolist() == [2, -1]
    assert prepared["paperless_billing"].astype(str).tolist() == ["True", "False"]
    with pytest.raises(explain.ExplanationError, match=r"\['monthly_charges'\]"):
        explain.booster_frame(frame.drop(columns="monthly_charges"), list(frame.columns))
    booster, _ = booster_and_input
    with pytest.raises(explain.ExplanationError, match="differ from the booster"):
        explain.xgboost_contributions(booster, prepared[prepared.columns[::-1]])


def test_permutation_fallback_is_exact_for_an_additive_model(customers):
    frame, _ = customers
    weights = {"Month-to-month": 1.5, "One year": 0.0, "Two year": -1.0}

    def logit_of(rows: pd.DataFrame) -> np.ndarray:
        return (rows["contract"].map(weights).to_numpy() - 0.05 * rows["tenure_months"]
                + 0.7 * rows["paperless_billing"].astype(float))

    def predict_proba(rows: pd.DataFrame) -> np.ndarray:
        return 1 / (1 + np.exp(-logit_of(rows)))

    explained = frame.iloc[:40].drop(columns="monthly_charges")
    background = frame.iloc[-25:].drop(columns="monthly_charges")
    contributions = explain.permutation_contributions(
        predict_proba, explained, background, permutations=1, seed=3
    )
    # For a model additive in logit, the Shapley value is the feature's own term minus its
    # background mean, whatever permutation is drawn.
    expected_tenure = -0.05 * (explained["tenure_months"] - background["tenure_months"].mean())
    expected_contract = explained["contract"].map(weights) - background["contract"].map(
        weights).mean()
    names = contributions.feature_names
    assert np.allclose(contributions.values[:, names.index("tenure_months")], expected_tenure)
    assert np.allclose(contributions.values[:, names.index("contract")], expected_contract)
    passed, metadata = explain.check_additivity(contributions, logit_of(explained))
    assert passed, metadata
    assert contributions.method == explain.PERMUTATION_METHOD


def test_permutation_fallback_handles_missing_values_and_small_batches(customers):
    frame, labels = customers
    seen = []

    def predict_proba(rows: pd.DataFrame) -> np.ndarray:
        seen.append(rows)
        charges = rows["monthly_charges"].fillna(0.0).to_numpy()
        return np.column_stack([1 - charges / 200, charges / 200 + 1e-3])

    rows = frame.iloc[:6]
    background = frame[frame["monthly_charges"].isna()].iloc[:3]
    contributions = explain.permutation_contributions(
        predict_proba, rows, background, permutations=2, batch_rows=200
    )
    assert len(seen) > 2  # several batches
    assert seen[0]["paperless_billing"].dtype == bool
    assert seen[0]["contract"].isin(CATEGORIES["contract"]).all()
    names = contributions.feature_names
    others = [names.index(n) for n in names if n != "monthly_charges"]
    assert np.allclose(contributions.values[:, others], 0.0)
    probabilities = predict_proba(rows)[:, 1]
    margin = np.log(probabilities / (1 - probabilities))
    assert explain.check_additivity(contributions, margin)[0]


def test_global_importance_ranks_and_shares():
    contributions = explain.Contributions(
        values=np.array([[0.5, -2.0, 0.0], [-0.5, 1.0, 0.1]]),
        base_values=np.zeros(2),
        feature_names=["a", "b", "c"],
        method="test",
    )
    table = explain.global_importance(contributions)
    assert table["feature"].tolist() == ["b", "a", "c"]
    assert table["rank"].tolist() == [1, 2, 3]
    assert table["mean_abs_shap"].tolist() == pytest.approx([1.5, 0.5, 0.05])
    assert table["share"].sum() == pytest.approx(1.0)
    assert table["mean_shap"].tolist() == pytest.approx([-0.5, 0.0, 0.05])


def test_top_reasons_shape_order_and_values():
    contributions = explain.Contributions(
        values=np.array(
            [
                [0.3, -0.1, 0.9, -0.7, 0.0],
                [-0.2, -0.4, -0.1, -0.3, -0.05],
            ]
        ),
        base_values=np.zeros(2),
        feature_names=["charges", "contract", "calls", "tenure", "gender"],
        method="test",
    )
    features = pd.DataFrame(
        {
            "charges": [99.123456, 20.0],
            "contract": ["Month-to-month", "Two year"],
            "calls": [4, 0],
            "tenure": [2.0, np.nan],
            "gender": ["Female", "Male"],
        }
    )
    keys = pd.DataFrame({"customer_id": ["C1", "C2"], "snapshot_month": ["2025-01-01"] * 2})
    reasons = explain.top_reasons(contributions, features, keys, k=2)
    assert list(reasons.columns) == ["customer_id", "snapshot_month", "direction", "rank",
                                     "feature", "feature_value", "shap_value"]
    c1 = reasons[reasons.customer_id == "C1"]
    up = c1[c1.direction == explain.INCREASES_RISK]
    down = c1[c1.direction == explain.DECREASES_RISK]
    assert up["feature"].tolist() == ["calls", "charges"] and up["rank"].tolist() == [1, 2]
    assert up["feature_value"].tolist() == ["4", "99.12"]
    assert down["feature"].tolist() == ["tenure", "contract"]
    assert down["shap_value"].tolist() == pytest.approx([-0.7, -0.1])
    # C2: nothing pushes risk up, so it has no increases_risk rows; missing value stays NULL.
    c2 = reasons[reasons.customer_id == "C2"]
    assert set(c2["direction"]) == {explain.DECREASES_RISK}
    assert c2["feature"].tolist() == ["contract", "tenure"]
    assert pd.isna(c2["feature_value"].iloc[1])
    assert len(reasons) == 6
    # k larger than the number of features is capped.
    assert len(explain.top_reasons(contributions, features, keys, k=10)) == 9
    with pytest.raises(explain.ExplanationError, match="k must be"):
        explain.top_reasons(contributions, features, keys, k=0)
    with pytest.raises(explain.ExplanationError, match="2 explained rows"):
        explain.top_reasons(contributions, features.iloc[:1], keys, k=1)


def test_shap_plots_are_written(tmp_path, booster_and_input, customers):
    from churn_assets.evaluation import report

    booster, model_input = booster_and_input
    frame, _ = customers
    contributions = explain.xgboost_contributions(booster, model_input.iloc[:400])
    importance = explain.global_importance(contributions)
    plots = report.shap_plots(contributions, frame.iloc[:400], importance, dependence_top=2)
    top_two = importance["feature"].head(2).tolist()
    assert set(plots) == {"shap_importance.png", "shap_beeswarm.png",
                          *(f"shap_dependence_{name}.png" for name in top_two)}
    written = report.write_files(tmp_path, plots)
    for path in written:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and 5_000 < len(data) <= report.MAX_PNG_BYTES


def test_approximate_contributions_also_add_up(booster_and_input):
    booster, model_input = booster_and_input
    approximate = explain.xgboost_contributions(booster, model_input, approximate=True)
    assert approximate.method == explain.APPROXIMATE_METHOD
    assert explain.check_additivity(approximate, explain.booster_margin(booster, model_input))[0]
