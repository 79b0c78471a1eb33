"""One place per setting: a value changed in a policy file reaches every reader of it.

Each test loads policies the way the code location and the CLI do (``load_policies`` on a
YAML file, as ``$CHURN_POLICIES`` / a project's churn.yaml would give), then asks every
consumer of the changed setting, through the resource it reads.
"""

from __future__ import annotations

import gc
import json
from datetime import date

import dagster as dg
import duckdb
import pytest

from churn_assets.policies import Policies, PolicyError, load_policies
from conftest import materialize


@pytest.fixture(autouse=True)
def _release_invocation_contexts():
    """Checks invoked directly keep a Dagster context until collected; collect it while the
    interpreter is alive (at shutdown its teardown prints an ImportError)."""
    yield
    gc.collect()


def _policies(tmp_path, text: str) -> Policies:
    path = tmp_path / "churn.yaml"
    path.write_text(text)
    return load_policies(path)


def test_defaults_and_the_code_location_use_the_same_policies(tmp_path, monkeypatch):
    from churn_assets.definitions import build_defs

    defaults = Policies()
    assert defaults.drift.psi_error == 0.5 and defaults.evaluation.offer_cost == 15.0
    path = tmp_path / "churn.yaml"
    path.write_text("drift:\n  psi_error: 0.8\npromotion:\n  margin: 0.02\n")
    monkeypatch.setenv("CHURN_POLICIES", str(path))
    resources = build_defs().resources
    assert resources["drift_policy"].psi_error == 0.8
    assert resources["promotion_policy"].margin == 0.02
    assert resources["scoring_policy"].high_risk == defaults.scoring.high_risk


def test_launched_runs_execute_in_one_process_unless_the_project_asks_for_isolation(tmp_path, monkeypatch):
    from churn_assets.definitions import build_defs

    jobs = ("monthly_scoring", "retrain", "data_refresh", "monthly_refresh", "full_refresh")
    defaults = build_defs(Policies())
    assert {defaults.resolve_job_def(job).executor_def.name for job in jobs} == {"in_process"}
    isolated = build_defs(_policies(tmp_path, "project:\n  run_executor: multiprocess\n"))
    assert {isolated.resolve_job_def(job).executor_def.name for job in jobs} == {"multiprocess"}
    with pytest.raises(PolicyError, match="project.run_executor"):
        _policies(tmp_path, "project:\n  run_executor: threads\n")


@pytest.mark.parametrize(("text", "message"), [
    ("drift:\n  psi_eror: 0.4\n", "drift.psi_eror: Extra inputs are not permitted"),
    ("promotion:\n  margin: lots\n", "promotion.margin: Input should be a valid number"),
    ("servng: {}\n", "servng: Extra inputs are not permitted"),
    ("drift:\n  psi_warn: 0.9\n  psi_error: 0.5\n", "psi: need 0 <= warn (0.9) <= error (0.5)"),
    ("scoring:\n  medium_risk: 0.7\n", "Risk cut-offs must satisfy 0 < medium < high < 1"),
    ("training:\n  candidates: [xgboost, catboost]\n", "Unknown candidate 'catboost'"),
    ("training:\n  candidate_params:\n    random_forest: {trees: 3}\n", "trees"),
    ("- just a list\n", "expected a mapping of policy sections"),
])
def test_bad_policy_files_name_the_key(tmp_path, text, message):
    with pytest.raises(PolicyError, match="churn.yaml") as error:
        _policies(tmp_path, text)
    assert message in str(error.value)


