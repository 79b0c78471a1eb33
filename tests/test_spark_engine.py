"""The Spark engine's foundation: the warehouse, the SQL models and their checks on Spark,
against the project's own DuckDB path on the same raw data.

One SparkSession (local[2], 2 shuffle partitions, 1g driver, no UI) serves the test session
and is stopped at its end (session-scoped: a module-scoped one would be rebuilt whenever
xdist runs another module's test in between). The data both engines build is used by one
test only, so under ``-n 2`` one worker builds it; the other tests bring their own few rows.
(xdist's ``--dist loadgroup`` would keep them on one worker, but xdist 3.8 cannot rename
pytest 9.2's node ids, so its groups are ignored.) Without pyspark or Java these tests skip and say why; CI sets
CHURN_REQUIRE_SPARK=1 (.ci/run installs both), where a missing Spark fails them instead.
Run them alone with ``uv run pytest -m spark``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import pytest
from conftest import SPARK_REQUIRED, assert_same_rows, spark_missing

from churn_assets.core.engine import EnginePolicy

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"

MISSING = spark_missing()

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(MISSING is not None and not SPARK_REQUIRED, reason=MISSING or ""),
]

CUSTOMERS, MONTHS, SEED = 300, 6, 11
FLOAT_TOLERANCE = 1e-9


@pytest.fixture(scope="session")
def spark_warehouse(tmp_path_factory):
    if MISSING is not None:
        pytest.fail(f"{MISSING} (CHURN_REQUIRE_SPARK is set: the Spark tests must run here)")
    from churn_assets.core.spark_warehouse import SparkWarehouse

    warehouse = SparkWarehouse(
        location=str(tmp_path_factory.mktemp("spark") / "warehouse"),
        master="local[2]",
        shuffle_partitions=2,
        driver_memory="1g",
    )
    started = time.perf_counter()
    warehouse.session()
    print(f"\nSparkSession started in {time.perf_counter() - started:.1f}s "
          f"(load average {Path('/proc/loadavg').read_text().split()[:3]})")
    yield warehouse
    warehouse.stop()


@pytest.fixture(scope="session")
def sql_project():
    from churn_assets.source.raw_assets import RAW_ASSET_KEYS
    from churn_assets.sql_models import load_sql_project

    return load_sql_project(SQL_DIR, RAW_ASSET_KEYS, use_cache=False)


@pytest.fixture(scope="session")
def duckdb_build(tmp_path_factory, sql_project):
    """The synthetic generator's deliveries, loaded by the raw layer's own function and built
    by the SQL assets themselves (one Dagster run backfilling every month)."""
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.source.raw_assets import load_months_into_warehouse
    from churn_assets.source.synthetic import GeneratorConfig, write_source
    from conftest import materialize

    home = tmp_path_factory.mktemp("duckdb-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_HOME", str(home))
        months = write_source(home / "source", GeneratorConfig(customers=CUSTOMERS, months=MONTHS, seed=SEED))
        warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
        with warehouse.write() as con:
            load_months_into_warehouse(con, home / "source", months)
        run = materialize(
            [*sql_project.assets],
            resources={"warehouse": warehouse, "engine_policy": EnginePolicy()},
            tags={"dagster/asset_partition_range_start": months[0],
                  "dagster/asset_partition_range_end": months[-1]},
        )
        assert run.success
    return warehouse, [dt.date.fromisoformat(m) for m in months]


def _next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)


@pytest.fixture(scope="session")
def spark_build(spark_warehouse, duckdb_build, sql_project):
    """The same deliveries landed on Spark by its own reader (a month folder per delivery),
    then every model on Spark in the loader's order; the incremental features one month per
    write, as monthly partitions would run."""
    from churn_assets.source.spark_landing import land_deliveries_on_spark
    from churn_assets.sql_models.spark_models import run_model

    warehouse, months = duckdb_build
    started = time.perf_counter()
    land_deliveries_on_spark(spark_warehouse, Path(warehouse.path).parent / "source", [str(m) for m in months])
    timings = {"raw": round(time.perf_counter() - started, 1)}
    for model in sql_project.models:
        started = time.perf_counter()
        if model.config.is_incremental:
            for month in months:
                run_model(spark_warehouse, model, month, _next_month(month))
        else:
            run_model(spark_warehouse, model)
        timings[model.relation] = round(time.perf_counter() - started, 1)
    print(f"\nSpark build seconds per model: {timings}")
    return spark_warehouse


# --- comparing tables ---------------------------------------------------------------------

SPARK_TYPE_OF_DUCKDB = {"VARCHAR": "string", "INTEGER": "int", "BIGINT": "bigint", "DOUBLE": "double",
                        "BOOLEAN": "boolean", "DATE": "date", "TIMESTAMP": "timestamp_ntz"}


def assert_same_table(duckdb_warehouse, spark_warehouse, relation: str, key: list[str]) -> int:
    with duckdb_warehouse.read() as con:
        duck_types = {name: kind for name, kind, *_ in con.execute(f"DESCRIBE {relation}").fetchall()}
        duck = con.execute(f"SELECT * FROM {relation}").df()
    spark_types = dict(spark_warehouse.columns(relation))
    assert set(spark_types) == set(duck_types), (relation, set(spark_types) ^ set(duck_types))
    wrong_types = {c: (t, spark_types[c]) for c, t in duck_types.items() if SPARK_TYPE_OF_DUCKDB.get(t) != spark_types[c]}
    assert not wrong_types, (relation, wrong_types)

    # The keys sort alike on both sides (Spark's dates arrive as datetime.date, DuckDB's as
    # datetime64).
    spark = spark_warehouse.read(f"SELECT * FROM {relation}")
    return assert_same_rows(relation, duck, spark, key, FLOAT_TOLERANCE)


TABLE_KEYS = {
    "staging.customers": ["customer_id"],
    "staging.subscriptions": ["customer_id", "snapshot_month"],
    "staging.events": ["event_id"],
    "staging.cancellations": ["customer_id", "cancel_date"],
    "features.customer_features": ["customer_id", "snapshot_month"],
    "features.labels": ["customer_id", "snapshot_month"],
    "features.training_set": ["customer_id", "snapshot_month"],
}


# --- parity -------------------------------------------------------------------------------


def _tables_are_the_same(duckdb_build, spark_build, sql_project):
    from churn_assets.source.contract import RAW_TABLES

    warehouse, months = duckdb_build
    assert set(TABLE_KEYS) == {m.relation for m in sql_project.models}
    raw_keys = {f"raw.{name}": [*table.key, "delivery_month"] for name, table in RAW_TABLES.items()}
    rows = {relation: assert_same_table(warehouse, spark_build, relation, key)
            for relation, key in {**raw_keys, **TABLE_KEYS}.items()}
    # Not a comparison of two empty tables: every month has features, some rows are labelled,
    # the warm-up months are left out of training.
    assert rows["features.customer_features"] >= CUSTOMERS * MONTHS * 0.8
    assert 0 < rows["features.training_set"] < rows["features.labels"]
    feature_months = spark_build.read("SELECT DISTINCT snapshot_month FROM features.customer_features")
    assert sorted(feature_months["snapshot_month"]) == months


def _checks_are_the_same(duckdb_build, spark_build, sql_project):
    import dataclasses

    from churn_assets.sql_models.checks import evaluate_check as duckdb_check
    from churn_assets.sql_models.checks import model_check_plans, singular_check_plans
    from churn_assets.sql_models.spark_models import evaluate_check as spark_check

    warehouse, _ = duckdb_build
    plans = [p for m in sql_project.models for p in model_check_plans(m)]
    plans += [p for t in sql_project.singular_tests for p in singular_check_plans(t)]
    # Checks that fail on this data, so equal counts are not just two zeros: contract narrowed
    # to one of its three values, and a range no monthly charge meets.
    subscriptions = sql_project.model("staging.subscriptions")
    narrowed = [dataclasses.replace(t, args={**t.args, "values": ["Month-to-month"]}, check_name="narrowed")
                for t in subscriptions.tests if t.kind == "accepted_values" and t.column == "contract"]
    below = [dataclasses.replace(t, args={"min": 1000}, check_name="impossible_range")
             for t in subscriptions.tests if t.kind == "range" and t.column == "monthly_charges"]
    failing_plans = model_check_plans(dataclasses.replace(subscriptions, tests=tuple(narrowed + below)))
    assert len(failing_plans) == 2
    results = {}
    with warehouse.read() as con:
        for plan in plans + failing_plans:
            on_duckdb, on_spark = duckdb_check(con, plan), spark_check(spark_build, plan)
            results[(plan.asset_key.to_user_string(), plan.name)] = (
                on_duckdb.passed, on_duckdb.metadata["failing_rows"].value,
                on_spark.passed, on_spark.metadata["failing_rows"].value if "failing_rows" in on_spark.metadata
                else on_spark.description,
            )
    different = {k: v for k, v in results.items() if v[:2] != v[2:]}
    assert not different, different
    assert all(results[(p.asset_key.to_user_string(), p.name)][1] > 0 for p in failing_plans)
    assert len(results) == len(plans) + 2 and len(plans) > 100


# --- writes -------------------------------------------------------------------------------


def _month_files(spark_warehouse, relation: str) -> dict[str, set[tuple[str, int]]]:
    root = Path(spark_warehouse.table_path(relation).removeprefix("file://"))
    return {folder.name: {(f.name, f.stat().st_size) for f in folder.iterdir() if f.suffix == ".parquet"}
            for folder in root.iterdir() if folder.is_dir()}


def _rewriting_a_month_replaces_that_month_only(spark_build, sql_project, duckdb_build):
    from churn_assets.sql_models.spark_models import run_model

    _, months = duckdb_build
    model = sql_project.model("features.customer_features")
    relation, month = model.relation, months[3]
    ordered = f"SELECT * FROM {relation} ORDER BY customer_id, snapshot_month"
    before_rows, before_files = spark_build.read(ordered), _month_files(spark_build, relation)
    written = run_model(spark_build, model, month, _next_month(month))
    after_rows, after_files = spark_build.read(ordered), _month_files(spark_build, relation)

    folder = f"snapshot_month={month}"
    assert set(after_files) == set(before_files)
    # The other months' folders hold the very same files; the month's files are new ones.
    assert {k: v for k, v in after_files.items() if k != folder} == {k: v for k, v in before_files.items() if k != folder}
    assert after_files[folder].isdisjoint(before_files[folder])
    # ... with the same rows: a rerun changes nothing.
    assert after_rows.equals(before_rows)
    assert written["rows_by_month"] == {month.strftime("%Y-%m"): int((before_rows["snapshot_month"] == month).sum())}


# --- scoring ------------------------------------------------------------------------------


def _predictions_are_the_same(duckdb_build, spark_build, artifacts_root: Path):
    """A registered model scores every month on both engines: DuckDB's write_predictions and
    the Spark job (model files broadcast, verified and loaded on the executors) write the same
    rows, probabilities and bands; a second Spark run of one month rewrites that month only.
    A booster, a logistic regression and the stacked ensemble of the two."""
    from churn_assets.scoring.batch import RiskBands, write_predictions
    from churn_assets.scoring.spark_scoring import write_predictions_on_spark
    from churn_assets.training.candidates.logistic_regression import train_logistic_regression
    from churn_assets.training.candidates.tuned_xgboost import train_xgboost
    from churn_assets.training.columns import build_feature_spec, duckdb_types_of_frame, infer_roles
    from churn_assets.training.model import evaluate
    from churn_assets.training.registry import load_model, save_model
    from churn_assets.training.split import split_training_set

    warehouse, months = duckdb_build
    with warehouse.read() as con:
        frame = con.execute("SELECT * FROM features.training_set ORDER BY customer_id, snapshot_month").df()
    # 300 customers have too few churners for a temporal split to see both classes in each
    # part; the test is about scoring, so every third row is labelled churned.
    frame["churned"] = (frame.index % 3 == 0).astype(frame["churned"].dtype)
    roles = infer_roles(duckdb_types_of_frame(frame))
    split = split_training_set(frame, roles)
    spec = build_feature_spec(split.train, roles)
    # A booster too: DuckDB scores it on its float32 matrix path, Spark on the frame path.
    booster = train_xgboost(split, spec, {"eta": 0.3, "max_depth": 3}, max_rounds=20,
                            early_stopping_rounds=1000, nthread=1)
    booster_saved = save_model(booster, artifacts_root, split=split, metrics=evaluate(booster, split),
                               training_data_version="parity-data", code_version="parity-code")
    model = train_logistic_regression(split, spec)
    saved = save_model(model, artifacts_root, split=split, metrics=evaluate(model, split),
                       training_data_version="parity-data", code_version="parity-code")
    bands = RiskBands(medium=0.2, high=0.5)
    keys = [str(m) for m in months]
    ordered = ("SELECT customer_id, snapshot_month, churn_probability, risk_band, model_version "
               "FROM ml.predictions ORDER BY customer_id, snapshot_month")

    def scored_on_both(saved_model, **options):
        """ml.predictions as DuckDB's write_predictions and the Spark job write it for every month."""
        with warehouse.write() as con:
            write_predictions(con, load_model(saved_model.version, artifacts_root), keys, bands=bands, **options)
            duck = con.execute(ordered).df()
        written = write_predictions_on_spark(spark_build, saved_model.path, saved_model.version, keys,
                                             manifest_sha256=saved_model.manifest_sha256, bands=bands, **options)
        return duck, spark_build.read(ordered), written

    duck, spark, _ = scored_on_both(booster_saved)
    assert len(spark) == len(duck) > 0 and (spark["model_version"] == booster_saved.version).all()
    assert spark["risk_band"].tolist() == duck["risk_band"].tolist()
    assert float((spark["churn_probability"] - duck["churn_probability"]).abs().max()) <= 1e-6

    duck, spark, written = scored_on_both(saved, batch_rows=97)
    assert len(spark) == len(duck) > 0 and sum(written["rows_by_month"].values()) == len(duck)
    assert spark["customer_id"].tolist() == duck["customer_id"].tolist()
    assert [m.isoformat() for m in spark["snapshot_month"]] == [str(m.date()) for m in duck["snapshot_month"]]
    assert spark["risk_band"].tolist() == duck["risk_band"].tolist()
    assert set(duck["risk_band"]) == {"low", "medium", "high"}
    assert (spark["model_version"] == saved.version).all()
    assert float((spark["churn_probability"] - duck["churn_probability"]).abs().max()) <= 1e-12

    later = write_predictions_on_spark(spark_build, saved.path, saved.version, keys[-1:],
                                       manifest_sha256=saved.manifest_sha256, bands=bands)
    assert list(later["rows_by_month"]) == [keys[-1][:7]]
    again = spark_build.read(ordered)
    # The same rows; the rescored month's probabilities agree to rounding (another batch size).
    exact = ["customer_id", "snapshot_month", "risk_band", "model_version"]
    assert again[exact].equals(spark[exact])
    assert float((again["churn_probability"] - spark["churn_probability"]).abs().max()) <= 1e-12

    # The stacked ensemble of both: its members' folders travel in the payload, and each
    # executor loads the members from them.
    from churn_assets.training.candidates.ensemble import train_ensemble

    members = [load_model(booster_saved.version, artifacts_root), load_model(saved.version, artifacts_root)]
    ensemble = train_ensemble(split, spec, members, members=["logistic_regression", "xgboost"])
    ensemble_saved = save_model(ensemble, artifacts_root, split=split, metrics=evaluate(ensemble, split),
                                training_data_version="parity-data", code_version="parity-code")
    duck, spark, _ = scored_on_both(ensemble_saved)
    assert len(spark) == len(duck) > 0 and (spark["model_version"] == ensemble_saved.version).all()
    assert spark["customer_id"].tolist() == duck["customer_id"].tolist()
    assert spark["risk_band"].tolist() == duck["risk_band"].tolist()
    assert float((spark["churn_probability"] - duck["churn_probability"]).abs().max()) <= 1e-6


