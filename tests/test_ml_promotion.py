"""Promotion gate on crafted cases, and the paired bootstrap behind its confidence interval."""

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


def test_gate_passes_when_the_challenger_is_better_and_fails_otherwise(models):
    split, strong, weak = models
    settings = PromotionPolicy(bootstrap_samples=300)

    against_baseline = evaluate_gate(strong, split.test, champion=None, baselines=[weak], settings=settings)
    assert against_baseline.passed and against_baseline.reference_kind == "best_baseline"
    assert against_baseline.ci_low <= against_baseline.auc_difference <= against_baseline.ci_high
    assert against_baseline.ci_low > 0

    weaker_challenger = evaluate_gate(weak, split.test, champion=strong, baselines=[], settings=settings)
    assert not weaker_challenger.passed and weaker_challenger.reference_kind == "champion"
    assert weaker_challenger.auc_difference < 0

    too_small_a_gain = evaluate_gate(strong, split.test, champion=weak, baselines=[],
                                     settings=PromotionPolicy(bootstrap_samples=300, margin=0.5))
    assert not too_small_a_gain.passed and "margin" in too_small_a_gain.reason

    already_champion = evaluate_gate(strong, split.test, champion=strong, baselines=[weak], settings=settings)
    assert already_champion.passed and already_champion.reference_kind == "self"

    # With no champion, a baseline that wins the selection has no other baseline to beat.
    first_baseline = evaluate_gate(weak, split.test, champion=None, baselines=[weak], settings=settings)
    assert first_baseline.passed and first_baseline.reference_kind == "none"
    # ...but a better baseline beside it is still the reference.
    better_baseline = evaluate_gate(weak, split.test, champion=None, baselines=[weak, strong], settings=settings)
    assert not better_baseline.passed and better_baseline.reference_version == strong.version


def test_significance_requirement_refuses_a_tie(models):
    split, strong, _ = models
    twin = replace(strong, version="xgboost-twin")
    decision = evaluate_gate(twin, split.test, champion=strong, baselines=[],
                             settings=PromotionPolicy(margin=-0.01, bootstrap_samples=200, require_significance=True))
    assert decision.auc_difference == 0 and not decision.passed and "not significant" in decision.reason


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