def _drift_warehouse(path, max_psi: float) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA ml; CREATE SCHEMA monitoring; CREATE SCHEMA features")
    con.execute("CREATE TABLE ml.model_versions (version VARCHAR, algorithm VARCHAR, test_auc DOUBLE, "
                "is_champion BOOLEAN, created_at TIMESTAMP, split_description JSON)")
    split = {"strategy": "out_of_time", "parts": {"train": {"months": ["2024-01-01"]},
                                                  "valid": {"months": ["2024-02-01"]},
                                                  "test": {"months": ["2024-03-01"]}}}
    con.execute("INSERT INTO ml.model_versions VALUES ('champ', 'xgboost', 0.85, true, TIMESTAMP '2024-04-02', ?)",
                [json.dumps(split)])
    con.execute("CREATE TABLE features.training_set AS SELECT DATE '2024-01-01' AS snapshot_month")
    con.execute("CREATE TABLE monitoring.drift_summary (month DATE, share_drifted DOUBLE, drifted_features INTEGER, "
                "features_checked INTEGER, max_psi DOUBLE, max_psi_feature VARCHAR, prediction_drift_score DOUBLE, "
                "prediction_drifted BOOLEAN, model_version VARCHAR)")
    con.execute("INSERT INTO monitoring.drift_summary VALUES (DATE '2024-04-01', 0.1, 1, 10, ?, 'tenure', 0.01, "
                "false, 'champ')", [max_psi])
    con.close()


def test_a_drift_level_reaches_the_check_the_sensor_and_the_summary(tmp_path):
    from churn_assets.automation.jobs import retraining_sensor
    from churn_assets.cli.summary import summary_lines
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.monitoring.assets import drift_check_evaluations

    db = tmp_path / "warehouse.duckdb"
    _drift_warehouse(db, max_psi=0.6)
    warehouse = Warehouse(path=str(db))

    def readers(policies: Policies) -> tuple[bool, bool, bool]:
        (check,) = drift_check_evaluations(warehouse, policies.drift, ["2024-04-01"], ["max_psi"])
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(instance=instance, resources={
                "warehouse": warehouse, "drift_policy": policies.drift, "retraining_policy": policies.retraining})
            request = retraining_sensor(context)
        with warehouse.read() as con:
            summary = "\n".join(summary_lines(con, policies.drift))
        return (not check.passed and check.severity == dg.AssetCheckSeverity.ERROR,
                isinstance(request, dg.RunRequest) and "drift" in request.run_key,
                "drift at error level: 2024-04" in summary)

    assert readers(Policies()) == (True, True, True)  # 0.6 is past the default error level 0.5
    assert readers(_policies(tmp_path, "drift:\n  psi_error: 0.7\n")) == (False, False, False)


def test_the_promotion_margin_reaches_the_decision_and_the_evaluation_check(tmp_path, monitored_warehouse):
    from churn_assets.evaluation.assets import EVALUATION_FILE, LATEST_POINTER, REPORTS_DIR, beats_baselines
    from churn_assets.training.promotion import gate_decision

    warehouse, artifacts, version = monitored_warehouse
    reports = artifacts.root_path / REPORTS_DIR
    (reports / version).mkdir(parents=True)
    (reports / LATEST_POINTER).write_text(json.dumps({"evaluation": version}))
    (reports / version / EVALUATION_FILE).write_text(json.dumps(
        {"model_version": version, "metrics": {"roc_auc": 0.80}, "baselines": {"random_forest": {"roc_auc": 0.79}}}))

    def readers(policies: Policies) -> tuple[bool, bool]:
        with warehouse.read() as con:
            decision, _ = gate_decision(con, artifacts.root_path, policies.promotion)
        check = beats_baselines(artifacts=artifacts, promotion_policy=policies.promotion)
        return decision.promotes, check.passed

    # The champion is the only (and best) candidate: the decision keeps it ("unchanged") whatever
    # the margin; the evaluation check compares 0.80 with 0.79 + margin.
    assert readers(Policies()) == (True, True)
    assert readers(_policies(tmp_path, "promotion:\n  margin: 0.05\n")) == (True, False)
    decision_margin = gate_decision(duckdb.connect(str(warehouse.db_path), read_only=True), artifacts.root_path,
                                    _policies(tmp_path, "promotion:\n  margin: 0.05\n").promotion)[0].margin
    assert decision_margin == 0.05