def _a_tampered_model_is_refused_before_scoring(duckdb_build, spark_build, artifacts_root: Path):
    from churn_assets.scoring.batch import ScoringError
    from churn_assets.scoring.spark_scoring import write_predictions_on_spark
    from churn_assets.training.registry import ArtifactIntegrityError

    _, months = duckdb_build
    folder = next(p for p in (artifacts_root / "models").iterdir() if p.is_dir())
    before = spark_build.read("SELECT count(*) AS n FROM ml.predictions")["n"][0]
    model_file = folder / json.loads((folder / "manifest.json").read_text())["model_file"]
    model_file.write_bytes(model_file.read_bytes() + b"x")
    with pytest.raises((ArtifactIntegrityError, ScoringError)):
        write_predictions_on_spark(spark_build, folder, folder.name, [str(months[0])])
    assert spark_build.read("SELECT count(*) AS n FROM ml.predictions")["n"][0] == before


def test_both_engines_build_the_same_tables_and_checks(duckdb_build, spark_build, sql_project, tmp_path):
    """The one test that uses the data both engines built (see the module's docstring): every
    table equal, every check's verdict and count equal, then a month rebuilt on Spark touches
    that month only and changes none of its rows; a model scores the same on both engines."""
    _tables_are_the_same(duckdb_build, spark_build, sql_project)
    _checks_are_the_same(duckdb_build, spark_build, sql_project)
    _rewriting_a_month_replaces_that_month_only(spark_build, sql_project, duckdb_build)
    _predictions_are_the_same(duckdb_build, spark_build, tmp_path / "artifacts")
    _a_tampered_model_is_refused_before_scoring(duckdb_build, spark_build, tmp_path / "artifacts")
    _psi_is_the_same(duckdb_build, spark_build)
    _the_training_sample_follows_the_size_rule(duckdb_build, spark_build)


