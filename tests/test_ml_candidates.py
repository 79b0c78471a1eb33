"""Each candidate trains on small seeded data; roles follow the schema, not column names."""

from __future__ import annotations

import numpy as np
import pytest

from churn_assets.ml.candidates import (
    LOGISTIC_REGRESSION, RANDOM_FOREST, XGBOOST, apply_calibration, evaluate,
    train_logistic_regression, train_random_forest, train_xgboost,
)
from churn_assets.ml.columns import (
    RoleSettings, RolesError, build_feature_spec, duckdb_types_of_frame, infer_roles,
)
from churn_assets.ml.sample_data import synthetic_training_frame
from churn_assets.ml.split import split_training_set

TRAINERS = {
    LOGISTIC_REGRESSION: lambda split, spec: train_logistic_regression(split, spec),
    RANDOM_FOREST: lambda split, spec: train_random_forest(split, spec, n_estimators=40),
    XGBOOST: lambda split, spec: train_xgboost(split, spec, {"eta": 0.1, "max_depth": 3}, max_rounds=80),
}


@pytest.fixture(scope="module")
def prepared():
    frame = synthetic_training_frame(n_customers=500, n_months=5, seed=11)
    roles = infer_roles(duckdb_types_of_frame(frame))
    split = split_training_set(frame, roles)
    return split, build_feature_spec(split.train, roles)


def test_roles_come_from_the_schema():
    frame = synthetic_training_frame(n_customers=20, n_months=2)
    roles = infer_roles(duckdb_types_of_frame(frame))
    assert roles.categorical == ("contract", "internet_service", "paperless_billing")
    assert roles.numeric == ("tenure_months", "monthly_charges", "total_charges", "support_calls")
    forced = infer_roles(duckdb_types_of_frame(frame), RoleSettings(categorical_columns=("support_calls",),
                                                                    exclude_columns=("total_charges",)))
    assert "support_calls" in forced.categorical and "total_charges" not in forced.features
    with pytest.raises(RolesError, match="label column\\(s\\) target not in the training table"):
        infer_roles(duckdb_types_of_frame(frame), RoleSettings(label_column="target"))


def test_features_with_a_single_value_are_left_out_of_the_spec():
    frame = synthetic_training_frame(n_customers=20, n_months=2).assign(charge_change_1m=np.nan, outages=0.0)
    frame["late_payments"] = np.where(np.arange(len(frame)) % 2, 0.0, np.nan)
    roles = infer_roles(duckdb_types_of_frame(frame))
    assert {"charge_change_1m", "outages", "late_payments"} <= set(roles.numeric)
    spec = build_feature_spec(frame, roles)
    assert "charge_change_1m" not in spec.roles.features and "charge_change_1m" in spec.roles.excluded
    assert "outages" not in spec.roles.features and "outages" in spec.roles.excluded
    # One value plus missing ones: whether it is missing may carry information.
    assert "late_payments" in spec.roles.features


@pytest.mark.parametrize("algorithm", list(TRAINERS))
def test_each_candidate_learns_and_is_calibrated(prepared, algorithm):
    split, spec = prepared
    model = TRAINERS[algorithm](split, spec)
    metrics = evaluate(model, split)
    probabilities = model.predict_proba(split.test)

    assert model.algorithm == algorithm
    assert metrics["test_auc"] > 0.7
    assert probabilities.shape == (len(split.test),)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert model.calibration["method"] in {"none", "sigmoid", "isotonic"}
    # Balanced weighting inflates raw probabilities; the chosen calibration brings the mean
    # prediction back near the observed churn rate.
    assert abs(metrics["valid_mean_prediction"] - metrics["valid_positive_rate"]) < 0.05
    assert (model.booster is not None) == (algorithm == XGBOOST)


def test_unseen_categories_and_missing_values_still_score(prepared):
    split, spec = prepared
    model = TRAINERS[XGBOOST](split, spec)
    odd = split.test.head(5).copy()
    odd["contract"] = "Three year"
    odd["monthly_charges"] = np.nan
    for trained in (model, TRAINERS[LOGISTIC_REGRESSION](split, spec)):
        assert np.isfinite(trained.predict_proba(odd)).all()


def test_calibration_maps_are_plain_json_functions():
    raw = np.array([0.1, 0.5, 0.9])
    assert np.allclose(apply_calibration({"method": "none"}, raw), raw)
    sigmoid = apply_calibration({"method": "sigmoid", "slope": 1.0, "intercept": 0.0}, raw)
    assert np.allclose(sigmoid, raw)
    isotonic = apply_calibration({"method": "isotonic", "x": [0.0, 1.0], "y": [0.2, 0.4]}, raw)
    assert np.allclose(isotonic, [0.22, 0.3, 0.38])


def test_a_dataset_with_other_column_names_trains_unchanged(tmp_path):
    names = {"customer_id": "account", "snapshot_month": "period", "churned": "left",
             "contract": "plan_term", "tenure_months": "age_in_months", "support_calls": "tickets"}
    frame = synthetic_training_frame(n_customers=400, n_months=5, seed=12, names=names)
    roles_file = tmp_path / "roles.yaml"
    roles_file.write_text("roles:\n  id_columns: [account]\n  time_column: period\n  label_column: left\n")
    roles = infer_roles(duckdb_types_of_frame(frame), RoleSettings.from_yaml(roles_file))
    assert "plan_term" in roles.categorical and "tickets" in roles.numeric
    split = split_training_set(frame, roles)
    spec = build_feature_spec(split.train, roles)
    for algorithm in (LOGISTIC_REGRESSION, XGBOOST):
        assert evaluate(TRAINERS[algorithm](split, spec), split)["test_auc"] > 0.7
