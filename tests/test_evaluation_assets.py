"""Evaluation, SHAP and explanations through Dagster on a small trained champion."""

from __future__ import annotations

import json

import duckdb
import pytest

from conftest import fast_resources, materialize

from churn_assets.evaluation.assets import (
    EVALUATION_REPORT_KEY,
    SHAP_SUMMARY_KEY,
    evaluation_asset_checks,
    evaluation_assets,
    evaluation_report,
    shap_summary,
)
from churn_assets.scoring.assets import explanations
from churn_assets.training.assets import ml_asset_checks, ml_assets
from churn_assets.training.sample_data import synthetic_training_frame

# Trains a small champion through the ml group first: an integration test, not a unit test.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("churn_home")
    frame = synthetic_training_frame(n_customers=300, n_months=5, seed=51)
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    con.execute("CREATE SCHEMA features")
    con.register("frame", frame)
    con.execute(
        "CREATE TABLE features.training_set AS SELECT * FROM frame WHERE churned IS NOT NULL")
    con.execute("CREATE TABLE features.customer_features AS SELECT * EXCLUDE (churned) FROM frame")
    con.close()
    result = materialize(
        [*ml_assets, *ml_asset_checks],
        # This module tests evaluation, not the gate: any challenger is accepted.
        resources=fast_resources(home, promotion={"margin": -1.0}),
    )
    assert result.success
    return home


def _resources(home, **policies):
    return fast_resources(home, **policies)


def _checks(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_report_shap_and_checks_on_the_champion(home):
    result = materialize(
        [evaluation_report, shap_summary, *evaluation_asset_checks],
        # The tiny champion was accepted without beating the baselines (see `home`).
        resources=_resources(home, promotion={"margin": -1.0}),
        selection=[EVALUATION_REPORT_KEY, SHAP_SUMMARY_KEY],
        run_config={"ops": {"ml__shap_summary": {"config": {"sample_rows": 300}}}},
    )
    assert result.success
    metadata = {
        e.asset_key: e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    report_meta = metadata[EVALUATION_REPORT_KEY]
    version = report_meta["model_version"].value
    assert 0.5 < report_meta["test_roc_auc"].value <= 1.0
    assert report_meta["plot_roc_curve"].value.startswith("![roc curve](data:image/png;base64,")
    folder = home / "artifacts" / "reports" / version
    for name in ("roc_curve.png", "calibration.png", "gains_lift.png", "model_card.md",
                 "evaluation.json", "shap_beeswarm.png", "shap_importance.csv"):
        assert (folder / name).stat().st_size > 0, name
    summary = json.loads((folder / "evaluation.json").read_text())
    assert summary["threshold_source"] == "savings-optimal on the validation split"
    assert summary["baselines"], "baselines trained on the same data are compared"
    shap_meta = metadata[SHAP_SUMMARY_KEY]
    assert shap_meta["additivity_max_error"].value < 1e-4
    checks = _checks(result)
    assert set(checks) == {"auc_floor", "beats_baselines", "calibration", "slice_gap",
                           "shap_additivity", "leakage_smell"}
    assert checks["shap_additivity"].passed
    assert checks["auc_floor"].passed == (report_meta["test_roc_auc"].value >= 0.70)


def test_explanations_table_for_a_scored_month(home):
    result = materialize([explanations], resources=_resources(home),
                            partition_key="2024-05-01",
                            run_config={"ops": {"ml__explanations": {"config": {"top_k": 2}}}})
    assert result.success
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        customers = con.execute(
            "SELECT count(*) FROM features.customer_features "
            "WHERE snapshot_month = DATE '2024-05-01'").fetchone()[0]
        rows = con.execute(
            "SELECT customer_id, direction, rank, feature, shap_value FROM ml.explanations "
            "ORDER BY customer_id, direction, rank").fetchall()
    finally:
        con.close()
    assert customers > 0
    assert len({r[0] for r in rows}) == customers
    assert all(r[2] in (1, 2) for r in rows)
    for row in rows:
        assert (row[4] > 0) == (row[1] == "increases_risk")
    # Re-materializing the month replaces it rather than appending.
    assert materialize([explanations], resources=_resources(home),
                          partition_key="2024-05-01").success
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        again = con.execute("SELECT count(*) FROM ml.explanations").fetchone()[0]
    finally:
        con.close()
    assert again <= customers * 6 and again > 0


def test_assets_are_exported_for_wiring():
    keys = {key for asset in evaluation_assets for key in asset.keys}
    assert keys == {EVALUATION_REPORT_KEY, SHAP_SUMMARY_KEY}