def _the_training_sample_follows_the_size_rule(duckdb_build, spark_build):
    """A training set that fits comes whole, as DuckDB's frame (same dtypes, same content
    hash, so the same split and champion); a larger one is a seeded, stratified sample."""
    from churn_assets.training.columns import infer_roles
    from churn_assets.training.registry import training_data_version
    from churn_assets.training.spark_sample import pull_training_sample
    from churn_assets.training.train import read_training_set

    warehouse, _ = duckdb_build
    with warehouse.read() as con:
        duck, duck_types = read_training_set(con)
    keys = list(infer_roles(duck_types).key_columns)
    whole = pull_training_sample(spark_build, keys, "churned")
    assert whole.whole and whole.total_rows == len(duck) == len(whole.frame)
    assert whole.column_types == duck_types
    assert whole.frame.dtypes.to_dict() == duck.dtypes.to_dict()
    assert training_data_version(whole.frame, keys) == training_data_version(duck, keys)

    target = len(duck) // 2
    half = pull_training_sample(spark_build, keys, "churned", max_rows=target, min_class_rows=1, seed=3)
    assert not half.whole and abs(len(half.frame) - target) <= 0.2 * target
    churn_rate = float(duck["churned"].mean())
    assert abs(float(half.frame["churned"].mean()) - churn_rate) <= 0.1
    again = pull_training_sample(spark_build, keys, "churned", max_rows=target, min_class_rows=1, seed=3)
    assert again.frame.equals(half.frame)
    other = pull_training_sample(spark_build, keys, "churned", max_rows=target, min_class_rows=1, seed=4)
    assert not other.frame[keys].equals(half.frame[keys])
    # The scarce class keeps min_class_rows (here all of it) whatever the overall fraction.
    churners = int(duck["churned"].sum())
    few = pull_training_sample(spark_build, keys, "churned", max_rows=max(10, target // 5), min_class_rows=churners)
    assert int(few.frame["churned"].sum()) == churners


def _psi_is_the_same(duckdb_build, spark_build):
    """PSI per feature of the last month against the first three: drift.binned_shares on the
    month collected from DuckDB, and Spark's counts of the month where it lies."""
    from churn_assets.monitoring.drift import CATEGORICAL, NUMERIC, binned_shares, psi_from_shares
    from churn_assets.monitoring.spark_drift import psi_on_spark

    warehouse, months = duckdb_build
    with warehouse.read() as con:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE "
                                 "table_schema = 'features' AND table_name = 'customer_features'").fetchall())
        reference = con.execute("SELECT * FROM features.customer_features WHERE snapshot_month < ?",
                                [months[3]]).df()
        current = con.execute("SELECT * FROM features.customer_features WHERE snapshot_month = ?",
                              [months[-1]]).df()
    keys = {"customer_id", "snapshot_month"}
    numeric = [c for c, t in types.items() if c not in keys and t in ("DOUBLE", "INTEGER", "BIGINT")]
    categorical = [c for c, t in types.items() if c not in keys and t in ("VARCHAR", "BOOLEAN")]
    assert len(numeric) > 10 and len(categorical) > 3
    spark = psi_on_spark(spark_build, reference, "SELECT * FROM features.customer_features WHERE snapshot_month = :m",
                         numeric, categorical, params={"m": months[-1]}, bins=10)
    assert [f.name for f in spark] == [*numeric, *categorical]
    for feature in spark:
        ref_share, cur_share, labels = binned_shares(reference[feature.name], current[feature.name],
                                                     NUMERIC if feature.name in numeric else CATEGORICAL, bins=10)
        assert feature.labels == labels, feature.name
        assert feature.current_rows == len(current)
        assert max(abs(a - b) for a, b in zip(feature.current_share, cur_share)) <= 1e-12, feature.name
        assert abs(feature.psi - psi_from_shares(ref_share, cur_share)) <= 1e-9, feature.name
    # Not a comparison of zeros: some features moved between the first months and the last.
    assert max(f.psi for f in spark) > 0.01


