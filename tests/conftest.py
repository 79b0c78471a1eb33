from __future__ import annotations

import datetime as dt
import importlib.util
import math
import os
import shutil

import dagster as dg
import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def churn_home(tmp_path, monkeypatch):
    """An isolated $CHURN_HOME (and Dagster instance) per test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CHURN_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return home


def tiny_delivery(month: str, customers: int = 20, seed: int = 0) -> dict[str, pd.DataFrame]:
    """A small hand-made delivery that meets the raw contract (not realistic; for plumbing tests)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(month)
    ids = [f"T{i:05d}" for i in range(customers)]
    customers_frame = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_date": start - pd.to_timedelta(rng.integers(0, 700, customers), unit="D"),
            "gender": rng.choice(["Female", "Male"], customers),
            "senior_citizen": rng.random(customers) < 0.16,
            "partner": rng.random(customers) < 0.5,
            "dependents": rng.random(customers) < 0.3,
        }
    )
    charges = rng.uniform(20, 110, customers).round(2)
    subscriptions = pd.DataFrame(
        {
            "customer_id": ids,
            "snapshot_month": start,
            "contract": rng.choice(["Month-to-month", "One year", "Two year"], customers),
            "phone_service": True,
            "multiple_lines": rng.choice(["Yes", "No"], customers),
            "internet_service": "DSL",
            **{
                c: rng.choice(["Yes", "No"], customers)
                for c in (
                    "online_security", "online_backup", "device_protection",
                    "tech_support", "streaming_tv", "streaming_movies",
                )
            },
            "paperless_billing": rng.random(customers) < 0.6,
            "payment_method": rng.choice(["Electronic check", "Mailed check"], customers),
            "monthly_charges": charges,
            "total_charges": (charges * 12).round(2),
        }
    )
    events = pd.DataFrame(
        {
            "event_id": [f"{month[:7]}-E{i}" for i in range(customers)],
            "customer_id": ids,
            "event_time": start + pd.to_timedelta(rng.integers(0, 27 * 24, customers), unit="h"),
            "event_type": rng.choice(["support_call", "usage"], customers),
            "value": rng.uniform(0, 50, customers).round(1),
        }
    )
    cancellations = pd.DataFrame(
        {
            "customer_id": ids[:2],
            "cancel_date": [start + pd.Timedelta(days=3), start + pd.Timedelta(days=9)],
            "reason": ["price", None],
        }
    )
    return {
        "customers": customers_frame,
        "subscriptions": subscriptions,
        "events": events,
        "cancellations": cancellations,
    }


@pytest.fixture
def make_delivery():
    return tiny_delivery


# Budgets that keep every candidate to a second or two on a few hundred rows.
FAST_TUNING = {"n_trials": 5, "timeout_s": None, "max_rounds": 80, "early_stopping_rounds": 10, "nthread": 1}
FAST_CANDIDATE_PARAMS = {"random_forest": {"n_estimators": 20, "n_jobs": 1},
                         "lightgbm": {"max_rounds": 200, "num_threads": 1}}


def fast_resources(home, *, promotion: dict | None = None, tuning: dict | None = None,
                   training: dict | None = None, **sections: dict) -> dict:
    """Warehouse and artifacts under ``home`` plus every policy resource, with fast training
    budgets; keyword arguments replace policy sections as a churn.yaml would."""
    from churn_assets.core.warehouse import ArtifactStore, Warehouse
    from churn_assets.policies import Policies

    policies = Policies.from_mapping({
        "tuning": {**FAST_TUNING, **(tuning or {})},
        "training": {"candidate_params": FAST_CANDIDATE_PARAMS, **(training or {})},
        "promotion": promotion or {},
        **sections,
    })
    return {"warehouse": Warehouse(path=str(home / "warehouse.duckdb")),
            "artifacts": ArtifactStore(root=str(home / "artifacts")), **policies.resources()}


