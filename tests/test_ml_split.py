"""Split logic: out-of-time by default, stratified random on one month, rows never shared."""

from __future__ import annotations

import pandas as pd
import pytest

from churn_assets.training.columns import duckdb_types_of_frame, infer_roles
from churn_assets.training.sample_data import synthetic_training_frame
from churn_assets.training.split import SplitError, SplitSettings, split_training_set


def _roles(frame):
    return infer_roles(duckdb_types_of_frame(frame))


def _keys(part):
    return set(zip(part["customer_id"], part["snapshot_month"]))


def test_out_of_time_split_keeps_months_apart_and_future_out_of_train():
    frame = synthetic_training_frame(n_customers=120, n_months=6, seed=1)
    split = split_training_set(frame, _roles(frame))

    assert split.strategy == "out_of_time"
    train, valid, test = _keys(split.train), _keys(split.valid), _keys(split.test)
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert split.train["snapshot_month"].max() < split.valid["snapshot_month"].min()
    assert split.valid["snapshot_month"].max() < split.test["snapshot_month"].min()
    # The sixth month has no label yet, so the fifth is the latest labelled (test) month.
    assert set(split.test["snapshot_month"]) == {pd.Timestamp("2024-05-01")}
    assert set(split.valid["snapshot_month"]) == {pd.Timestamp("2024-04-01")}
    assert len(train) + len(valid) + len(test) == frame["churned"].notna().sum()


def test_train_months_limits_the_training_window():
    frame = synthetic_training_frame(n_customers=60, n_months=7, seed=2)
    split = split_training_set(frame, _roles(frame), SplitSettings(train_months=2))
    assert sorted(split.train["snapshot_month"].unique()) == [
        pd.Timestamp("2024-03-01"), pd.Timestamp("2024-04-01")
    ]


def test_single_month_gets_a_stratified_seeded_random_split_independent_of_row_order():
    frame = synthetic_training_frame(n_customers=2000, n_months=2, seed=3)
    frame = frame[frame["churned"].notna()]
    roles = _roles(frame)
    split = split_training_set(frame, roles, SplitSettings(seed=7))

    assert split.strategy == "stratified_random"
    sizes = {name: len(part) for name, part in split.parts().items()}
    assert sizes == {"train": 1400, "valid": 300, "test": 300}
    rates = [part["churned"].mean() for part in split.parts().values()]
    assert max(rates) - min(rates) < 0.01
    assert not (_keys(split.train) & _keys(split.test)) and not (_keys(split.valid) & _keys(split.test))

    shuffled = split_training_set(frame.sample(frac=1.0, random_state=99), roles, SplitSettings(seed=7))
    assert _keys(shuffled.test) == _keys(split.test)
    other_seed = split_training_set(frame, roles, SplitSettings(seed=8))
    assert _keys(other_seed.test) != _keys(split.test)


def test_duplicate_keys_and_non_binary_labels_are_refused_with_the_reason():
    frame = synthetic_training_frame(n_customers=50, n_months=4, seed=4)
    roles = _roles(frame)
    with pytest.raises(SplitError, match="sharing a key"):
        split_training_set(pd.concat([frame, frame.head(3)]), roles)
    bad = frame.copy()
    bad["churned"] = bad["churned"].astype("float").where(bad.index != 5, 2.0)
    with pytest.raises(SplitError, match="must be 0/1"):
        split_training_set(bad, roles)