def test_a_failed_month_write_leaves_the_old_month(spark_warehouse):
    import pandas as pd

    from churn_assets.core.spark_warehouse import SparkWriteError

    jan, feb, mar = dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 3, 1)
    rows = pd.DataFrame({"id": ["a", "b", "c"], "month": [jan, feb, feb], "value": [1.0, 2.0, 3.0]})
    spark_warehouse.write_months("scratch.months", rows, "month", jan, mar)
    old = spark_warehouse.read("SELECT * FROM scratch.months ORDER BY id")
    # A February rewrite that also carries a January row: refused inside the job, nothing changes.
    with pytest.raises(SparkWriteError, match="outside the window"):
        spark_warehouse.write_months("scratch.months", rows.assign(value=9.0), "month", feb, mar)
    assert spark_warehouse.read("SELECT * FROM scratch.months ORDER BY id").equals(old)
    # February rewritten with one row: January as it was, February exactly the new row.
    spark_warehouse.write_months("scratch.months", rows.iloc[[1]].assign(value=7.0), "month", feb, mar)
    now = spark_warehouse.read("SELECT id, value FROM scratch.months ORDER BY id")
    assert now.values.tolist() == [["a", 1.0], ["b", 7.0]]
    # A window with no rows empties its month, as DuckDB's delete of the window does.
    empty = spark_warehouse.sql("SELECT * FROM scratch.months WHERE false")
    result = spark_warehouse.write_months("scratch.months", empty, "month", feb, mar)
    assert result["months_emptied"] == ["2024-02-01"]
    assert spark_warehouse.read("SELECT id FROM scratch.months")["id"].tolist() == ["a"]


