"""Optuna tuning: seeded, pruning really prunes, the study persists and resumes."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from churn_assets.training.model import evaluate
from churn_assets.training.columns import build_feature_spec, duckdb_types_of_frame, infer_roles
from churn_assets.training.sample_data import synthetic_training_frame
from churn_assets.training.split import split_training_set
from churn_assets.training.candidates.tuned_xgboost import tune_xgboost
from churn_assets.training.tuning import TuningSettings, storage_url_for, study_name_for

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
    assert first.chosen_params == second.chosen_params
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
    # Trials use 3 folds; the refit's cross-fitting uses the 5 folds every candidate is
    # compared on (cv_auc).
    assert len(model.params["cv_fold_aucs"]) == 5 == len(model.cross_validation["fold_aucs"])
    assert metrics["cv_auc"] == pytest.approx(model.params["cv_auc"])
    assert model.estimator.num_boosted_rounds() == model.params["num_boost_round"]
    # The validation rows are training rows of the refit; their metrics come from the
    # cross-fitted models, so they are not the (optimistic) in-sample scores.
    held_out = model.held_out_raw["valid"]
    assert len(held_out) == len(split.valid)
    assert not np.allclose(model.predict_raw(split.valid), held_out)
    assert metrics["test_auc"] > 0.7
    assert abs(metrics["valid_mean_prediction"] - metrics["valid_positive_rate"]) < 0.05


def _finished_trial(number: int, value: float, max_depth: int, rounds: int, auc_std: float = 0.01):
    params = {"categorical_splits": "one_hot", "eta": 0.05, "max_depth": max_depth, "min_child_weight": 1.0,
              "subsample": 0.8, "colsample_bytree": 0.8, "lambda": 1.0, "alpha": 0.01, "gamma": 0.0}
    distributions = {
        "categorical_splits": optuna.distributions.CategoricalDistribution(["one_hot", "partition"]),
        "eta": optuna.distributions.FloatDistribution(0.01, 0.2, log=True),
        "max_depth": optuna.distributions.IntDistribution(2, 4),
        "min_child_weight": optuna.distributions.FloatDistribution(1.0, 50.0, log=True),
        "subsample": optuna.distributions.FloatDistribution(0.5, 1.0),
        "colsample_bytree": optuna.distributions.FloatDistribution(0.3, 1.0),
        "lambda": optuna.distributions.FloatDistribution(1e-2, 50.0, log=True),
        "alpha": optuna.distributions.FloatDistribution(1e-3, 10.0, log=True),
        "gamma": optuna.distributions.FloatDistribution(0.0, 5.0),
    }
    trial = optuna.trial.create_trial(params=params, distributions=distributions, value=value,
                                      user_attrs={"num_boost_round": rounds, "auc_std": auc_std})
    trial.number = number
    return trial


def test_one_standard_error_rule_refits_the_best_of_the_shallowest_trials_that_tie_with_the_best():
    from churn_assets.training.tuning import BEST, CROSS_VALIDATION, HOLDOUT, select_trial

    # 5 folds, fold std 0.0112 -> standard error 0.005 around the best (0.850).
    trials = [
        _finished_trial(0, 0.850, max_depth=4, rounds=300, auc_std=0.0112),
        _finished_trial(1, 0.846, max_depth=2, rounds=300),   # within one SE, shallower
        _finished_trial(2, 0.847, max_depth=2, rounds=900),   # within, as shallow, better
        _finished_trial(3, 0.840, max_depth=2, rounds=100),   # outside one SE
        _finished_trial(4, 0.849, max_depth=3, rounds=200),
    ]
    settings = TuningSettings(cv_folds=5)
    assert select_trial(trials, CROSS_VALIDATION, settings).number == 2
    assert select_trial(trials, CROSS_VALIDATION, TuningSettings(cv_folds=5, selection=BEST)).number == 0
    # A holdout study has no fold spread: the best trial.
    assert select_trial(trials, HOLDOUT, settings).number == 0
    with pytest.raises(ValueError, match="Unknown trial selection"):
        TuningSettings(selection="luckiest")
