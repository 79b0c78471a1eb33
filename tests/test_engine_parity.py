"""The same demo through both engines, as a user runs it: `churn demo` with ``engine: duckdb``
and with ``engine: spark`` (each a `churn` process on its own $CHURN_HOME, the same seed and
policies), then a second `churn run` on Spark.

Both exit 0; the Spark home's feature tables are DuckDB views over Spark's Parquet (so Spark
built them), and they hold the same rows as DuckDB's tables (every column, floats within
1e-9); the same model versions are registered with the same metrics, the same champion is
promoted, it writes the same predictions, and drift (PSI bins counted by Spark) gives the same
rows. The second Spark run rewrites every month and changes none of those rows. tests/test_spark_engine.py compares the engines step by step;
this test proves the asset graph wires them together.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from conftest import SPARK_REQUIRED, assert_same_rows, spark_missing

from churn_assets.core.keys import DRIFT_KEY

MISSING = spark_missing()

pytestmark = [
    pytest.mark.spark,
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None and not SPARK_REQUIRED, reason=MISSING or ""),
]

DEMO = ["demo", "--customers", "300", "--months", "6", "--seed", "7"]
# Two candidates and a short study keep each run near a minute; the champion is still chosen
# between a baseline and a tuned booster.
POLICIES = """\
engine: {engine}
training:
  candidates: [logistic_regression, xgboost]
tuning:
  n_trials: 3
  persist_study: false
"""
ROW = ["customer_id", "snapshot_month"]
# relation: (query, key)
COMPARED = {
    "features.customer_features": ("SELECT * FROM features.customer_features", ROW),
    "features.labels": ("SELECT * FROM features.labels", ROW),
    "features.training_set": ("SELECT * FROM features.training_set", ROW),
    # scored_at is the time of the run.
    "ml.predictions": ("SELECT * EXCLUDE (scored_at) FROM ml.predictions", ROW),
    # Spark counts the PSI bins over the whole month, DuckDB over its seeded sample of at most
    # 5,000 rows: here the whole month too, so the two agree.
    "monitoring.drift": ("SELECT * FROM monitoring.drift", ["month", "feature"]),
}
SPARK_BUILT = [relation for relation in COMPARED if not relation.startswith("monitoring.")]
# DuckDB scores a booster on its float32 matrix, Spark on a frame per Arrow batch.
TOLERANCE = {"ml.predictions": 1e-6}
REGISTRY = ("SELECT version, algorithm, role, test_auc, valid_auc, cv_auc, is_champion, training_data_version "
            "FROM ml.model_versions ORDER BY version")


def _churn(home: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHURN_HOME": str(home), "CHURN_POLICIES": str(home / "policies.yaml"),
           "DAGSTER_HOME": str(home / "dagster")}
    env.pop("CHURN_PROJECT", None)
    done = subprocess.run([sys.executable, "-m", "churn_assets.cli.main", *argv], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"churn {' '.join(argv)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def _demo(home: Path, engine: str) -> None:
    home.mkdir()
    (home / "policies.yaml").write_text(POLICIES.format(engine=engine))
    _churn(home, *DEMO)


def _tables(home: Path) -> dict:
    from churn_assets.core.warehouse import Warehouse

    with Warehouse(path=str(home / "warehouse.duckdb")).read() as con:
        kinds = dict(con.execute("SELECT table_schema || '.' || table_name, table_type "
                                 "FROM information_schema.tables").fetchall())
        frames = {relation: con.execute(query).df() for relation, (query, _) in COMPARED.items()}
        registry = con.execute(REGISTRY).df()
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        drift = instance.get_latest_materialization_event(DRIFT_KEY).asset_materialization
    return {"kinds": kinds, "frames": frames, "registry": registry,
            "psi_counted_on": drift.metadata["psi_counted_on"].value}


def test_the_demo_gives_the_same_tables_champion_and_predictions_on_both_engines(tmp_path):
    _demo(tmp_path / "duckdb", "duckdb")
    _demo(tmp_path / "spark", "spark")
    duck, spark = _tables(tmp_path / "duckdb"), _tables(tmp_path / "spark")

    for relation in SPARK_BUILT:
        assert duck["kinds"][relation] == "BASE TABLE", relation
        assert spark["kinds"][relation] == "VIEW", relation  # over Spark's Parquet files
        schema, table = relation.split(".")
        assert any((tmp_path / "spark" / "spark-warehouse" / schema / table).rglob("*.parquet")), relation
    for relation in COMPARED:  # the same types too (assert_same_rows compares values)
        assert duck["frames"][relation].dtypes.to_dict() == spark["frames"][relation].dtypes.to_dict(), relation
    rows = {relation: assert_same_rows(relation, duck["frames"][relation], spark["frames"][relation], key,
                                       tolerance=TOLERANCE.get(relation, 1e-9))
            for relation, (_, key) in COMPARED.items()}
    assert 0 < rows["features.training_set"] < rows["features.labels"] <= rows["features.customer_features"]
    assert rows["ml.predictions"] == rows["features.customer_features"]
    assert rows["monitoring.drift"] > 0

    assert_same_rows("ml.model_versions", duck["registry"], spark["registry"], ["version"])
    champions = duck["registry"].loc[duck["registry"]["is_champion"], "version"].tolist()
    assert len(champions) == 1
    assert set(duck["frames"]["ml.predictions"]["model_version"]) == set(champions)
    assert spark["psi_counted_on"].startswith("spark") and duck["psi_counted_on"].startswith("duckdb")

    # A second run on Spark: every month rewritten (new files), the same rows.
    features = tmp_path / "spark" / "spark-warehouse" / "features" / "customer_features"
    files_before = {path.relative_to(features) for path in features.rglob("*.parquet")}
    _churn(tmp_path / "spark", "run")
    files_after = {path.relative_to(features) for path in features.rglob("*.parquet")}
    assert files_after and files_after.isdisjoint(files_before)
    assert {path.parent for path in files_after} == {path.parent for path in files_before}
    again = _tables(tmp_path / "spark")
    for relation, (_, key) in COMPARED.items():
        assert_same_rows(relation, spark["frames"][relation], again["frames"][relation], key)
    assert_same_rows("ml.model_versions", spark["registry"], again["registry"], ["version"])