def test_a_table_of_zero_rows_outlives_its_session_and_a_failed_first_write_leaves_nothing(spark_warehouse):
    """Spark writes no file for an empty partitioned write: the schema kept beside the files
    registers the table in a later session. A first write that fails leaves no folder, which a
    later session could not read a schema from (a run would fail at its session's start)."""
    import pyarrow as pa

    from churn_assets.core.spark_warehouse import _REGISTERED_CONF, SparkWriteError

    jan, mar = dt.date(2024, 1, 1), dt.date(2024, 3, 1)
    schema = pa.schema([("id", pa.string()), ("month", pa.date32()), ("value", pa.float64())])
    result = spark_warehouse.write_months("scratch.no_rows", schema.empty_table(), "month", jan, mar)
    assert result["rows_by_month"] == {} and not spark_warehouse.has_data_files("scratch.no_rows")
    rows = pa.table({"id": ["a"], "month": [dt.date(2023, 12, 1)], "value": [1.0]}, schema=schema)
    with pytest.raises(SparkWriteError, match="outside the window"):
        spark_warehouse.write_months("scratch.never_written", rows, "month", jan, mar)
    folder = Path(spark_warehouse.table_path("scratch.never_written").removeprefix("file://"))
    assert not folder.exists()

    # A later session: an empty catalog registered from the folders again.
    spark = spark_warehouse.session()
    spark.sql("DROP TABLE IF EXISTS scratch.no_rows")
    spark.conf.set(_REGISTERED_CONF, "")
    spark_warehouse.session()
    assert spark_warehouse.columns("scratch.no_rows") == [("id", "string"), ("value", "double"), ("month", "date")]
    assert spark_warehouse.read("SELECT count(*) AS n FROM scratch.no_rows")["n"][0] == 0
    assert not spark_warehouse.table_exists("scratch.never_written")


