"""Batch scoring, drift (PSI and Evidently), realised performance, checks and retraining reasons."""

import json
import math
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from churn_assets.core.engine import EnginePolicy
from churn_assets.monitoring import drift as drift_module
from churn_assets.monitoring.drift import (
    CATEGORICAL,
    NUMERIC,
    DriftError,
    DriftSettings,
    DriftThresholds,
    binned_shares,
    check_drift_share,
    check_max_psi,
    check_prediction_drift,
    compute_drift,
    graded_check,
    population_stability_index,
    psi_from_shares,
    write_drift,
)
from churn_assets.monitoring.performance import (
    DecaySettings,
    check_decay,
    compute_month,
    plan_refresh,
    realised_metrics,
    write_performance,
)
from churn_assets.monitoring.retraining import retraining_reasons
from churn_assets.scoring.batch import (
    RiskBands,
    ScoringError,
    score_months,
    write_predictions,
)
from churn_assets.core.warehouse import Warehouse
from conftest import materialize

MONTHS = ["2024-01-01", "2024-02-01", "2024-03-01"]
NUMERIC_FEATURES = ["tenure_months", "monthly_charges"]
CATEGORICAL_FEATURES = ["contract"]


def feature_rows(customers: int = 60, months=MONTHS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for month in months:
        frames.append(pd.DataFrame({
            "customer_id": [f"C{i:04d}" for i in range(customers)],
            "snapshot_month": pd.Timestamp(month).date(),
            "tenure_months": rng.integers(0, 72, customers),
            "monthly_charges": rng.uniform(20, 110, customers).round(2),
            "contract": rng.choice(["Month-to-month", "One year", "Two year"], customers),
        }))
    return pd.concat(frames, ignore_index=True)


class StandInModel:
    """A fitted sklearn logistic regression behind the duck-typed scoring interface."""

    version = "stand-in-1"

    def __init__(self, frame: pd.DataFrame):
        from sklearn.linear_model import LogisticRegression

        target = (frame["monthly_charges"] > 70).astype(int)
        self.estimator = LogisticRegression().fit(self._inputs(frame), target)
        self.calls = 0

    @staticmethod
    def _inputs(frame: pd.DataFrame) -> np.ndarray:
        return frame[NUMERIC_FEATURES].to_numpy(dtype=float)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        self.calls += 1
        return self.estimator.predict_proba(self._inputs(frame))[:, 1]


@pytest.fixture
def feature_con():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA features")
    frame = feature_rows()
    con.register("frame", frame)
    con.execute("CREATE TABLE features.customer_features AS SELECT * FROM frame")
    con.unregister("frame")
    yield con, frame
    con.close()


# -- scoring -------------------------------------------------------------------------------


def test_score_months_reads_every_month_in_one_query_and_chunks_of_batch_rows(feature_con):
    con, frame = feature_con
    model = StandInModel(frame)
    chunks = list(score_months(con, model, ["2024-02", "2024-03-01"], batch_rows=7))
    scored = pd.concat([c.to_pandas() for c in chunks], ignore_index=True)

    months = frame[frame["snapshot_month"] >= date(2024, 2, 1)]
    # 120 rows in chunks of exactly 7 (DuckDB's smaller batches are gathered), the last 1.
    assert [c.num_rows for c in chunks] == [7] * 17 + [1]
    assert model.calls == len(chunks)
    assert sorted(zip(scored["customer_id"], scored["snapshot_month"])) == sorted(
        zip(months["customer_id"], months["snapshot_month"]))
    expected = dict(zip(zip(months["customer_id"], months["snapshot_month"]), model.predict_proba(months)))
    assert np.allclose(scored["churn_probability"],
                       [expected[key] for key in zip(scored["customer_id"], scored["snapshot_month"])])


def test_risk_bands_use_the_cut_offs_inclusively():
    bands = RiskBands(medium=0.25, high=0.5)
    probabilities = [0.0, 0.2499, 0.25, 0.4999, 0.5, 1.0]
    banded = duckdb.sql(f"SELECT {bands.sql('p')} FROM (SELECT unnest(?) AS p, generate_subscripts(?, 1) AS i) "
                        "ORDER BY i", params=[probabilities, probabilities]).fetchall()
    assert [band for (band,) in banded] == ["low", "low", "medium", "medium", "high", "high"]
    with pytest.raises(ScoringError, match="medium < high"):
        RiskBands(medium=0.6, high=0.4)


def test_write_predictions_replaces_only_its_months(feature_con):
    con, frame = feature_con
    model = StandInModel(frame)
    write_predictions(con, model, MONTHS, batch_rows=11)
    before = con.execute("SELECT * FROM ml.predictions ORDER BY snapshot_month, customer_id").df()

    stats = write_predictions(con, model, ["2024-02"], batch_rows=11)
    after = con.execute("SELECT * FROM ml.predictions ORDER BY snapshot_month, customer_id").df()

    assert stats.rows == 60 and stats.rows_by_month == {"2024-02": 60}
    assert stats.largest_batch == 11 and stats.batches == 6 and stats.path == "frame"
    assert sum(stats.band_counts.values()) == 60
    stored = after[after["snapshot_month"] == pd.Timestamp("2024-02-01")]
    assert stats.band_counts == stored["risk_band"].value_counts().reindex(["low", "medium", "high"], fill_value=0).to_dict()
    assert stats.months["2024-02"].mean_probability == pytest.approx(stored["churn_probability"].mean())
    assert stats.months["2024-02"].high_risk_share == pytest.approx((stored["risk_band"] == "high").mean())
    assert set(stored["risk_band"]) <= {"low", "medium", "high"}
    expected_bands = np.select([stored["churn_probability"] >= 0.6, stored["churn_probability"] >= 0.3],
                               ["high", "medium"], default="low")
    assert (stored["risk_band"] == expected_bands).all()
    assert len(after) == len(before) == 180
    assert con.execute(
        "SELECT count(*) FROM (SELECT customer_id, snapshot_month FROM ml.predictions GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()[0] == 0
    pd.testing.assert_frame_equal(
        before.drop(columns="scored_at"), after.drop(columns="scored_at")
    )
    rescored = after.groupby("snapshot_month")["scored_at"].max()
    assert rescored[pd.Timestamp("2024-02-01")] > rescored[pd.Timestamp("2024-01-01")]


def test_a_failing_model_leaves_the_previous_predictions(tmp_path, feature_con):
    source, frame = feature_con
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    with warehouse.write() as con:
        con.execute("CREATE SCHEMA features")
        con.register("frame", frame)
        con.execute("CREATE TABLE features.customer_features AS SELECT * FROM frame")
    with warehouse.write() as con:
        write_predictions(con, StandInModel(frame), ["2024-01"])

    class BrokenModel(StandInModel):
        def predict_proba(self, batch):
            values = super().predict_proba(batch)
            values[3] = np.nan
            return values

    with pytest.raises(ScoringError, match=r"outside \[0, 1\] \(or NaN\) for 1 rows of 2024-01"):
        with warehouse.write() as con:
            write_predictions(con, BrokenModel(frame), ["2024-01"], batch_rows=10)
    with warehouse.read() as con:
        assert con.execute("SELECT count(*), min(model_version) FROM ml.predictions").fetchone() == (60, "stand-in-1")


# -- PSI -----------------------------------------------------------------------------------


def test_psi_matches_a_hand_computed_numeric_case():
    reference = np.arange(1, 11, dtype=float)  # median 5.5 splits it 50 / 50
    current = np.array([1, 2, 3, 4, 5, 1, 2, 3, 9, 10], dtype=float)  # 80 / 20
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert population_stability_index(reference, current, NUMERIC, bins=2) == pytest.approx(expected)
    assert population_stability_index(reference, reference, NUMERIC, bins=4) == pytest.approx(0.0)


def test_psi_categorical_unseen_level_and_missing_values_use_epsilon():
    reference = ["a", "a", "b", "b"]
    current = ["a", "c", None, "b"]
    ref_share, cur_share, labels = binned_shares(reference, current, CATEGORICAL)
    assert labels == ["<missing>", "a", "b", "c"]
    assert ref_share.tolist() == [0.0, 0.5, 0.5, 0.0]
    assert cur_share.tolist() == [0.25, 0.25, 0.25, 0.25]
    eps = 1e-4
    expected = (
        2 * (0.25 - eps) * math.log(0.25 / eps)
        + 2 * (0.25 - 0.5) * math.log(0.25 / 0.5)
    )
    assert psi_from_shares(ref_share, cur_share, eps) == pytest.approx(expected)
    assert population_stability_index(reference, current, CATEGORICAL, epsilon=eps) == pytest.approx(expected)


def test_psi_numeric_bins_are_open_ended_and_missing_is_its_own_bin():
    ref_share, cur_share, labels = binned_shares([0, 1, 2, 3], [-100, 100, np.nan, np.nan], NUMERIC, bins=2)
    assert labels[-1] == "<missing>"
    assert ref_share.tolist() == [0.5, 0.5, 0.0]
    assert cur_share.tolist() == [0.25, 0.25, 0.5]


# -- Evidently drift -----------------------------------------------------------------------


def drift_frames(rows: int = 800, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def frame(charge_shift: float, contract_p) -> pd.DataFrame:
        return pd.DataFrame({
            "tenure_months": rng.integers(0, 72, rows),
            "monthly_charges": rng.normal(65 + charge_shift, 15, rows),
            "contract": rng.choice(["Month-to-month", "One year", "Two year"], rows, p=contract_p),
            "paperless_billing": rng.random(rows) < 0.6,
        })

    return frame(0, [0.55, 0.25, 0.2]), frame(20, [0.55, 0.25, 0.2])


def test_evidently_detects_the_shifted_feature_only():
    reference, current = drift_frames()
    result = compute_drift(
        reference, current, ["tenure_months", "monthly_charges"], ["contract", "paperless_billing"],
        reference_predictions=np.linspace(0.05, 0.6, len(reference)),
        current_predictions=np.linspace(0.25, 0.9, len(current)),
        settings=DriftSettings(),
    )
    by_feature = result.features.set_index("feature")
    assert bool(by_feature.loc["monthly_charges", "drifted"])
    assert by_feature.loc["monthly_charges", "stattest"] == "wasserstein"
    assert by_feature.loc["monthly_charges", "drift_score"] > 0.5
    for name in ("tenure_months", "contract", "paperless_billing"):
        assert not by_feature.loc[name, "drifted"], name
        assert by_feature.loc[name, "psi"] < 0.1, name
    assert by_feature.loc["contract", "stattest"] == "jensenshannon"
    assert by_feature.loc["monthly_charges", "psi"] > 0.25
    summary = result.summary
    assert summary["drifted_features"] == 1 and summary["share_drifted"] == pytest.approx(0.25)
    assert summary["max_psi_feature"] == "monthly_charges"
    assert summary["prediction_drifted"] is True and summary["prediction_drift_score"] > 0.1


def test_compute_drift_names_missing_columns_and_handles_empty_ones():
    reference, current = drift_frames(rows=50)
    with pytest.raises(DriftError, match=r"current data lacks feature column\(s\) monthly_charges"):
        compute_drift(reference, current.drop(columns="monthly_charges"),
                      ["monthly_charges"], [])
    empty = current.assign(tenure_months=np.nan)
    result = compute_drift(reference, empty, ["tenure_months", "monthly_charges"], [])
    row = result.features.set_index("feature").loc["tenure_months"]
    assert math.isnan(row["drift_score"]) and not row["drifted"]
    assert result.summary["features_checked"] == 1


def test_drift_rows_and_summary_round_trip_through_duckdb():
    reference, current = drift_frames(rows=200)
    result = compute_drift(reference.assign(tenure_months=np.nan), current,
                           ["tenure_months", "monthly_charges"], ["contract"])
    con = duckdb.connect()
    write_drift(con, "2024-03-01", result, "v1", "/tmp/report.html")
    write_drift(con, "2024-03-01", result, "v1", "/tmp/report.html")
    rows = con.execute("SELECT feature, drift_score, drifted FROM monitoring.drift ORDER BY feature").fetchall()
    assert [r[0] for r in rows] == ["contract", "monthly_charges", "tenure_months"]
    assert rows[2][1] is None  # not measurable is NULL, not NaN
    summary = con.execute("SELECT month, drifted_features, model_version, report_path FROM monitoring.drift_summary").fetchall()
    assert summary == [(date(2024, 3, 1), 1, "v1", "/tmp/report.html")]


def test_evidently_html_report_is_written(tmp_path):
    reference, current = drift_frames(rows=300)
    reference["churn_probability"] = np.linspace(0, 1, len(reference))
    current["churn_probability"] = np.linspace(0.2, 1, len(current))
    path = drift_module.write_drift_report(
        reference, current, ["monthly_charges"], ["contract"], tmp_path / "reports" / "2024-03.html"
    )
    text = path.read_text()
    assert path.stat().st_size > 10_000 and "monthly_charges" in text and "churn_probability" in text
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


# -- checks ----------------------------------------------------------------------------------


def test_graded_check_levels():
    assert graded_check("x", 0.05, 0.1, 0.2)[:2] == (True, None)
    assert graded_check("x", 0.1, 0.1, 0.2)[:2] == (False, "WARN")
    assert graded_check("x", 0.2, 0.1, 0.2)[:2] == (False, "ERROR")
    passed, severity, metadata = graded_check("x", float("nan"), 0.1, 0.2)
    assert passed and severity is None and "not measured" in metadata["description"]
    with pytest.raises(DriftError, match="psi"):
        DriftThresholds(psi_warn=0.3, psi_error=0.2)


def test_drift_checks_read_the_summary():
    thresholds = DriftThresholds()
    summary = {"share_drifted": 0.6, "drifted_features": 6, "max_psi": 0.3, "max_psi_feature": "tenure",
               "prediction_drift_score": None}
    assert check_drift_share(summary, thresholds)[:2] == (False, "ERROR")
    passed, severity, metadata = check_max_psi(summary, thresholds)
    assert (passed, severity, metadata["feature"]) == (False, "WARN", "tenure")
    assert check_prediction_drift(summary, thresholds)[:2] == (True, None)


def test_decay_check_passes_and_fails_on_the_margin():
    row = {"month": date(2024, 5, 1), "auc": 0.80, "champion_test_auc": 0.84, "model_version": "v", "rows": 10,
           "positives": 3}
    assert check_decay(row, DecaySettings(max_drop=0.05))[:2] == (True, None)
    passed, severity, metadata = check_decay(row, DecaySettings(max_drop=0.03, severity="WARN"))
    assert (passed, severity) == (False, "WARN") and metadata["drop"] == pytest.approx(0.04)
    assert check_decay({**row, "auc": float("nan")}, DecaySettings())[0] is True
    assert check_decay(None, DecaySettings())[0] is True
    with pytest.raises(ValueError, match="severity"):
        DecaySettings(severity="FATAL")


# -- realised performance --------------------------------------------------------------------


def performance_con(seed: int = 3) -> tuple[duckdb.DuckDBPyConnection, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows = []
    for month in MONTHS:
        for i in range(200):
            probability = float(rng.uniform(0.01, 0.99))
            churned = int(rng.random() < probability) if month != MONTHS[-1] else None
            rows.append((f"C{i:04d}", pd.Timestamp(month).date(), probability, churned))
    frame = pd.DataFrame(rows, columns=["customer_id", "snapshot_month", "churn_probability", "churned"])
    con = duckdb.connect()
    con.execute("CREATE SCHEMA ml; CREATE SCHEMA features")
    con.register("frame", frame)
    con.execute("""CREATE TABLE ml.predictions AS SELECT customer_id, snapshot_month, churn_probability,
                   'high' AS risk_band, 'v1' AS model_version, TIMESTAMP '2024-06-01 10:00' AS scored_at FROM frame""")
    con.execute("CREATE TABLE features.labels AS SELECT customer_id, snapshot_month, CAST(churned AS INTEGER) AS churned FROM frame")
    con.execute("CREATE TABLE ml.model_versions (version VARCHAR, test_auc DOUBLE, is_champion BOOLEAN, "
                "created_at TIMESTAMP, split_description JSON)")
    con.execute("INSERT INTO ml.model_versions VALUES ('v1', 0.9, true, TIMESTAMP '2024-05-01', NULL)")
    return con, frame


def test_realised_performance_matches_sklearn_and_refreshes_only_changed_months():
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    con, frame = performance_con()
    plan = plan_refresh(con)
    assert [m for m, _ in plan.to_compute] == [date(2024, 1, 1), date(2024, 2, 1)]  # March is unlabelled
    rows = [compute_month(con, m, v) for m, v in plan.to_compute]
    write_performance(con, rows, plan.to_remove)

    january = frame[frame["snapshot_month"] == date(2024, 1, 1)]
    y, p = january["churned"].astype(int), january["churn_probability"]
    stored = con.execute("SELECT * FROM monitoring.performance WHERE month = DATE '2024-01-01'").df().iloc[0]
    assert stored["rows"] == 200 and stored["positives"] == y.sum()
    assert stored["auc"] == pytest.approx(roc_auc_score(y, p))
    assert stored["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert stored["brier"] == pytest.approx(brier_score_loss(y, p))
    bins = np.minimum((p.to_numpy() * 10).astype(int), 9)
    ece = sum(abs(y[bins == b].mean() - p[bins == b].mean()) * (bins == b).sum() for b in set(bins)) / 200
    assert stored["ece"] == pytest.approx(ece)
    assert stored["champion_test_auc"] == 0.9 and stored["model_version"] == "v1"

    assert plan_refresh(con).to_compute == []
    con.execute("UPDATE features.labels SET churned = 1 - churned WHERE snapshot_month = DATE '2024-02-01' AND customer_id = 'C0001'")
    assert [m for m, _ in plan_refresh(con).to_compute] == [date(2024, 2, 1)]


def test_realised_metrics_single_class_has_no_auc():
    metrics = realised_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(metrics["auc"]) and math.isnan(metrics["pr_auc"])
    assert metrics["brier"] == pytest.approx((0.01 + 0.04 + 0.09) / 3)


# -- retraining reasons ----------------------------------------------------------------------


def reasons_con(*, trained_until: str = "2024-03-01", share: float = 0.6, auc: float = 0.78) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA ml; CREATE SCHEMA monitoring; CREATE SCHEMA features")
    con.execute("CREATE TABLE ml.model_versions (version VARCHAR, test_auc DOUBLE, is_champion BOOLEAN, "
                "created_at TIMESTAMP, split_description JSON)")
    split = {"strategy": "out_of_time", "parts": {
        "train": {"months": ["2023-10-01", "...", "2024-01-01"]}, "valid": {"months": ["2024-02-01"]},
        "test": {"months": [trained_until]}}}
    con.execute("INSERT INTO ml.model_versions VALUES ('old', 0.80, false, TIMESTAMP '2024-01-01', NULL), "
                "('champ', 0.85, true, TIMESTAMP '2024-04-02', ?)", [json.dumps(split)])
    con.execute("CREATE TABLE monitoring.drift_summary (month DATE, share_drifted DOUBLE, drifted_features INTEGER, "
                "features_checked INTEGER, max_psi DOUBLE, max_psi_feature VARCHAR, "
                "prediction_drift_score DOUBLE, model_version VARCHAR)")
    con.execute("INSERT INTO monitoring.drift_summary VALUES (DATE '2024-04-01', ?, 6, 10, 0.1, 'x', 0.05, 'champ'), "
                "(DATE '2024-05-01', 0.1, 1, 10, 0.1, 'x', 0.05, 'champ'), "
                "(DATE '2024-06-01', 0.9, 9, 10, 0.9, 'x', 0.5, 'old')", [share])
    con.execute("CREATE TABLE monitoring.performance (month DATE, auc DOUBLE, model_version VARCHAR)")
    con.execute("INSERT INTO monitoring.performance VALUES (DATE '2024-04-01', ?, 'champ'), "
                "(DATE '2024-03-01', 0.5, 'old')", [auc])
    con.execute("CREATE TABLE features.labels (customer_id VARCHAR, snapshot_month DATE, churned INTEGER)")
    con.execute("INSERT INTO features.labels VALUES ('a', DATE '2024-03-01', 0), ('a', DATE '2024-04-01', 1), "
                "('a', DATE '2024-05-01', 0), ('a', DATE '2024-06-01', NULL)")
    return con


DRIFT_LEVELS = DriftThresholds(share_error=0.5, psi_error=0.5, prediction_error=0.2)


def test_retraining_reasons_on_crafted_tables():
    reasons = retraining_reasons(reasons_con(), drift=DRIFT_LEVELS, decay_margin=0.05, new_labelled_months=2)
    by_kind = {r.kind: r for r in reasons}
    assert set(by_kind) == {"drift", "decay", "new_data"}
    assert by_kind["drift"].month == date(2024, 4, 1)  # the 'old' model's drift does not count
    assert by_kind["drift"].run_key == "drift-champ-2024-04"
    assert by_kind["decay"].run_key == "decay-champ-2024-04" and "0.7800" in by_kind["decay"].detail
    assert by_kind["new_data"].month == date(2024, 5, 1)  # June is not labelled yet
    assert by_kind["new_data"].run_key == "new_data-champ-2024-05"


def test_each_drift_error_level_calls_for_retraining():
    for column, value in (("max_psi", 0.7), ("prediction_drift_score", 0.25)):
        con = reasons_con(trained_until="2024-05-01", share=0.2, auc=0.83)
        con.execute(f"UPDATE monitoring.drift_summary SET {column} = ? WHERE month = DATE '2024-05-01'", [value])
        [reason] = retraining_reasons(con, drift=DRIFT_LEVELS, decay_margin=0.05, new_labelled_months=1)
        assert reason.kind == "drift" and reason.run_key == "drift-champ-2024-05"


def test_retraining_reasons_quiet_when_healthy_and_without_tables():
    healthy = reasons_con(trained_until="2024-05-01", share=0.2, auc=0.83)
    assert retraining_reasons(healthy, drift=DRIFT_LEVELS, decay_margin=0.05, new_labelled_months=1) == []
    empty = duckdb.connect()
    assert retraining_reasons(empty, drift=DRIFT_LEVELS, decay_margin=0.05, new_labelled_months=1) == []
    empty.execute("CREATE SCHEMA features")
    empty.execute("CREATE TABLE features.labels AS SELECT 'a' AS customer_id, DATE '2024-01-01' AS snapshot_month, 1 AS churned")
    [reason] = retraining_reasons(empty, drift=DRIFT_LEVELS, decay_margin=0.05, new_labelled_months=1)
    assert reason.kind == "new_data" and reason.run_key == "new_data-none-2024-01"


# -- the Dagster assets and checks on a registered champion --------------------------------


def test_assets_score_measure_drift_and_realised_performance(monitored_warehouse):

    from churn_assets.monitoring.assets import drift, monitoring_assets, monitoring_checks, realised_performance
    from churn_assets.monitoring.drift import DriftPolicy
    from churn_assets.monitoring.retraining import RetrainingPolicy
    from churn_assets.scoring.assets import predictions
    from churn_assets.scoring.batch import ScoringPolicy

    warehouse, artifacts, version = monitored_warehouse
    resources = {"warehouse": warehouse, "artifacts": artifacts, "scoring_policy": ScoringPolicy(),
                 "engine_policy": EnginePolicy(),
                 "drift_policy": DriftPolicy(sample_rows=100), "retraining_policy": RetrainingPolicy()}

    for month in ("2024-04-01", "2024-05-01", "2024-06-01"):
        result = materialize([predictions], partition_key=month, resources=resources)
        assert result.success
    [scored] = result.asset_materializations_for_node("ml__predictions")
    assert scored.metadata["rows_scored"].value == 150
    assert scored.metadata["model_version"].value == version

    drift_checks, decay_check = monitoring_checks
    # Three months in one step (a single-run backfill): each month keeps its own figures.
    result = materialize(
        [drift, drift_checks], resources=resources,
        tags={"dagster/asset_partition_range_start": "2024-04-01", "dagster/asset_partition_range_end": "2024-06-01"},
    )
    assert result.success
    measured = {m.partition: m.metadata for m in result.asset_materializations_for_node("monitoring__drift")}
    assert sorted(measured) == ["2024-04-01", "2024-05-01", "2024-06-01"]
    report = measured["2024-06-01"]["report"].value
    assert report.endswith("reports/drift/2024-06.html") and (artifacts.root_path / "reports/drift/2024-06.html").exists()
    assert "report" not in measured["2024-04-01"]  # only the latest month gets an HTML report by default
    with warehouse.read() as con:
        stored = dict(con.execute("SELECT strftime(month, '%Y-%m-01'), max_psi FROM monitoring.drift_summary").fetchall())
        paging = dict(con.execute("SELECT strftime(month, '%Y-%m-01'), paging_psi FROM monitoring.drift_summary").fetchall())
    assert {month: meta["max_psi"].value for month, meta in measured.items()} == pytest.approx(stored)
    assert len(set(stored.values())) == 3
    assert all(meta["dagster/partition_row_count"].value == 7 for meta in measured.values())

    # One evaluation per check and month, each judging its own month.
    evaluations = result.get_asset_check_evaluations()
    assert sorted((e.check_name, e.partition) for e in evaluations) == sorted(
        (name, month) for name in ("drift_share", "max_psi", "prediction_drift", "weighted_drift") for month in measured)
    for e in evaluations:
        assert e.metadata["month"].value == e.partition[:7]
        # Tied to the month's materialization, so the UI counts the result as current for it.
        assert e.target_materialization_data is not None
        if e.check_name == "max_psi":  # graded on the PSI a feature may page with
            assert e.metadata["value"].value == pytest.approx(paging[e.partition])

    result = materialize([realised_performance, decay_check], resources=resources)
    assert result.success
    [decay] = result.get_asset_check_evaluations()
    # The champion's test month is 2024-05, so its realised AUC there is the test AUC itself.
    assert decay.passed and decay.metadata["drop"].value == pytest.approx(0.0, abs=1e-12)

    with warehouse.read() as con:
        assert con.execute("SELECT count(*) FROM ml.predictions").fetchone()[0] == 450
        summary = con.execute(
            "SELECT month, features_checked, reference_rows, current_rows, model_version, "
            "prediction_drift_score IS NOT NULL FROM monitoring.drift_summary ORDER BY month"
        ).fetchall()
        # The champion trained on 2024-01..03 (validated on 04, tested on 05).
        assert summary[-1] == (date(2024, 6, 1), 7, 100, 100, version, True) and len(summary) == 3
        performance = con.execute("SELECT month, rows, model_version FROM monitoring.performance ORDER BY 1").fetchall()
        assert performance == [(date(2024, 4, 1), 150, version), (date(2024, 5, 1), 150, version)]
    assert monitoring_assets[0] is drift


def test_split_months_reads_the_registry_description_and_expands_abbreviations():
    from churn_assets.monitoring.champion import champion_record

    record = champion_record(reasons_con(trained_until="2024-03-01"))
    assert record.version == "champ" and record.test_auc == 0.85
    assert record.train_months == [date(2023, 10, 1), date(2023, 11, 1), date(2023, 12, 1), date(2024, 1, 1)]
    assert record.last_labelled_month == date(2024, 3, 1)
