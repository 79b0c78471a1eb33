"""Batch scoring's matrix path (category codes and float casts in SQL, the booster fed a numpy
matrix) gives exactly the probabilities of the model's own DataFrame path; so do the linear
model's and the ensemble's matrix paths (to float rounding), and every candidate's matrix
contributions equal its frame contributions."""

import duckdb
import numpy as np
import pandas as pd
import pytest

from churn_assets.scoring.batch import matrix_select, write_predictions
from churn_assets.training.candidates.ensemble import train_ensemble
from churn_assets.training.candidates.lightgbm_model import train_lightgbm
from churn_assets.training.candidates.logistic_regression import train_logistic_regression
from churn_assets.training.candidates.tuned_xgboost import train_xgboost
from churn_assets.training.columns import build_feature_spec, duckdb_types_of_frame, infer_roles
from churn_assets.training.sample_data import synthetic_training_frame
from churn_assets.training.split import split_training_set


@pytest.fixture(scope="module")
def training():
    frame = synthetic_training_frame(n_customers=300, n_months=4, seed=5)
    frame["plan"] = np.where(frame["monthly_charges"] > 60, "it's premium", "basic")  # a quote in a level
    roles = infer_roles(duckdb_types_of_frame(frame))
    split = split_training_set(frame, roles)
    return frame, split, build_feature_spec(split.train, roles)