def test_a_model_on_spark_reads_a_table_churn_ingest_loaded_into_duckdb(spark_warehouse, tmp_path, monkeypatch):
    """`churn ingest --table raw.NAME` loads DuckDB; a model reading it on engine: spark gets
    it copied to Spark first, at every build, so a re-ingest reaches the next build. (The model
    is a view: its second build replaces the Spark view, which Spark's DROP TABLE refused.)"""
    import dagster as dg
    from conftest import materialize

    from churn_assets.core.spark_warehouse import SparkSettings
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.sql_models import load_sql_project

    monkeypatch.setenv("CHURN_HOME", str(tmp_path / "home"))
    (tmp_path / "sql" / "staging").mkdir(parents=True)
    (tmp_path / "sql" / "staging" / "plan_names.sql").write_text(
        "select plan_id, upper(name) as name from raw.plans")
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"))
    with warehouse.write() as con:
        con.execute("CREATE SCHEMA raw")
        con.execute("CREATE TABLE raw.plans AS SELECT * FROM (VALUES (1, 'basic'), (2, 'pro')) t(plan_id, name)")
    project = load_sql_project(tmp_path / "sql", (), use_cache=False, engine="spark")
    assert project.external_asset_keys == (dg.AssetKey(["raw", "plans"]),)
    resources = {"warehouse": warehouse,
                 "engine_policy": EnginePolicy(name="spark", spark=SparkSettings(location=str(tmp_path / "spark")))}

    def build() -> tuple[list, dict]:
        result = materialize(project.assets, resources=resources)
        assert result.success
        [event] = result.asset_materializations_for_node("staging__plan_names")
        with warehouse.read() as con:
            kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'plan_names'").fetchone()[0]
            rows = con.execute("SELECT plan_id, name FROM staging.plan_names ORDER BY plan_id").fetchall()
        assert kind == "VIEW"  # built by Spark
        return rows, event.metadata

    rows, metadata = build()
    assert rows == [(1, "BASIC"), (2, "PRO")] and metadata["copied_to_spark"].value == "raw.plans"
    with warehouse.write() as con:  # a re-ingest
        con.execute("INSERT INTO raw.plans VALUES (3, 'max')")
    assert build()[0] == [(1, "BASIC"), (2, "PRO"), (3, "MAX")]


