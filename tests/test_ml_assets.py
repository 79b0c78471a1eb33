"""The ml group through Dagster: candidates, registry rows, the promotion decision, champion pointer."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from churn_assets.core.warehouse import Warehouse
from churn_assets.training.assets import ml_asset_checks, ml_assets
from churn_assets.training.registry import load_champion
from churn_assets.training.sample_data import synthetic_training_frame
from conftest import fast_resources


def _write_training_set(db_path, frame):
    con = duckdb.connect(str(db_path))
    con.execute("CREATE SCHEMA IF NOT EXISTS features")
    con.register("frame", frame[frame.iloc[:, -1].notna()])
    con.execute("CREATE OR REPLACE TABLE features.training_set AS SELECT * FROM frame")
    con.close()


FAST_BOOTSTRAP = {"bootstrap_samples": 100}


def _materialize(home, tuning=None, training=None, promotion=FAST_BOOTSTRAP, raise_on_error=True):
    return dg.materialize(
        [*ml_assets, *ml_asset_checks],
        resources=fast_resources(home, promotion=promotion, tuning=tuning, training=training),
        raise_on_error=raise_on_error,
    )


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHURN_HOME", str(tmp_path))
    _write_training_set(tmp_path / "warehouse.duckdb", synthetic_training_frame(n_customers=300, n_months=5, seed=51))
    return tmp_path


def _versions(home):
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(
            "SELECT version, algorithm, role, is_champion, test_auc, valid_auc FROM ml.model_versions ORDER BY version"
        ).fetchall()
    finally:
        con.close()


def test_ml_group_registers_candidates_promotes_and_is_reproducible(home):
    result = _materialize(home)
    assert result.success
    rows = _versions(home)
    assert sorted(r[1] for r in rows) == ["ensemble", "lightgbm", "logistic_regression", "random_forest", "xgboost"]
    # The selection rule: the best validation AUC of the run (ties: the first version).
    best = min(rows, key=lambda r: (-r[5], r[0]))
    champion_rows = [r for r in rows if r[3]]
    assert len(champion_rows) == 1 and champion_rows[0][0] == best[0]

    decision = result.asset_materializations_for_node("ml__champion")[0].metadata
    assert decision["decision"].value == "first_champion"
    assert decision["challenger_version"].value == best[0] == decision["champion"].value
    tuned = result.asset_materializations_for_node("ml__tuned_xgboost")[0].metadata
    assert {"chosen_params", "trial_selection", "tuning_history", "trials", "split", "xgboost/test_auc"} <= set(tuned)
    stacked = result.asset_materializations_for_node("ml__ensemble")[0].metadata
    assert set(stacked["ensemble/weights"].value) == {"logistic_regression", "xgboost", "lightgbm"}

    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    champion = load_champion(home / "artifacts", warehouse)
    assert champion.version == champion_rows[0][0]

    # Same data, seed and config: the same versions and metrics, and the champion stays.
    again = _materialize(home)
    assert again.success
    assert _versions(home) == rows
    champion_metadata = again.asset_materializations_for_node("ml__champion")[0].metadata
    assert champion_metadata["changed"].value is False
    assert champion_metadata["decision"].value == "unchanged"


def test_a_challenger_that_loses_leaves_the_champion_and_the_run_succeeds(home):
    assert _materialize(home).success
    before = [r for r in _versions(home) if r[3]]

    # New data with a different seed gives a new challenger; an impossible margin keeps the champion.
    _write_training_set(home / "warehouse.duckdb", synthetic_training_frame(n_customers=300, n_months=5, seed=52))
    result = _materialize(home, promotion={"margin": 0.5, "bootstrap_samples": 100})
    assert result.success
    decision = result.asset_materializations_for_node("ml__champion")[0].metadata
    assert decision["decision"].value == "kept_champion" and decision["changed"].value is False
    assert decision["champion"].value == before[0][0] != decision["challenger_version"].value
    assert {"challenger_auc", "champion_auc", "auc_difference", "ci_low", "ci_high"} <= set(decision)
    assert "stays" in decision["reason"].value
    after = _versions(home)
    assert len(after) == 10
    assert [r for r in after if r[3]] == before


def test_the_training_policy_chooses_the_candidates(home):
    # Only one candidate besides the ensemble: nothing to stack, said on the asset; the
    # logistic regression becomes the first champion.
    result = _materialize(home, training={"candidates": ["logistic_regression", "ensemble"]}, promotion={})
    assert result.success
    assert [(r[1], r[3]) for r in _versions(home)] == [("logistic_regression", True)]
    ensemble = result.asset_materializations_for_node("ml__ensemble")[0].metadata
    assert "at least two members" in ensemble["ensemble/skipped"].value
    tuned = result.asset_materializations_for_node("ml__tuned_xgboost")[0].metadata
    assert "not among the training policy's candidates" in tuned["xgboost/skipped"].value


def test_one_snapshot_compares_every_candidate_by_cross_validation(tmp_path, monkeypatch):
    # One labelled month: a random split, small enough that every candidate brings the same
    # 5-fold CV over train + valid, and the champion is the best cv_auc.
    monkeypatch.setenv("CHURN_HOME", str(tmp_path))
    frame = synthetic_training_frame(n_customers=700, n_months=2, seed=61)
    _write_training_set(tmp_path / "warehouse.duckdb", frame)
    assert _materialize(tmp_path).success
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT version, algorithm, cv_auc, cv_auc_std, is_champion FROM ml.model_versions"
                           ).fetchall()
    finally:
        con.close()
    assert sorted(r[1] for r in rows) == ["ensemble", "lightgbm", "logistic_regression", "random_forest", "xgboost"]
    assert all(0.5 < r[2] < 1 and r[3] >= 0 for r in rows)
    best = min(rows, key=lambda r: (-r[2], r[0]))
    assert [r[0] for r in rows if r[4]] == [best[0]]