def scoring_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The training rows plus what training never saw: unseen levels, missing values, DECIMAL."""
    rows = frame.drop(columns="churned").copy()
    rows.loc[rows.index[:5], "contract"] = "Three year"
    rows.loc[rows.index[5:10], "contract"] = None
    rows["paperless_billing"] = rows["paperless_billing"].astype("object")
    rows.loc[rows.index[10:15], "paperless_billing"] = None
    rows.loc[rows.index[15:20], "monthly_charges"] = np.nan
    return rows


def feature_table(rows: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA features")
    con.register("rows", rows)
    # A DECIMAL numeric, as a user's SQL model may well produce.
    con.execute("CREATE TABLE features.customer_features AS SELECT * REPLACE "
                "(CAST(monthly_charges AS DECIMAL(10, 2)) AS monthly_charges) FROM rows")
    con.unregister("rows")
    return con


def train(algorithm, split, spec):
    if algorithm == "xgboost":
        model = train_xgboost(split, spec, {"eta": 0.3, "max_depth": 4}, max_rounds=30, nthread=1)
    elif algorithm == "lightgbm":
        model = train_lightgbm(split, spec, max_rounds=30)
    elif algorithm == "logistic_regression":
        model = train_logistic_regression(split, spec)
    else:
        members = [train(name, split, spec) for name in ("xgboost", "lightgbm", "logistic_regression")]
        model = train_ensemble(split, spec, members)
    model.version = f"{algorithm}-test"
    return model


@pytest.fixture(scope="module")
def models(training):
    _, split, spec = training
    return {name: train(name, split, spec) for name in ("xgboost", "lightgbm", "logistic_regression", "ensemble")}


def codes_matrix(model, rows: pd.DataFrame) -> np.ndarray:
    """The matrix ``predict_matrix`` reads, built with pandas (the service's way)."""
    features = model.features(rows)
    spec = model.feature_spec
    columns = [np.where(features[name].cat.codes.to_numpy() < 0, np.nan, features[name].cat.codes.to_numpy())
               for name in spec.roles.categorical]
    columns += [features[name].to_numpy(dtype=np.float64) for name in spec.roles.numeric]
    return np.column_stack(columns)


@pytest.mark.parametrize("algorithm", ["xgboost", "lightgbm", "logistic_regression", "ensemble"])
def test_the_matrix_path_scores_exactly_as_the_frame_path(training, models, algorithm):
    frame, split, spec = training
    model = models[algorithm]
    con = feature_table(scoring_rows(frame))
    months = [str(m.date()) for m in sorted(frame["snapshot_month"].unique())]

    stats = write_predictions(con, model, months, batch_rows=97)

    assert stats.path == "matrix" and stats.rows == len(frame) and stats.largest_batch == 97
    stored = con.execute("SELECT * FROM ml.predictions").df()
    features = con.execute("SELECT * FROM features.customer_features").df()
    expected = pd.Series(model.predict_proba(features),
                         index=pd.MultiIndex.from_frame(features[["customer_id", "snapshot_month"]]))
    got = stored.set_index(["customer_id", "snapshot_month"])["churn_probability"]
    if algorithm in ("xgboost", "lightgbm"):
        np.testing.assert_array_equal(got.to_numpy(), expected.reindex(got.index).to_numpy())
    else:  # numpy's sums in another order than sklearn's: the last bits may differ
        np.testing.assert_allclose(got.to_numpy(), expected.reindex(got.index).to_numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("algorithm", ["xgboost", "lightgbm", "logistic_regression", "ensemble"])
def test_matrix_contributions_equal_the_frame_contributions(training, models, algorithm):
    frame, _, _ = training
    model = models[algorithm]
    rows = scoring_rows(frame).iloc[:40]
    matrix = codes_matrix(model, rows)

    by_matrix, matrix_margin = model.candidate.matrix_contributions(model, matrix)
    by_frame, frame_margin = model.candidate.contributions(model, model.features(rows))

    assert by_matrix.feature_names == by_frame.feature_names == list(model.feature_spec.roles.features)
    np.testing.assert_allclose(by_matrix.values, by_frame.values, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(by_matrix.base_values, by_frame.base_values, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(matrix_margin, frame_margin, rtol=1e-9, atol=1e-9)
    # The margin explained is the margin scored, to the last bit: a row's reasons and its score agree.
    np.testing.assert_array_equal(model.candidate.margin_matrix(model, matrix), matrix_margin)
    # Explained and predicted in one pass: the same contributions, margin and probabilities.
    explained, raw = model.candidate.explain_matrix(model, matrix)
    np.testing.assert_array_equal(explained.values, by_matrix.values)
    np.testing.assert_array_equal(raw, model.candidate.predict_matrix(model, matrix))
    np.testing.assert_allclose(model.predict_proba_matrix(matrix), model.predict_proba(rows), rtol=1e-12, atol=1e-15)


def test_types_the_sql_cannot_turn_into_training_text_use_the_frame_path(training):
    frame, split, spec = training
    model = train_xgboost(split, spec, {"eta": 0.3, "max_depth": 2}, max_rounds=5, nthread=1)
    types = {name: "VARCHAR" for name in spec.roles.categorical} | {name: "DOUBLE" for name in spec.roles.numeric}
    assert matrix_select(model, types) is not None
    # An integer forced categorical: pandas writes 1.0 for an integer column with NULLs, so
    # only pandas can reproduce the training text.
    assert matrix_select(model, types | {spec.roles.categorical[0]: "INTEGER"}) is None


def test_xgboosts_native_calls_give_the_wrappers_numbers(training, models):
    """The C prediction calls without xgboost's Python wrapper: the same values, margins and
    contributions as inplace_predict and Booster.predict, to the bit, on one row and on many."""
    from functools import partial

    import xgboost as xgb

    from churn_assets.training.candidates.xgboost_native import native_predictor

    frame, _, _ = training
    model = models["xgboost"]
    booster = model.estimator
    types = model.candidate._feature_types(model)
    native = native_predictor(booster, lambda: types)
    assert native is not None and native_predictor(booster, lambda: types) is native  # one per booster
    matrix = np.ascontiguousarray(codes_matrix(model, scoring_rows(frame)), dtype=np.float32)
    empty = matrix[:0]
    assert native.value(empty).shape == native.margin(empty, 1).shape == (0,)
    # The wrapper flattens an empty contributions matrix; the row-per-customer shape is kept.
    assert [a.shape for a in native.contributions_and_value(empty, 1)] == [(0, matrix.shape[1] + 1), (0,)]
    for rows in (matrix[:1], matrix):
        data = xgb.DMatrix(rows, feature_types=types, enable_categorical=True, nthread=1)
        np.testing.assert_array_equal(native.value(rows), booster.inplace_predict(rows))
        predict = partial(booster.predict, data, validate_features=False)
        np.testing.assert_array_equal(native.margin(rows, 1), predict(output_margin=True))
        contributions, value = native.contributions_and_value(rows, 1)
        np.testing.assert_array_equal(contributions, predict(pred_contribs=True))
        np.testing.assert_array_equal(value, predict())
        np.testing.assert_array_equal(value, booster.inplace_predict(rows))