def test_a_dataset_projects_export_lands_on_spark_too(spark_warehouse, tmp_path, monkeypatch):
    """A `churn init` project on engine: spark: the export asset loads DuckDB and writes the
    same rows to the Spark warehouse, where the project's SQL models read it."""
    from conftest import materialize

    from churn_assets.core.spark_warehouse import SparkSettings
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.source.export import SourcePolicy, export_asset

    monkeypatch.setenv("CHURN_HOME", str(tmp_path / "home"))
    (tmp_path / "export.csv").write_text("account,period,plan,fee,left\nA1,2025-01,basic,9.5,no\n"
                                         "A1,2025-02,basic,9.5,yes\nB2,2025-02,plus,19.0,no\n")
    policy = SourcePolicy(file="export.csv", table="raw.accounts", time_column="period", time_format="%Y-%m")
    engine = EnginePolicy(name="spark", spark=SparkSettings(location=str(tmp_path / "spark")))
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"))
    result = materialize([export_asset(policy, tmp_path, "spark")],
                         resources={"warehouse": warehouse, "engine_policy": engine})
    assert result.success
    with warehouse.read() as con:
        duck = con.execute("SELECT * FROM raw.accounts").df()
    on_spark = engine.spark_warehouse().read("SELECT * FROM raw.accounts")
    assert len(duck) == 3
    assert_same_rows("raw.accounts", duck, on_spark, ["account", "period"])


def test_a_failed_table_write_leaves_the_old_table(spark_warehouse):
    import pandas as pd

    from churn_assets.core.spark_warehouse import SparkWriteError

    spark_warehouse.write_table("scratch.whole", pd.DataFrame({"id": ["a", "b"], "n": [1, 2]}))
    # The failure comes from the rows, half-way through the job (a BIGINT column, as before).
    failing = spark_warehouse.sql("SELECT id, CASE WHEN n > 1 THEN raise_error('boom') ELSE n END AS n FROM scratch.whole")
    with pytest.raises(SparkWriteError, match="boom"):
        spark_warehouse.write_table("scratch.whole", failing)
    assert spark_warehouse.read("SELECT * FROM scratch.whole ORDER BY id").values.tolist() == [["a", 1], ["b", 2]]
    root = Path(spark_warehouse.table_path("scratch.whole").removeprefix("file://")).parent
    # No staged (.tmp-) or retired (.old-) copy is left beside it.
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("whole")) == ["whole"]


def _tamper(folder: Path, table: str, change) -> None:
    import pandas as pd

    path = folder / f"{table}.parquet"
    change(pd.read_parquet(path)).to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)


@pytest.mark.parametrize("table, change, message", [
    ("subscriptions", lambda f: f.drop(columns=["contract"]), "table 'subscriptions' is missing column(s) contract"),
    ("subscriptions", lambda f: f.assign(contract="Lifetime"), "column 'contract' has a value outside"),
    ("events", lambda f: pd_concat(f, f.iloc[:1]), "table 'events': duplicate key (event_id)"),
    ("customers", lambda f: f.assign(signup_date=None), "column 'signup_date' is empty"),
    ("subscriptions", lambda f: f.assign(snapshot_month=f["snapshot_month"] - dt.timedelta(days=40)),
     "subscriptions.snapshot_month is not the delivery month"),
])
def test_a_delivery_breaking_the_contract_is_not_landed_on_spark(landed_probe, tmp_path, table, change, message):
    from churn_assets.source.deliveries import ContractError
    from churn_assets.source.spark_landing import land_deliveries_on_spark

    spark_warehouse, source, months, before = landed_probe
    tampered = tmp_path / "source"
    shutil.copytree(source, tampered)
    _tamper(tampered / months[1][:7], table, change)
    with pytest.raises(ContractError) as raised:
        land_deliveries_on_spark(spark_warehouse, tampered, months, schema="raw_probe")
    assert message in str(raised.value) and months[1][:7] in str(raised.value), str(raised.value)
    assert "\n" not in str(raised.value)
    assert _probe_counts(spark_warehouse) == before


def _probe_counts(spark_warehouse) -> dict[str, int]:
    from churn_assets.source.contract import RAW_TABLES

    return {name: int(spark_warehouse.read(f"SELECT count(*) AS n FROM raw_probe.{name}")["n"][0]) for name in RAW_TABLES}


@pytest.fixture(scope="module")
def landed_probe(spark_warehouse, tmp_path_factory):
    """Two good months landed in raw_probe.* (apart from the parity build's raw.*)."""
    from churn_assets.source.spark_landing import land_deliveries_on_spark
    from churn_assets.source.synthetic import GeneratorConfig, write_source

    source = tmp_path_factory.mktemp("probe") / "source"
    months = write_source(source, GeneratorConfig(customers=40, months=2, seed=5))
    counts = land_deliveries_on_spark(spark_warehouse, source, months, schema="raw_probe")
    assert set(counts["subscriptions"]) == {m[:7] for m in months} and counts["events"]
    return spark_warehouse, source, months, _probe_counts(spark_warehouse)


