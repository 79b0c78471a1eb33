"""Each candidate trains on small seeded data through the same path; roles follow the schema,
not column names."""

from __future__ import annotations

import numpy as np
import pytest

from churn_assets.policies import load_policies
from churn_assets.training.candidates import candidate, registered
from churn_assets.training.candidates.base import FitContext
from churn_assets.training.candidates.logistic_regression import LOGISTIC_REGRESSION, train_logistic_regression
from churn_assets.training.candidates.random_forest import RANDOM_FOREST, train_random_forest
from churn_assets.training.candidates.tuned_xgboost import XGBOOST, train_xgboost
from churn_assets.training.model import apply_calibration, evaluate
from churn_assets.training.columns import (
    RoleSettings, RolesError, build_feature_spec, duckdb_types_of_frame, infer_roles,
)
from churn_assets.training.explain import check_additivity, explain
from churn_assets.training.registry import load_model_folder, models_root
from churn_assets.training.sample_data import synthetic_training_frame
from churn_assets.training.split import split_training_set
from churn_assets.training.train import save_candidate
from churn_assets.training.tuning import TuningSettings

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


# Small budgets so every registered candidate trains in seconds.
SMALL_PARAMS = {"random_forest": {"n_estimators": 40}, "lightgbm": {"max_rounds": 200}}
SMALL_TUNING = TuningSettings(n_trials=4, timeout_s=None, max_rounds=60, early_stopping_rounds=10, nthread=1)


@pytest.fixture(scope="module")
def every_candidate(prepared, tmp_path_factory):
    """Every registered candidate fitted, saved and loaded back through the protocol, in
    registration order (stacking candidates last, on the others)."""
    split, spec = prepared
    root = tmp_path_factory.mktemp("artifacts")
    context = FitContext(seed=42, tuning=SMALL_TUNING, training_data_version="test")
    fitted, loaded = {}, {}
    for entry in registered().values():
        if entry.stacks:
            context.members = list(loaded.values())
        model = entry.fit(split, spec, entry.params(SMALL_PARAMS.get(entry.algorithm)), context)
        record = save_candidate(model, split, root, "test", entry.role)
        fitted[entry.algorithm] = (model, record)
        loaded[entry.algorithm] = load_model_folder(models_root(root) / record["version"], record["version"])
    return split, fitted, loaded


def test_every_registered_candidate_trains_saves_loads_and_explains(every_candidate):
    split, fitted, loaded = every_candidate
    assert set(fitted) == set(registered()) >= {"logistic_regression", "random_forest", "xgboost", "lightgbm",
                                                  "ensemble"}
    for algorithm, (model, record) in fitted.items():
        assert record["algorithm"] == algorithm and record["test_auc"] > 0.7, algorithm
        reloaded = loaded[algorithm]
        assert reloaded.candidate is candidate(algorithm)
        assert np.allclose(reloaded.predict_proba(split.test), model.predict_proba(split.test)), algorithm
        rows = split.test.head(30)
        contributions, margin = explain(reloaded, rows, background=split.train.head(10))
        assert contributions.values.shape == (len(rows), len(reloaded.feature_spec.roles.features))
        if reloaded.candidate.explains_exactly(reloaded):
            assert check_additivity(contributions, margin)[0], algorithm


def test_approximate_explanations_add_up_for_every_exact_candidate(every_candidate):
    """The approximation older months of a backfill get (Saabas path attributions for the
    boosters) adds up to the same margin as the exact TreeSHAP, from the same base value."""
    split, _, loaded = every_candidate
    rows = split.test.head(40)
    for algorithm, model in loaded.items():
        if not model.candidate.explains_exactly(model):
            continue
        exact, margin = explain(model, rows, background=None)
        approximate, approximate_margin = explain(model, rows, background=None, approximate=True)
        assert np.allclose(margin, approximate_margin), algorithm
        assert check_additivity(approximate, margin)[0], algorithm
        assert np.allclose(approximate.base_values, exact.base_values), algorithm


def test_lightgbm_saabas_attributions_follow_each_rows_path(every_candidate):
    from churn_assets.training.candidates.lightgbm_model import leaf_paths

    split, _, loaded = every_candidate
    model = loaded["lightgbm"]
    features = model.features(split.test.head(25))
    contributions, margin = model.candidate.contributions(model, features, approximate=True)
    assert contributions.method == "lightgbm-saabas"
    assert model.candidate.explanation_method(model, approximate=True) == "saabas"
    # Per tree, the leaf's path row sums to the leaf's value minus the root's expected value.
    tables, base = leaf_paths(model.estimator)
    leaves = model.estimator.predict(features, pred_leaf=True)
    per_tree = np.column_stack([table[leaves[:, tree]].sum(axis=1) for tree, table in enumerate(tables)])
    assert np.allclose(base + per_tree.sum(axis=1), margin)
    # A feature no tree splits on gets nothing.
    used = set(model.estimator.trees_to_dataframe()["split_feature"].dropna())
    for column, name in enumerate(features.columns):
        if name not in used:
            assert np.all(contributions.values[:, column] == 0), name