def test_the_offer_cost_reaches_the_business_threshold(tmp_path, monitored_warehouse):
    from churn_assets.evaluation.assets import evaluate_model

    warehouse, artifacts, _ = monitored_warehouse

    def threshold(policies: Policies) -> float:
        with warehouse.read() as con:
            _, _, report = evaluate_model(con, artifacts.root_path, policies.evaluation)
        return report.threshold

    cheap = threshold(_policies(tmp_path, "evaluation:\n  offer_cost: 1\n"))
    dear = threshold(_policies(tmp_path, "evaluation:\n  offer_cost: 120\n"))
    # A dearer offer pays off only for customers more likely to leave.
    assert dear > cheap


def test_a_risk_band_reaches_the_predictions(tmp_path, monitored_warehouse):
    from churn_assets.scoring.assets import predictions

    warehouse, artifacts, _ = monitored_warehouse

    def bands(policies: Policies) -> dict[str, int]:
        result = materialize([predictions], partition_key="2024-06-01", resources={
            "warehouse": warehouse, "artifacts": artifacts, "scoring_policy": policies.scoring,
            "engine_policy": policies.engine})
        with warehouse.read() as con:
            counted = dict(con.execute("SELECT risk_band, count(*) FROM ml.predictions GROUP BY 1").fetchall())
        [event] = result.asset_materializations_for_node("ml__predictions")
        assert event.metadata["risk_cut_offs"].value == {"medium": policies.scoring.medium_risk,
                                                          "high": policies.scoring.high_risk}
        return counted

    default = bands(Policies())
    everyone_high = bands(_policies(tmp_path, "scoring:\n  medium_risk: 0.0001\n  high_risk: 0.0002\n"))
    assert everyone_high == {"high": sum(default.values())} != default


def test_the_decay_margin_reaches_the_check_and_the_sensor(tmp_path):
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.monitoring.assets import performance_decay_check
    from churn_assets.monitoring.retraining import retraining_reasons

    db = tmp_path / "warehouse.duckdb"
    _drift_warehouse(db, max_psi=0.0)
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE monitoring.performance (month DATE, model_version VARCHAR, rows BIGINT, "
                "positives BIGINT, auc DOUBLE, champion_test_auc DOUBLE, scored_at TIMESTAMP)")
    con.execute("INSERT INTO monitoring.performance VALUES (DATE '2024-04-01', 'champ', 100, 20, 0.81, 0.85, "
                "TIMESTAMP '2024-05-02')")
    con.close()
    warehouse = Warehouse(path=str(db))

    def readers(policies: Policies) -> tuple[bool, bool]:
        check = performance_decay_check(retraining_policy=policies.retraining, warehouse=warehouse)
        with warehouse.read() as con:
            reasons = retraining_reasons(con, drift=policies.drift.thresholds(),
                                         decay_margin=policies.retraining.decay_margin, new_labelled_months=12)
        return not check.passed, any(r.kind == "decay" and r.month == date(2024, 4, 1) for r in reasons)

    assert readers(Policies()) == (False, False)  # 0.04 below the test AUC is within 0.05
    assert readers(_policies(tmp_path, "retraining:\n  decay_margin: 0.03\n")) == (True, True)


def test_training_and_tuning_settings_reach_every_candidate_asset(tmp_path):
    from churn_assets.training.candidates import candidate_assets, registered

    policies = _policies(tmp_path, "training:\n  candidates: [logistic_regression, lightgbm]\n"
                                   "  candidate_params:\n    lightgbm: {num_leaves: 7}\n"
                                   "tuning:\n  n_trials: 3\n")
    enabled = [c.algorithm for c in registered().values() if policies.training.enabled(c)]
    assert enabled == ["logistic_regression", "lightgbm"]
    assert policies.training.params_for(registered()["lightgbm"]).num_leaves == 7
    assert policies.tuning.settings(seed=1).n_trials == 3
    assert set(candidate_assets()) == {"baseline_models", "tuned_xgboost", "lightgbm", "ensemble"}
