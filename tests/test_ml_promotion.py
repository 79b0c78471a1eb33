"""The promotion decision on crafted cases, and the paired bootstrap behind its confidence interval."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from churn_assets.training.candidates.logistic_regression import train_logistic_regression
from churn_assets.training.candidates.tuned_xgboost import train_xgboost
from churn_assets.training.columns import RoleSettings, build_feature_spec, duckdb_types_of_frame, infer_roles
from churn_assets.training.promotion import PromotionPolicy, _weighted_auc, evaluate_gate, paired_bootstrap_auc_difference
from churn_assets.training.sample_data import synthetic_training_frame
from churn_assets.training.split import split_training_set


@pytest.fixture(scope="module")
def models():
    frame = synthetic_training_frame(n_customers=500, n_months=5, seed=41)
    types = duckdb_types_of_frame(frame)
    roles = infer_roles(types)
    split = split_training_set(frame, roles)
    strong = train_xgboost(split, build_feature_spec(split.train, roles), {"eta": 0.1, "max_depth": 2},
                           max_rounds=80, nthread=1)
    # The weak model never sees the features churn depends on most.
    weak_roles = infer_roles(types, RoleSettings(exclude_columns=("contract", "tenure_months", "total_charges",
                                                                  "support_calls")))
    weak = train_logistic_regression(split, build_feature_spec(split.train, weak_roles))
    strong.version, weak.version = "xgboost-strong", "logistic_regression-weak"
    return split, strong, weak


def test_the_decision_promotes_a_better_challenger_and_keeps_the_champion_otherwise(models):
    split, strong, weak = models
    settings = PromotionPolicy(bootstrap_samples=300)

    better = evaluate_gate(strong, split.test, champion=weak, settings=settings)
    assert better.outcome == "promoted" and better.promotes and better.champion_after == strong.version
    assert better.ci_low <= better.auc_difference <= better.ci_high
    assert better.ci_low > 0

    weaker_challenger = evaluate_gate(weak, split.test, champion=strong, settings=settings)
    assert weaker_challenger.outcome == "kept_champion" and not weaker_challenger.promotes
    assert weaker_challenger.champion_after == strong.version and weaker_challenger.auc_difference < 0
    assert "stays" in weaker_challenger.reason and f"{weaker_challenger.challenger_auc:.4f}" in weaker_challenger.reason

    too_small_a_gain = evaluate_gate(strong, split.test, champion=weak,
                                     settings=PromotionPolicy(bootstrap_samples=300, margin=0.5))
    assert too_small_a_gain.outcome == "kept_champion" and "margin 0.5" in too_small_a_gain.reason

    already_champion = evaluate_gate(strong, split.test, champion=strong, settings=settings)
    assert already_champion.outcome == "unchanged" and already_champion.promotes

    # With no champion, the best candidate by the selection rule becomes the first, whichever it is.
    first = evaluate_gate(weak, split.test, champion=None, settings=settings)
    assert first.outcome == "first_champion" and first.champion_after == weak.version
    unusable = evaluate_gate(weak, split.test, champion=None, settings=settings, champion_unusable="old: no column x")
    assert unusable.outcome == "first_champion" and "no column x" in unusable.reason


def test_significance_requirement_refuses_a_tie(models):
    split, strong, _ = models
    twin = replace(strong, version="xgboost-twin")
    decision = evaluate_gate(twin, split.test, champion=strong,
                             settings=PromotionPolicy(margin=-0.01, bootstrap_samples=200, require_significance=True))
    assert decision.auc_difference == 0 and not decision.promotes and "not significant" in decision.reason


def test_weighted_auc_matches_sklearn_with_sample_weights():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200).astype(float)
    scores = np.round(rng.random(200) + labels * 0.3, 2)  # rounding creates ties
    weights = rng.integers(0, 4, size=(3, 200)).astype(float)
    order = np.argsort(scores, kind="mergesort")
    groups = np.concatenate([[0], np.cumsum(np.diff(scores[order]) != 0)])
    ours = _weighted_auc(groups, labels[order], weights[:, order])
    expected = [roc_auc_score(labels, scores, sample_weight=w) for w in weights]
    assert np.allclose(ours, expected)

    difference, low, high = paired_bootstrap_auc_difference(labels, scores, rng.random(200), samples=200,
                                                            confidence=0.9, seed=1)
    assert low < difference < high