def test_the_ensemble_stacks_the_other_candidates(every_candidate):
    split, fitted, _ = every_candidate
    ensemble, record = fitted["ensemble"]
    members = {m.algorithm for m in ensemble.estimator.members}
    # By default only members with exact attributions, so the ensemble's are exact too.
    assert members == {"logistic_regression", "xgboost", "lightgbm"}
    assert ensemble.candidate.explains_exactly(ensemble)
    assert set(ensemble.params["weights"]) == members
    # Its validation score is cross-fitted on the validation rows, not in-sample.
    assert "valid" in ensemble.held_out_raw and record["valid_auc"] < 1.0


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
    assert model.candidate.explains_exactly(model) == (algorithm != RANDOM_FOREST)


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
    policy_file = tmp_path / "churn.yaml"
    policy_file.write_text("training:\n  roles:\n    id_columns: [account]\n    time_column: period\n"
                           "    label_column: left\n")
    roles = infer_roles(duckdb_types_of_frame(frame), load_policies(policy_file).training.roles.settings())
    assert "plan_term" in roles.categorical and "tickets" in roles.numeric
    split = split_training_set(frame, roles)
    spec = build_feature_spec(split.train, roles)
    for algorithm in (LOGISTIC_REGRESSION, XGBOOST):
        assert evaluate(TRAINERS[algorithm](split, spec), split)["test_auc"] > 0.7


def test_the_forest_predicts_the_same_bits_every_time_with_parallel_training(prepared):
    # Its calibration and version are functions of these bits: parallel vote sums would
    # give a new model version on every run of the same data.
    split, spec = prepared
    first, second = (train_random_forest(split, spec, n_estimators=30, n_jobs=2) for _ in range(2))
    runs = [first.predict_raw(split.test) for _ in range(3)] + [second.predict_raw(split.test)]
    assert all(np.array_equal(runs[0], run) for run in runs[1:])
    assert first.calibration == second.calibration


def test_calibration_is_not_chosen_from_a_single_churner():
    """A validation split with one row of a class cannot be cross-validated (a fold would fit
    a calibrator on one class): the scores stay uncalibrated and the record says why."""
    from churn_assets.training.model import choose_calibration

    rng = np.random.default_rng(0)
    raw = rng.uniform(0.01, 0.99, 40)
    labels = np.zeros(40, dtype=np.int8)
    labels[7] = 1
    chosen = choose_calibration(raw, labels, seed=0)
    assert chosen["method"] == "none" and chosen["cv_logloss"] == {}
    assert "1 row(s) of a class" in chosen["skipped"]
    assert np.array_equal(apply_calibration(chosen, raw), raw)
    labels[8] = 1  # two churners: two folds, each with one
    assert choose_calibration(raw, labels, seed=0)["cv_logloss"].keys() == {"none", "sigmoid", "isotonic"}


def test_a_model_trained_on_an_enriched_sample_gives_the_populations_odds():
    """Keeping every churner but a tenth of the others multiplies the odds of churn by 10:
    the sample's model is mapped back (odds x 0.1), saved with it, and keeps its ranking."""
    from churn_assets.training.model import SAMPLE_ODDS_FACTOR, correct_for_sampling
    from churn_assets.training.spark_sample import TrainingSample

    sample = TrainingSample(frame=None, column_types={}, total_rows=0, fractions={"0": 0.1, "1": 1.0})
    assert sample.odds_factor == pytest.approx(0.1)
    assert TrainingSample(None, {}, 0, {"0": 0.5, "1": 0.5}).odds_factor is None
    raw = np.array([0.05, 0.5, 0.9])
    corrected = apply_calibration({"method": "none", SAMPLE_ODDS_FACTOR: sample.odds_factor}, raw)
    odds = raw / (1 - raw) * 0.1
    assert np.allclose(corrected, odds / (1 + odds)) and np.all(np.diff(corrected) > 0)

    frame = synthetic_training_frame(600, seed=3)
    roles = infer_roles(duckdb_types_of_frame(frame))
    split = split_training_set(frame, roles)
    model = train_logistic_regression(split, build_feature_spec(split.train, roles))
    before = np.asarray(model.predict_proba(split.test))
    after = np.asarray(correct_for_sampling(model, 0.1).predict_proba(split.test))
    assert after.mean() < before.mean() and np.array_equal(np.argsort(after, kind="stable"), np.argsort(before, kind="stable"))
    assert model.calibration[SAMPLE_ODDS_FACTOR] == 0.1