def pd_concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


# --- translation and parameters -----------------------------------------------------------


def _project_with(tmp_path, sql: str, yaml_text: str, name: str = "probe"):
    from churn_assets.source.raw_assets import RAW_ASSET_KEYS
    from churn_assets.sql_models import load_sql_project

    folder = tmp_path / "sql" / "features"
    folder.mkdir(parents=True)
    (folder / f"{name}.sql").write_text(sql)
    (folder / "_models.yml").write_text(yaml_text)
    return load_sql_project(tmp_path / "sql", RAW_ASSET_KEYS, use_cache=False).model(f"features.{name}")


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        # DuckDB's bar(): sqlglot does not know it and Spark has no function of that name.
        ("SELECT customer_id, bar(monthly_charges, 0, 100) AS chart FROM raw.subscriptions", "bar()"),
        ("SELECT s.customer_id FROM raw.subscriptions AS s "
         "ASOF JOIN raw.events AS e ON s.customer_id = e.customer_id AND s.snapshot_month >= e.event_time",
         "ASOF JOIN"),
        ("SELECT customer_id, date_diff('hour', signup_date, delivery_month) AS hours FROM raw.customers",
         "date_diff('hour', ...)"),
    ],
)
def test_a_model_spark_cannot_run_is_refused_naming_the_construct(spark_warehouse, tmp_path, sql, construct):
    from churn_assets.sql_models.spark_models import run_model
    from churn_assets.sql_models.transpile import UntranslatableError

    model = _project_with(tmp_path, sql, "models:\n  - name: probe\n    config: {materialized: table}\n")
    with pytest.raises(UntranslatableError) as refused:
        run_model(spark_warehouse, model)
    message = str(refused.value)
    assert "\n" not in message and "features.probe" in message and construct in message
    assert refused.value.construct == construct
    assert not spark_warehouse.table_exists("features.probe")


def test_window_parameters_are_bound_not_pasted(spark_warehouse, tmp_path):
    import pandas as pd

    from churn_assets.sql_models.spark_models import model_spark_sql, run_model

    months = [dt.date(2024, m, 1) for m in (1, 2, 3)]
    spark_warehouse.write_table("raw.probe_rows", pd.DataFrame(
        {"customer_id": ["A", "B", "C"], "snapshot_month": months}))
    model = _project_with(
        tmp_path,
        "SELECT customer_id, snapshot_month, $partition_start AS window_start FROM raw.probe_rows "
        "WHERE snapshot_month >= $partition_start AND snapshot_month < $partition_end",
        "models:\n  - name: probe_window\n    config: {materialized: incremental, partition_by: snapshot_month}\n",
        name="probe_window",
    )
    text = model_spark_sql(spark_warehouse, model)
    assert ":partition_start" in text and ":partition_end" in text and "$" not in text
    written = run_model(spark_warehouse, model, months[1], months[2])
    assert written["rows_by_month"] == {"2024-02": 1}
    rows = spark_warehouse.read("SELECT customer_id, window_start FROM features.probe_window")
    assert rows.values.tolist() == [["B", months[1]]]
    # A value with a quote stays a value: pasted, it would end the literal and match every row.
    evil = "A' OR '1' = '1"
    assert spark_warehouse.read("SELECT :v AS v", {"v": evil})["v"].tolist() == [evil]
    matched = spark_warehouse.read("SELECT count(*) AS n FROM raw.probe_rows WHERE customer_id = :id", {"id": evil})
    assert matched["n"].tolist() == [0]


@pytest.mark.parametrize(
    "expression",
    [
        # DuckDB counts month boundaries: one here, where Spark's timestampdiff counts none.
        "date_diff('month', DATE '2024-01-31', DATE '2024-02-01')",
        "date_diff('quarter', DATE '2024-03-31', DATE '2025-04-01')",
        "date_diff('year', DATE '2024-12-31', DATE '2025-01-01')",
        "date_diff('day', TIMESTAMP '2024-01-01 23:00', TIMESTAMP '2024-01-02 01:00')",
        "CAST(DATE '2024-01-31' + to_months(1) AS DATE)",
        "(SELECT sum(months_after) FROM range(1, 4) AS o(months_after))",
        "(SELECT count(*) FROM generate_series(1, 4))",
    ],
)
def test_rewritten_duckdb_expressions_mean_the_same_on_spark(spark_warehouse, expression):
    import duckdb

    from churn_assets.sql_models.spark_models import spark_sql

    expected = duckdb.sql(f"SELECT {expression} AS v").fetchall()[0][0]
    translated = spark_sql(spark_warehouse, f"SELECT {expression} AS v", "probe")
    assert spark_warehouse.read(translated)["v"].tolist() == [expected], translated