@pytest.fixture
def monitored_warehouse(churn_home):
    """A warehouse with six months of features (the last unlabelled) and a promoted
    logistic-regression champion trained by the registry on the first five."""
    from churn_assets.training.candidates.logistic_regression import train_logistic_regression
    from churn_assets.training.model import evaluate
    from churn_assets.training.columns import build_feature_spec, duckdb_types_of_frame, infer_roles
    from churn_assets.training.registry import promote, register_versions, save_model, version_record
    from churn_assets.training.sample_data import synthetic_training_frame
    from churn_assets.training.split import split_training_set
    from churn_assets.core.warehouse import ArtifactStore

    frame = synthetic_training_frame(n_customers=150, n_months=6, seed=5)
    roles = infer_roles(duckdb_types_of_frame(frame))
    split = split_training_set(frame, roles)
    model = train_logistic_regression(split, build_feature_spec(split.train, roles))
    artifacts = ArtifactStore()
    saved = save_model(model, artifacts.root_path, split=split, metrics=evaluate(model, split),
                       training_data_version="test-data", code_version="test-code")
    from churn_assets.core.warehouse import Warehouse

    warehouse = Warehouse()
    with warehouse.write() as con:
        con.execute("CREATE SCHEMA features")
        con.register("frame", frame)
        con.execute("CREATE TABLE features.customer_features AS SELECT * EXCLUDE (churned) FROM frame")
        con.execute("CREATE TABLE features.labels AS SELECT customer_id, snapshot_month, churned FROM frame")
        con.execute("CREATE TABLE features.training_set AS SELECT * FROM frame WHERE churned IS NOT NULL")
        register_versions(con, [version_record(saved, model, "challenger", split, evaluate(model, split))])
        promote(con, saved.version, {"margin": 0.0})
    return warehouse, artifacts, saved.version


# Every month a test may materialize, registered as a partition (the months partitions are
# dynamic: a month exists once it was delivered).
TEST_MONTHS = [f"{year}-{month:02d}-01" for year in range(2023, 2027) for month in range(1, 13)]


def months_instance() -> dg.DagsterInstance:
    from churn_assets.core.partitions import register_months

    instance = dg.DagsterInstance.ephemeral()
    register_months(instance, TEST_MONTHS)
    return instance


def materialize(assets, **kwargs) -> dg.ExecuteInProcessResult:
    """``dg.materialize`` on an ephemeral instance that knows the test months as partitions."""
    return dg.materialize(assets, instance=kwargs.pop("instance", None) or months_instance(), **kwargs)


# --- the Spark engine's tests (test_spark_engine.py, test_engine_parity.py) ----------------


def spark_missing() -> str | None:
    """Why the Spark tests cannot run here, or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed: `uv sync --extra spark`"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "Java is not installed: `apt-get install openjdk-17-jre-headless`"
    return None


# CI sets it (.ci/run installs Java and pyspark): a missing Spark fails those tests, not skips them.
SPARK_REQUIRED = bool(os.environ.get("CHURN_REQUIRE_SPARK"))


def _normalised(value):
    """A cell as a comparable Python value: NaN and None are both NULL, dates are dates."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same(a, b, tolerance: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= tolerance
    if isinstance(a, dt.datetime) and not isinstance(b, dt.datetime):
        a = a.date() if a.time() == dt.time() else a
    if isinstance(b, dt.datetime) and not isinstance(a, dt.datetime):
        b = b.date() if b.time() == dt.time() else b
    return a == b


def assert_same_rows(relation: str, left: pd.DataFrame, right: pd.DataFrame, key: list[str],
                     tolerance: float = 1e-9) -> int:
    """``left`` and ``right`` hold the same rows (matched by ``key``, never NULL): every
    column, floats within ``tolerance``, NULL (None or NaN) equal to NULL only, a date equal
    to its midnight timestamp. Returns the row count."""
    assert set(left.columns) == set(right.columns), (relation, set(left.columns) ^ set(right.columns))
    assert len(left) == len(right), (relation, len(left), len(right))
    left = left.sort_values(key, kind="stable").reset_index(drop=True)
    right = right[list(left.columns)].sort_values(key, kind="stable").reset_index(drop=True)
    for column in left.columns:
        a_values = [_normalised(v) for v in left[column].tolist()]
        b_values = [_normalised(v) for v in right[column].tolist()]
        differing = [i for i, (a, b) in enumerate(zip(a_values, b_values)) if not _same(a, b, tolerance)]
        assert not differing, (
            f"{relation}.{column}: {len(differing)} rows differ, e.g. row {differing[0]}: "
            f"{a_values[differing[0]]!r} vs {b_values[differing[0]]!r}"
        )
    return len(left)
