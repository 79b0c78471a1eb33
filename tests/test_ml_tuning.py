"""Optuna tuning: seeded, pruning really prunes, the study persists and resumes."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from churn_assets.ml.candidates import evaluate
from churn_assets.ml.columns import build_feature_spec, duckdb_types_of_frame, infer_roles
from churn_assets.ml.sample_data import synthetic_training_frame
from churn_assets.ml.split import split_training_set
from churn_assets.ml.tuning import TuningSettings, storage_url_for, study_name_for, tune_xgboost

FAST = TuningSettings(n_trials=10, timeout_s=None, max_rounds=40, early_stopping_rounds=10,
                      pruner_startup_trials=2, pruner_warmup_rounds=3, nthread=1, seed=5)


@pytest.fixture(scope="module")
def prepared():
    frame = synthetic_training_frame(n_customers=300, n_months=5, seed=21)
    roles = infer_roles(duckdb_types_of_frame(frame))
    split = split_training_set(frame, roles)
    return split, build_feature_spec(split.train, roles)


def test_pruning_prunes_and_the_same_seed_gives_the_same_model(prepared):
    split, spec = prepared
    first = tune_xgboost(split, spec, FAST, training_data_version="data-a")
    second = tune_xgboost(split, spec, FAST, training_data_version="data-a")

    assert first.counts.get("PRUNED", 0) >= 1
    assert first.counts.get("COMPLETE", 0) >= 1
    assert len(first.trials) == FAST.n_trials
    # Pruned trials stop before the round budget that completed ones may use.
    pruned_rounds = [t["last_round"] for t in first.trials if t["state"] == "PRUNED"]
    assert max(pruned_rounds) < FAST.max_rounds - 1
    assert first.best_params == second.best_params
    assert np.array_equal(first.model.predict_proba(split.test), second.model.predict_proba(split.test))
    assert evaluate(first.model, split)["test_auc"] > 0.7


def test_study_is_persisted_and_resumed(prepared, tmp_path):
    split, spec = prepared
    storage = storage_url_for(tmp_path / "optuna")
    small = TuningSettings(**{**FAST.to_dict(), "n_trials": 3})
    tune_xgboost(split, spec, small, training_data_version="data-b", storage_url=storage)
    name = study_name_for("data-b", small)
    assert len(optuna.load_study(study_name=name, storage=storage).trials) == 3

    # Raising the budget continues the same study rather than starting over.
    larger = TuningSettings(**{**FAST.to_dict(), "n_trials": 5})
    assert study_name_for("data-b", larger) == name
    resumed = tune_xgboost(split, spec, larger, training_data_version="data-b", storage_url=storage)
    assert len(resumed.trials) == 5
    assert (tmp_path / "optuna" / "optuna.db").exists()


def test_a_small_random_split_is_tuned_by_cross_validation_and_refitted_on_train_and_valid():
    # One month -> stratified random split; small enough to tune by K-fold CV.
    frame = synthetic_training_frame(n_customers=900, n_months=2, seed=23)
    roles = infer_roles(duckdb_types_of_frame(frame))
    split = split_training_set(frame, roles)
    spec = build_feature_spec(split.train, roles)
    settings = TuningSettings(**{**FAST.to_dict(), "n_trials": 4, "cv_folds": 3})

    result = tune_xgboost(split, spec, settings, training_data_version="data-c")
    model = result.model
    metrics = evaluate(model, split)

    assert split.strategy == "stratified_random" and result.strategy == "cross_validation"
    assert model.params["fitted_on"] == "train+valid"
    assert len(model.params["cv_fold_aucs"]) == 3
    assert model.booster.num_boosted_rounds() == model.params["num_boost_round"]
    # The validation rows are training rows of the refit; their metrics come from the
    # cross-fitted models, so they are not the (optimistic) in-sample scores.
    held_out = model.held_out_raw["valid"]
    assert len(held_out) == len(split.valid)
    assert not np.allclose(model.predict_raw(split.valid), held_out)
    assert metrics["test_auc"] > 0.7
    assert abs(metrics["valid_mean_prediction"] - metrics["valid_positive_rate"]) < 0.05
