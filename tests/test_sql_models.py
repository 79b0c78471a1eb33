"""The project's SQL models (sql/) run directly in DuckDB, and the point-in-time leakage check.

The files are read only through the loader's project object (``load_sql_project``): its
models, in dependency order, with their YAML config. They are run by a deliberately small
helper that mimics the agreed execution (view/table = CREATE OR REPLACE, incremental = DELETE
window + INSERT with $partition_start / $partition_end bound as parameters), so these tests
do not depend on Dagster's asset execution.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from churn_assets.core.engine import EnginePolicy
from churn_assets.source.contract import (
    CANCEL_REASONS,
    CONTRACTS,
    DELIVERY_MONTH,
    INTERNET_ADDON_COLUMNS,
    INTERNET_SERVICES,
    PAYMENT_METHODS,
    RAW_TABLES,
)
from churn_assets.source.raw_assets import RAW_ASSET_KEYS
from churn_assets.sql_models import SqlProject, load_sql_project
from churn_assets.sql_models.leakage import check_point_in_time
from conftest import materialize

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


# --- helpers -------------------------------------------------------------------------


def create_raw_tables(con) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    for table in RAW_TABLES.values():
        columns = ", ".join(f"{c.name} {c.dtype}" for c in (*table.columns, DELIVERY_MONTH))
        con.execute(f"CREATE TABLE raw.{table.name} ({columns})")


def insert_raw(con, table: str, rows, delivery_month: str) -> None:
    frame = pd.DataFrame(rows, columns=RAW_TABLES[table].column_names)
    con.register("raw_rows", frame)
    casts = ", ".join(f"CAST({c.name} AS {c.dtype})" for c in RAW_TABLES[table].columns)
    con.execute(
        f"INSERT INTO raw.{table} SELECT {casts}, CAST(? AS DATE) FROM raw_rows", [delivery_month]
    )
    con.unregister("raw_rows")


@functools.cache
def sql_project(sql_dir: Path = SQL_DIR) -> SqlProject:
    """The loader's view of ``sql_dir`` (read once per folder: write the files first)."""
    return load_sql_project(sql_dir, RAW_ASSET_KEYS, use_cache=False)


def month_starts(first: dt.date, last: dt.date) -> list[dt.date]:
    months, month = [], first
    while month <= last:
        months.append(month)
        month = (pd.Timestamp(month) + pd.DateOffset(months=1)).date()
    return months


def build_models(con, sql_dir: Path = SQL_DIR, *, windows=None, models=None) -> None:
    """Run the project's models (or only those named in ``models``) in its dependency order.
    Incremental ones run once over all snapshot months, or once per (start, end) window in
    ``windows``."""
    project = sql_project(sql_dir)
    selected = None if models is None else {project.model(name).key for name in models}
    for model in project.models:
        if selected is not None and model.key not in selected:
            continue
        schema, table, name, sql = model.schema, model.name, model.relation, model.sql
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        kind = model.config.materialized
        if kind != "incremental":
            con.execute(f"CREATE OR REPLACE {kind.upper()} {name} AS {sql}")
            continue
        if windows is None:
            first, last = con.execute(
                "SELECT min(snapshot_month), max(snapshot_month) FROM staging.subscriptions"
            ).fetchall()[0]
            run_windows = [(first, month_starts(last, last + dt.timedelta(days=31))[1])]
        else:
            run_windows = windows
        column = model.config.partition_by
        for start, end in run_windows:
            params = {"partition_start": start, "partition_end": end}
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                [schema, table],
            ).fetchall()[0][0]
            if not exists:
                con.execute(f"CREATE TABLE {name} AS SELECT * FROM ({sql}) LIMIT 0", params)
            con.execute(
                f"DELETE FROM {name} WHERE {column} >= $partition_start AND {column} < $partition_end",
                params,
            )
            con.execute(f"INSERT INTO {name} {sql}", params)


def random_deliveries(customers: int, months: int, seed: int, start: str = "2024-01-01"):
    """Monthly deliveries of a small random subscriber base (vectorised, seeded).

    Month 0 delivers the existing base; each later month adds ~3% new customers. About 4%
    of active customers cancel each month, dated in the following month.
    """
    rng = np.random.default_rng(seed)
    month_list = pd.date_range(start, periods=months + 1, freq="MS")
    total = customers + int(customers * 0.03) * months + 1
    ids = np.array([f"C{i:07d}" for i in range(total)])
    signup = np.empty(total, dtype="datetime64[D]")
    signup[:customers] = (
        np.datetime64(start) - rng.integers(0, 6 * 365, customers).astype("timedelta64[D]")
    )
    contract = rng.choice(CONTRACTS, total, p=[0.55, 0.25, 0.2])
    internet = rng.choice(INTERNET_SERVICES, total, p=[0.35, 0.45, 0.2])
    phone = rng.random(total) < 0.9
    addons = {c: rng.random(total) < 0.4 for c in INTERNET_ADDON_COLUMNS}
    payment = rng.choice(PAYMENT_METHODS, total)
    charges = np.round(rng.uniform(20, 110, total), 2)
    billed = np.full(total, np.nan)
    active = np.zeros(total, dtype=bool)
    active[:customers] = True
    next_new = customers
    deliveries = []
    cancelled_last_month = pd.DataFrame(columns=["customer_id", "cancel_date", "reason"])
    for m, month in enumerate(month_list[:-1]):
        month_start = np.datetime64(month.date(), "D")
        days = (month_list[m + 1] - month).days
        new = []
        if m > 0:
            count = int(customers * 0.03)
            new = np.arange(next_new, next_new + count)
            next_new += count
            active[new] = True
            signup[new] = month_start + rng.integers(0, days, count).astype("timedelta64[D]")
        delivered = np.arange(customers) if m == 0 else new
        idx = np.flatnonzero(active)
        rises = rng.random(idx.size) < 0.05
        charges[idx[rises]] = np.round(charges[idx[rises]] + 5, 2)
        switched = rng.random(idx.size) < 0.02
        contract[idx[switched]] = rng.choice(CONTRACTS, switched.sum())
        first_bill = np.isnan(billed[idx]) & (signup[idx] < month_start)
        billed[idx] = np.where(np.isnan(billed[idx]), 0, billed[idx]) + charges[idx]
        total_charges = np.where(
            (signup[idx] >= month_start) & ~first_bill, np.nan, np.round(billed[idx], 2)
        )
        no_internet = internet[idx] == "No"
        subscriptions = pd.DataFrame(
            {
                "customer_id": ids[idx],
                "snapshot_month": month.date(),
                "contract": contract[idx],
                "phone_service": phone[idx],
                "multiple_lines": np.where(phone[idx], np.where(idx % 2 == 0, "Yes", "No"), "No phone service"),
                "internet_service": internet[idx],
                **{
                    c: np.where(no_internet, "No internet service", np.where(v[idx], "Yes", "No"))
                    for c, v in addons.items()
                },
                "paperless_billing": idx % 3 == 0,
                "payment_method": payment[idx],
                "monthly_charges": charges[idx],
                "total_charges": total_charges,
            }
        )
        event_types = np.array(["usage", "support_call", "late_payment", "outage", "plan_change"])
        per_type = [np.ones(idx.size, dtype=int)] + [
            rng.poisson(rate, idx.size) for rate in (0.6, 0.2, 0.2, 0.1)
        ]
        owner = np.concatenate([np.repeat(idx, n) for n in per_type])
        kind = np.concatenate([np.full(n.sum(), t) for t, n in zip(event_types, per_type)])
        seconds = rng.integers(0, days * 86400, owner.size).astype("timedelta64[s]")
        events = pd.DataFrame(
            {
                "event_id": [f"E{m:02d}-{i:08d}" for i in range(owner.size)],
                "customer_id": ids[owner],
                "event_time": month_start.astype("datetime64[s]") + seconds,
                "event_type": kind,
                "value": np.round(rng.gamma(2.0, 5.0, owner.size), 2),
            }
        )
        customers_frame = pd.DataFrame(
            {
                "customer_id": ids[delivered],
                "signup_date": signup[delivered],
                "gender": rng.choice(["Female", "Male"], len(delivered)),
                "senior_citizen": rng.random(len(delivered)) < 0.16,
                "partner": rng.random(len(delivered)) < 0.5,
                "dependents": rng.random(len(delivered)) < 0.3,
            }
        )
        deliveries.append(
            (
                month.strftime("%Y-%m-01"),
                {
                    "customers": customers_frame,
                    "subscriptions": subscriptions,
                    "events": events,
                    "cancellations": cancelled_last_month,
                },
            )
        )
        leaving = idx[rng.random(idx.size) < 0.04]
        active[leaving] = False
        next_month = np.datetime64(month_list[m + 1].date(), "D")
        next_days = (month_list[m + 2] - month_list[m + 1]).days if m + 2 < len(month_list) else 28
        cancelled_last_month = pd.DataFrame(
            {
                "customer_id": ids[leaving],
                "cancel_date": next_month + rng.integers(0, next_days, leaving.size).astype("timedelta64[D]"),
                "reason": rng.choice(CANCEL_REASONS, leaving.size),
            }
        )
    return deliveries


def warehouse_with(deliveries) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_raw_tables(con)
    for month, frames in deliveries:
        for table, frame in frames.items():
            insert_raw(con, table, frame, month)
    return con


def frame_of(con, relation: str) -> pd.DataFrame:
    return con.execute(f"SELECT * FROM {relation} ORDER BY ALL").df()


@pytest.fixture(scope="module")
def random_warehouse():
    con = warehouse_with(random_deliveries(customers=200, months=7, seed=7))
    build_models(con)
    yield con
    con.close()


# --- hand-crafted behaviour -----------------------------------------------------------

SUBSCRIPTION_DEFAULTS = {
    "contract": "Month-to-month",
    "phone_service": True,
    "multiple_lines": "No",
    "internet_service": "DSL",
    **{c: "No" for c in INTERNET_ADDON_COLUMNS},
    "paperless_billing": True,
    "payment_method": "Mailed check",
}


def snapshot(customer, month, charges, total, **changes):
    return {"customer_id": customer, "snapshot_month": month, **SUBSCRIPTION_DEFAULTS,
            "monthly_charges": charges, "total_charges": total, **changes}


def event(event_id, customer, time, kind, value=1.0):
    return {"event_id": event_id, "customer_id": customer, "event_time": pd.Timestamp(time),
            "event_type": kind, "value": value}


def person(customer, signup, gender="Female"):
    return {"customer_id": customer, "signup_date": signup, "gender": gender,
            "senior_citizen": False, "partner": True, "dependents": False}


@pytest.fixture(scope="module")
def crafted():
    """Customer A: price rise in March, contract change in April, support calls on window
    edges, cancels in May. Customer B: new in January, total_charges blank, no events."""
    support_feb = event("E2", "A", "2024-02-15 12:00", "support_call")
    deliveries = [
        ("2024-01-01", {
            "customers": [person("A", "2023-10-15", gender="Male"), person("B", "2024-01-10")],
            "subscriptions": [snapshot("A", "2024-01-01", 50.0, 150.0),
                              snapshot("B", "2024-01-01", 30.0, None)],
            "events": [event("E1", "A", "2024-01-01 10:00", "support_call")],
            "cancellations": [],
        }),
        ("2024-02-01", {
            # A's record is corrected by a re-delivery: the latest one wins.
            "customers": [person("A", "2023-10-15", gender="Female")],
            "subscriptions": [snapshot("A", "2024-02-01", 50.0, 200.0),
                              snapshot("B", "2024-02-01", 30.0, 30.0)],
            "events": [support_feb, event("U2", "A", "2024-02-10", "usage", 10.0),
                       event("P2", "A", "2024-02-20", "plan_change", 0.0)],
            "cancellations": [],
        }),
        ("2024-03-01", {
            "customers": [],
            "subscriptions": [snapshot("A", "2024-03-01", 60.0, 260.0),
                              snapshot("B", "2024-03-01", 30.0, None)],
            # E2 arrives again in a later file: it must count once.
            "events": [support_feb, event("E3", "A", "2024-03-31 23:00", "support_call"),
                       event("U3", "A", "2024-03-05", "usage", 4.0)],
            "cancellations": [],
        }),
        ("2024-04-01", {
            "customers": [],
            "subscriptions": [snapshot("A", "2024-04-01", 60.0, 320.0, contract="One year"),
                              snapshot("B", "2024-04-01", 30.0, 90.0)],
            "events": [event("E4", "A", "2024-04-02 08:00", "support_call")],
            "cancellations": [],
        }),
        ("2024-05-01", {
            "customers": [], "subscriptions": [], "events": [],
            "cancellations": [{"customer_id": "A", "cancel_date": "2024-05-10", "reason": "price"}],
        }),
    ]
    con = warehouse_with(deliveries)
    build_models(con)
    features = frame_of(con, "features.customer_features").set_index(["customer_id", "snapshot_month"])
    yield con, features
    con.close()


def row(features, customer, month):
    return features.loc[(customer, pd.Timestamp(month))]


def test_staging_deduplicates_and_latest_delivery_wins(crafted):
    con, _ = crafted
    assert con.execute("SELECT gender FROM staging.customers WHERE customer_id = 'A'").fetchall()[0] == ("Female",)
    assert con.execute("SELECT count(*) FROM staging.events WHERE event_id = 'E2'").fetchall()[0] == (1,)
    assert con.execute("SELECT count(*) FROM staging.subscriptions").fetchall()[0] == (8,)
    # Blank totals stay blank in staging: filling them is a feature decision.
    assert con.execute(
        "SELECT count(*) FROM staging.subscriptions WHERE total_charges IS NULL"
    ).fetchall()[0] == (2,)


def test_trailing_windows_end_at_the_end_of_the_snapshot_month(crafted):
    _, features = crafted
    january, march, april = (row(features, "A", m) for m in ("2024-01-01", "2024-03-01", "2024-04-01"))
    # Jan 1 10:00 is outside the 30 days before Feb 1 (from Jan 2) but inside 90.
    assert (january.support_calls_30d, january.support_calls_90d) == (0, 1)
    assert january.days_since_support_call == 30
    # March: the call on Mar 31 23:00 counts, Jan 1 has left the 90 days, April's is future.
    assert (march.support_calls_30d, march.support_calls_90d) == (1, 2)
    assert march.days_since_support_call == 0
    assert (april.support_calls_30d, april.support_calls_90d) == (1, 3)
    assert april.days_since_support_call == 28
    b_march = row(features, "B", "2024-03-01")
    assert (b_march.support_calls_90d, b_march.days_since_support_call, b_march.days_since_outage) == (0, 365, 365)


def test_charge_trends_plan_changes_and_usage(crafted):
    _, features = crafted
    march, april = row(features, "A", "2024-03-01"), row(features, "A", "2024-04-01")
    assert march.tenure_months == 5
    assert (march.charge_change_1m, march.charge_ratio_1m) == (10.0, 1.2)
    assert bool(march.price_rise_1m) and bool(march.price_rise_3m)
    assert not april.price_rise_1m and april.price_rise_3m
    assert april.charge_change_3m == 10.0
    assert pd.isna(row(features, "A", "2024-02-01").charge_change_3m)
    assert (march.plan_changes_1m, march.plan_changes_3m) == (0, 1)
    assert not march.plan_change_1m and march.plan_change_3m
    assert april.plan_change_1m  # the contract changed from March to April
    assert (march.usage_gb_month, march.usage_gb_prev_month, march.usage_gb_change_1m) == (4.0, 10.0, -6.0)
    assert march.usage_gb_3m_avg == pytest.approx(14.0 / 3)
    assert march.gender == "Female" and march.service_count == 2


def test_blank_total_charges_are_filled_and_flagged(crafted):
    _, features = crafted
    b = {m: row(features, "B", m) for m in ("2024-01-01", "2024-03-01", "2024-04-01")}
    assert (b["2024-01-01"].total_charges, bool(b["2024-01-01"].total_charges_imputed)) == (0.0, True)
    assert (b["2024-03-01"].total_charges, bool(b["2024-03-01"].total_charges_imputed)) == (60.0, True)
    assert (b["2024-04-01"].total_charges, bool(b["2024-04-01"].total_charges_imputed)) == (90.0, False)
    assert b["2024-01-01"].tenure_months == 0


def test_labels_follow_the_next_month_cancellation(crafted):
    con, _ = crafted
    labels = dict(
        ((c, str(m)), churned)
        for c, m, churned in con.execute("SELECT * FROM features.labels").fetchall()
    )
    assert labels[("A", "2024-04-01")] == 1
    assert labels[("A", "2024-03-01")] == 0
    # May is observed through A's cancellation, so B's April is a known 0.
    assert labels[("B", "2024-04-01")] == 0
    training = frame_of(con, "features.training_set")
    labelled = con.execute(
        "SELECT count(*) FROM features.labels WHERE churned IS NOT NULL"
    ).fetchone()[0]
    assert labelled == 8
    # The first three months (January to March) are warm-up: only April trains.
    assert sorted(set(training["snapshot_month"].astype(str))) == ["2024-04-01"]
    assert len(training) == 2
    assert {"customer_id", "snapshot_month", "churned"} <= set(training.columns)


def test_label_is_null_until_the_next_month_is_observed():
    deliveries = [
        ("2024-01-01", {"customers": [person("A", "2023-05-01")],
                        "subscriptions": [snapshot("A", "2024-01-01", 20.0, 200.0)],
                        "events": [], "cancellations": []}),
        ("2024-02-01", {"customers": [], "subscriptions": [snapshot("A", "2024-02-01", 20.0, 220.0)],
                        "events": [], "cancellations": []}),
    ]
    con = warehouse_with(deliveries)
    build_models(con)
    assert con.execute("SELECT snapshot_month::VARCHAR, churned FROM features.labels ORDER BY 1").fetchall() == [
        ("2024-01-01", 0), ("2024-02-01", None)
    ]
    assert con.execute("SELECT count(*) FROM features.training_set").fetchall()[0] == (1,)
    # Any raw row dated in March (here an event) makes March observed.
    insert_raw(con, "events", [event("X", "A", "2024-03-03", "usage", 2.0)], "2024-03-01")
    build_models(con, models=["staging.events", "features.labels"])
    assert con.execute("SELECT churned FROM features.labels WHERE snapshot_month = '2024-02-01'").fetchall()[0] == (0,)


# --- incremental and point-in-time ----------------------------------------------------


def test_month_by_month_runs_equal_one_backfill(random_warehouse):
    months = [m for (m,) in random_warehouse.execute(
        "SELECT DISTINCT snapshot_month FROM staging.subscriptions ORDER BY 1").fetchall()]
    con = warehouse_with(random_deliveries(customers=200, months=7, seed=7))
    build_models(con, windows=[(m, month_starts(m, m + dt.timedelta(days=31))[1]) for m in months])
    # Exactly equal, not within a tolerance: DOUBLE sums are rounded in the SQL, so the order in
    # which DuckDB adds them cannot change a bit.
    pd.testing.assert_frame_equal(
        frame_of(con, "features.customer_features"),
        frame_of(random_warehouse, "features.customer_features"),
        check_exact=True,
    )


def test_two_builds_of_the_same_data_hash_the_same(random_warehouse):
    from churn_assets.training.registry import training_data_version

    keys = ("customer_id", "snapshot_month")
    again = warehouse_with(random_deliveries(customers=200, months=7, seed=7))
    again.execute("SET threads = 1")  # a different summation order than the fixture's build
    build_models(again)
    for relation in ("features.customer_features", "features.training_set"):
        assert training_data_version(frame_of(again, relation), keys) == \
            training_data_version(frame_of(random_warehouse, relation), keys), relation


@pytest.mark.parametrize("months", [3, 7])
def test_training_set_leaves_out_the_warm_up_months_only_when_later_ones_are_labelled(months):
    """The warm-up bound is one scalar; it must keep what the rule says: from three months
    after the first on when a labelled month exists from then on, else every labelled month
    (a short history keeps everything rather than nothing)."""
    con = warehouse_with(random_deliveries(customers=60, months=months, seed=11))
    build_models(con)
    labelled = con.execute(
        "SELECT f.customer_id, f.snapshot_month FROM features.customer_features AS f "
        "JOIN features.labels AS l USING (customer_id, snapshot_month) WHERE l.churned IS NOT NULL"
    ).df()
    first_full = con.execute("SELECT min(snapshot_month) FROM features.customer_features").fetchone()[0]
    first_full = (pd.Timestamp(first_full) + pd.DateOffset(months=3)).date()
    later = labelled[labelled["snapshot_month"].dt.date >= first_full]
    expected = later if len(later) else labelled
    training = con.execute("SELECT customer_id, snapshot_month FROM features.training_set").df()
    assert len(training) > 0 and (len(later) > 0) == (months == 7)
    assert sorted(map(tuple, training.to_numpy().tolist())) == sorted(map(tuple, expected.to_numpy().tolist()))


def test_point_in_time_check_passes_on_the_project_model(random_warehouse):
    result = check_point_in_time(random_warehouse, SQL_DIR, sample=100, months=["2024-02", "2024-05", "2024-07"])
    assert result.passed, result.sample_of_mismatches
    assert result.rows_compared == 300 and result.mismatches == 0
    assert result.truncated_relations == {
        "raw.customers": "signup_date",
        "raw.subscriptions": "snapshot_month",
        "raw.events": "event_time",
    }
    # Truncating at the model's direct inputs instead uses their YAML time columns.
    direct = check_point_in_time(random_warehouse, SQL_DIR, sample=50, inline_upstream_models=False)
    assert direct.passed and direct.truncated_relations["staging.events"] == "event_time"


LEAKY_SQL = (
    "-- Counts support calls with no upper time bound: sees the future.\n"
    "SELECT s.customer_id, s.snapshot_month, count(e.event_id) AS support_calls_ever\n"
    "FROM staging.subscriptions AS s\n"
    "LEFT JOIN staging.events AS e\n"
    "  ON e.customer_id = s.customer_id AND e.event_type = 'support_call'\n"
    "WHERE s.snapshot_month >= $partition_start AND s.snapshot_month < $partition_end\n"
    "GROUP BY s.customer_id, s.snapshot_month\n"
)


def leaky_yaml(name: str) -> str:
    return yaml.safe_dump({"models": [{
        "name": name,
        "config": {"materialized": "incremental", "partition_by": "snapshot_month"},
        "tests": [{"unique": {"columns": ["customer_id", "snapshot_month"]}}],
    }]})


def test_point_in_time_check_catches_a_leaky_model(random_warehouse, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    (sql_dir / "features" / "leaky_features.sql").write_text(LEAKY_SQL)
    (sql_dir / "features" / "leaky_features.yml").write_text(leaky_yaml("leaky_features"))
    build_models(random_warehouse, sql_dir, models=["features.leaky_features"])
    result = check_point_in_time(random_warehouse, sql_dir, "features.leaky_features", months=["2024-03"], sample=None)
    assert not result.passed
    assert result.mismatches > 0 and result.rows_compared > 0
    example = result.sample_of_mismatches[0]
    stored = example["columns"]["support_calls_ever"]
    assert stored["stored"] > stored["recomputed"]
    assert json.loads(json.dumps(result.as_metadata()))["mismatches"] == result.mismatches
    # The last stored month has no future to leak, so there it cannot be caught.
    assert check_point_in_time(random_warehouse, sql_dir, "features.leaky_features", months=["2024-07"]).passed


def test_point_in_time_check_sees_every_model_the_loader_sees(random_warehouse, tmp_path):
    """A model in a nested subfolder, described by a ``.yaml`` file, is an asset; the check
    reads the same project, so it finds the model, its config and its unique key."""
    from churn_assets.sql_models.leakage import point_in_time_sql, unique_columns

    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    nested = sql_dir / "features" / "experimental" / "support"
    nested.mkdir(parents=True)
    (nested / "leaky_nested.sql").write_text(LEAKY_SQL)
    (nested / "leaky_nested.yaml").write_text(leaky_yaml("leaky_nested"))

    project = load_sql_project(sql_dir, RAW_ASSET_KEYS, use_cache=False)
    model = project.model("features.leaky_nested")
    assert model.key in project.asset_keys
    assert (model.path, model.yaml_path) == (nested / "leaky_nested.sql", nested / "leaky_nested.yaml")
    assert model.config.partition_by == "snapshot_month"
    assert unique_columns(model) == ["customer_id", "snapshot_month"]

    build_models(random_warehouse, sql_dir, models=["features.leaky_nested"])
    # The project object and the folder (read by the loader) give the same verdict.
    for source in (project, sql_dir):
        result = check_point_in_time(
            random_warehouse, source, "features.leaky_nested", months=["2024-03"], sample=None
        )
        assert not result.passed and result.mismatches > 0, source
    sampled = check_point_in_time(random_warehouse, project, "features.leaky_nested", months=["2024-03"], sample=20)
    assert not sampled.passed and sampled.rows_compared == 20
    sql, truncated, _ = point_in_time_sql(project, "features.leaky_nested")
    assert "$pit_cutoff" in sql and truncated["raw.events"] == "event_time"


def test_point_in_time_check_reports_what_is_wrong(random_warehouse, tmp_path):
    from churn_assets.sql_models.leakage import LeakageCheckError

    with pytest.raises(LeakageCheckError, match="no model 'features.nope'"):
        check_point_in_time(random_warehouse, SQL_DIR, "features.nope")
    with pytest.raises(LeakageCheckError, match="no rows for month"):
        check_point_in_time(random_warehouse, SQL_DIR, months=["2030-01"])
    empty = duckdb.connect()
    with pytest.raises(LeakageCheckError, match="not materialized"):
        check_point_in_time(empty, SQL_DIR)


def project_with(tmp_path, name: str, sql: str, config: dict) -> Path:
    """A copy of sql/ with one more features model (its YAML beside it), in its own folder
    (``sql_project`` caches a folder's project)."""
    sql_dir = tmp_path / name / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    (sql_dir / "features" / f"{name}.sql").write_text(sql)
    (sql_dir / "features" / f"{name}.yml").write_text(yaml.safe_dump({"models": [{
        "name": name,
        "config": {"materialized": "incremental", "partition_by": "snapshot_month", **config},
        "tests": [{"unique": {"columns": ["customer_id", "snapshot_month"]}}],
    }]}))
    return sql_dir


PER_CUSTOMER = {"row_depends_on": {"entity": "customer_id"}}


def test_sampled_check_agrees_with_the_full_recompute_on_the_project_models(random_warehouse):
    """The built-in models declare row_depends_on: {entity: customer_id}; recomputing only
    the sampled customers gives the full recompute's verdict, and with every customer
    sampled it compares exactly the rows the full recompute compares."""
    months = ["2024-02", "2024-05", "2024-07"]
    for model in ("features.customer_features", "staging.subscriptions", "staging.events"):
        sampled = check_point_in_time(random_warehouse, SQL_DIR, model, months=months, sample=40)
        assert sampled.passed and sampled.method == "sampled customer_id", (model, sampled.summary())
        everyone = check_point_in_time(random_warehouse, SQL_DIR, model, months=months, sample=100_000)
        full = check_point_in_time(random_warehouse, SQL_DIR, model, months=months, sample=None)
        assert full.method == "full month" and full.passed
        assert (everyone.passed, everyone.rows_compared, everyone.mismatches) == (
            full.passed, full.rows_compared, full.mismatches), model
    features = check_point_in_time(random_warehouse, SQL_DIR, months=months, sample=40)
    assert sorted(features.restricted_relations) == ["raw.customers", "raw.events", "raw.subscriptions"]
    assert features.rows_compared == 120  # one row per sampled customer and month
    # The old way stays reachable and agrees.
    old = check_point_in_time(random_warehouse, SQL_DIR, months=months, sample=40, full_recompute=True)
    assert old.passed and old.method == "full month" and old.rows_compared == 120
    # Labels share one global value (the latest observed month): read whole, not restricted.
    from churn_assets.sql_models.leakage import point_in_time_sql

    sql, _, _ = point_in_time_sql(SQL_DIR, "features.labels", sampled_entities=True)
    assert "__pit_raw__events AS (SELECT * FROM raw.events WHERE event_time < $pit_cutoff)" in sql
    assert "__pit_raw__subscriptions__sample AS (SELECT * FROM raw.subscriptions WHERE " \
           "snapshot_month < $pit_cutoff AND customer_id IN (SELECT UNNEST($pit_entities)))" in sql


def test_sampled_check_still_catches_the_leaky_model(random_warehouse, tmp_path):
    sql_dir = project_with(tmp_path, "leaky_declared", LEAKY_SQL, PER_CUSTOMER)
    build_models(random_warehouse, sql_dir, models=["features.leaky_declared"])
    result = check_point_in_time(random_warehouse, sql_dir, "features.leaky_declared", months=["2024-03"], sample=30)
    assert not result.passed and result.method == "sampled customer_id"
    assert result.rows_compared == 30 and result.mismatches > 0 and result.cross_entity_mismatches == 0
    assert result.diagnosis.endswith("also when recomputed from unrestricted sources: leakage")
    assert result.summary().startswith("LEAKAGE")
    stored = result.sample_of_mismatches[0]["columns"]["support_calls_ever"]
    assert stored["stored"] > stored["recomputed"]
    full = check_point_in_time(random_warehouse, sql_dir, "features.leaky_declared", months=["2024-03"], sample=None)
    assert not full.passed


CROSS_CUSTOMER_SQL = (
    "-- Point in time, but each row reads every customer's row of the month.\n"
    "SELECT customer_id, snapshot_month, monthly_charges,\n"
    "       rank() OVER (PARTITION BY snapshot_month ORDER BY monthly_charges, customer_id) AS charge_rank,\n"
    "       monthly_charges - avg(monthly_charges) OVER (PARTITION BY snapshot_month) AS above_average\n"
    "FROM staging.subscriptions\n"
    "WHERE snapshot_month >= $partition_start AND snapshot_month < $partition_end\n"
)
SHARED_AVERAGE_SQL = (
    "-- The month's average is one value shared by every row: a declared global.\n"
    "WITH month_average AS (\n"
    "    SELECT snapshot_month, avg(monthly_charges) AS average FROM staging.subscriptions\n"
    "    WHERE snapshot_month >= $partition_start AND snapshot_month < $partition_end\n"
    "    GROUP BY snapshot_month\n"
    ")\n"
    "SELECT s.customer_id, s.snapshot_month, s.monthly_charges - a.average AS above_average\n"
    "FROM staging.subscriptions AS s JOIN month_average AS a USING (snapshot_month)\n"
    "WHERE s.snapshot_month >= $partition_start AND s.snapshot_month < $partition_end\n"
)


def test_a_cross_customer_dependency_fails_the_sampled_check(random_warehouse, tmp_path):
    """A rank and an average over all customers declared per customer: point-in-time
    correct (the full recompute passes), but restricted to the sample every row differs,
    so the sampled check fails and says the declaration is wrong."""
    sql_dir = project_with(tmp_path, "ranked", CROSS_CUSTOMER_SQL, PER_CUSTOMER)
    build_models(random_warehouse, sql_dir, models=["features.ranked"])
    assert check_point_in_time(random_warehouse, sql_dir, "features.ranked", sample=None).passed
    result = check_point_in_time(random_warehouse, sql_dir, "features.ranked", months=["2024-03", "2024-05"], sample=25)
    assert not result.passed
    assert result.declaration_wrong and result.mismatches == 50  # every sampled row, both months
    assert result.cross_entity_mismatches == 25  # the first month, recomputed unrestricted
    assert "row_depends_on declaration is wrong" in result.diagnosis
    assert result.summary().startswith("WRONG row_depends_on DECLARATION")
    example = result.sample_of_mismatches[0]
    assert example["problem"] == "differs only when the sources are restricted to the sampled entities"
    assert {"charge_rank", "above_average"} & set(example["columns"])

    # Naming the shared value as a global makes the declaration true: the check passes.
    declared = {"row_depends_on": {"entity": "customer_id", "globals": ["month_average"]}}
    sql_dir = project_with(tmp_path, "shared_average", SHARED_AVERAGE_SQL, declared)
    build_models(random_warehouse, sql_dir, models=["features.shared_average"])
    result = check_point_in_time(random_warehouse, sql_dir, "features.shared_average", sample=25)
    assert result.passed and result.method == "sampled customer_id", result.summary()
    without = project_with(tmp_path, "shared_average_undeclared", SHARED_AVERAGE_SQL, PER_CUSTOMER)
    build_models(random_warehouse, without, models=["features.shared_average_undeclared"])
    assert not check_point_in_time(
        random_warehouse, without, "features.shared_average_undeclared", months=["2024-03"], sample=25
    ).passed


FUTURE_CHURNERS_SQL = (
    "-- Leaves out customers who will cancel: rows vanish because of the future.\n"
    "SELECT customer_id, snapshot_month, monthly_charges\n"
    "FROM staging.subscriptions\n"
    "WHERE snapshot_month >= $partition_start AND snapshot_month < $partition_end\n"
    "  AND customer_id NOT IN (SELECT customer_id FROM staging.cancellations)\n"
)


def test_a_leak_that_only_removes_rows_is_caught_by_the_row_count(random_warehouse, tmp_path):
    """Every stored row is right, so no sampled row differs; the month's count does."""
    sql_dir = project_with(tmp_path, "stayers", FUTURE_CHURNERS_SQL, PER_CUSTOMER)
    build_models(random_warehouse, sql_dir, models=["features.stayers"])
    result = check_point_in_time(random_warehouse, sql_dir, "features.stayers", months=["2024-03"], sample=50)
    assert not result.passed and result.method == "sampled customer_id"
    assert result.rows_compared == 50 and result.diagnosis is None  # the sampled rows all match
    (problem,) = result.sample_of_mismatches
    assert problem["problem"] == "row count differs" and problem["recomputed"] > problem["stored"]
    assert result.mismatches == problem["recomputed"] - problem["stored"]


def test_count_sql_drops_only_joins_that_cannot_change_the_row_count(random_warehouse):
    import sqlglot

    from churn_assets.sql_models.leakage import count_sql, point_in_time_sql

    sql, _, _ = point_in_time_sql(SQL_DIR, "features.customer_features")
    counted = count_sql(sql, "snapshot_month")
    joins = [j.this.alias_or_name for j in sqlglot.parse_one(counted, read="duckdb").args["joins"]]
    # The model's only top-level join is staging.customers. Its SQL is unique per customer
    # (the unique ids UNION ALL the deduplicated repeated ones), a shape the proof does not
    # follow, so the join stays: a kept join never makes the count wrong, only slower.
    assert joins == ["c"]
    params = {"partition_start": dt.date(2024, 4, 1), "partition_end": dt.date(2024, 5, 1),
              "pit_cutoff": dt.date(2024, 5, 1)}
    counts = [
        random_warehouse.execute(
            f"SELECT count(*) FROM ({q}) WHERE snapshot_month >= $partition_start "
            "AND snapshot_month < $partition_end", params).fetchall()[0][0]
        for q in (sql, counted)
    ]
    assert counts[0] == counts[1] > 0
    # A LEFT JOIN that can match several rows multiplies them: it stays.
    fan_out = (
        "SELECT s.customer_id, s.snapshot_month, e.value FROM staging.subscriptions AS s "
        "LEFT JOIN staging.events AS e ON e.customer_id = s.customer_id"
    )
    assert "JOIN" in count_sql(fan_out, "snapshot_month")
    grouped = (
        "WITH g AS (SELECT customer_id, count(*) AS n FROM staging.events GROUP BY customer_id) "
        "SELECT s.customer_id, s.snapshot_month, g.n FROM staging.subscriptions AS s "
        "LEFT JOIN g ON g.customer_id = s.customer_id"
    )
    assert "JOIN" not in count_sql(grouped, "snapshot_month")
    # ... unless something else reads it.
    assert "JOIN" in count_sql(grouped + " WHERE g.n > 2", "snapshot_month")
    for query in (fan_out, grouped):
        assert random_warehouse.execute(f"SELECT count(*) FROM ({query})").fetchall() == \
            random_warehouse.execute(f"SELECT count(*) FROM ({count_sql(query, 'snapshot_month')})").fetchall()


def test_wrong_globals_are_one_clear_error(random_warehouse, tmp_path):
    from churn_assets.sql_models.leakage import LeakageCheckError

    declared = {"row_depends_on": {"entity": "customer_id", "globals": ["monthly_average"]}}
    sql_dir = project_with(tmp_path, "misnamed", SHARED_AVERAGE_SQL, declared)
    build_models(random_warehouse, sql_dir, models=["features.misnamed"])
    with pytest.raises(LeakageCheckError, match="^features.misnamed: row_depends_on.globals names "
                                                "'monthly_average', which is not a CTE of its SQL$"):
        check_point_in_time(random_warehouse, sql_dir, "features.misnamed")
    with pytest.raises(LeakageCheckError, match="sample must be a positive number"):
        check_point_in_time(random_warehouse, SQL_DIR, sample=0)


def test_yaml_documents_every_output_column(random_warehouse):
    for model in sql_project().models:
        name = model.relation
        documented = {c.name for c in model.columns}
        produced = {r[0] for r in random_warehouse.execute(f"DESCRIBE {name}").fetchall()}
        assert model.description, name
        if name == "features.training_set":  # its feature columns are customer_features'
            assert documented <= produced
        else:
            assert documented == produced, (name, produced ^ documented)


def test_singular_tests_find_no_failing_rows(random_warehouse):
    tests = sql_project().singular_tests
    assert tests
    for test in tests:
        failing = random_warehouse.execute(test.sql).fetchall()
        assert failing == [], (test.path.name, failing[:3])


def test_materializes_through_the_sql_loader(tmp_path, monkeypatch):
    """The same files, run by the project's loader as Dagster assets with their checks."""
    import dagster as dg

    from churn_assets.core.warehouse import Warehouse
    from churn_assets.sql_models.point_in_time_check import build_point_in_time_check

    monkeypatch.setenv("CHURN_HOME", str(tmp_path))
    database = tmp_path / "warehouse.duckdb"
    deliveries = random_deliveries(customers=60, months=2, seed=3)
    con = duckdb.connect(str(database))
    create_raw_tables(con)
    for month, frames in deliveries:
        for table, frame in frames.items():
            insert_raw(con, table, frame, month)
    con.close()

    project = load_sql_project(SQL_DIR, RAW_ASSET_KEYS)
    point_in_time = build_point_in_time_check(project)
    definitions = [*project.assets, *project.asset_checks, point_in_time]
    resources = {"warehouse": Warehouse(path=str(database)), "engine_policy": EnginePolicy()}
    # One run over both months: the loader's incremental asset backfills a partition range
    # in a single set-based step.
    run = materialize(
        definitions,
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": deliveries[0][0],
            "dagster/asset_partition_range_end": deliveries[-1][0],
        },
    )
    assert run.success
    evaluations = run.get_asset_check_evaluations()
    assert {dg.AssetCheckKey(e.asset_key, e.check_name) for e in evaluations} == {
        *project.check_keys, *point_in_time.check_keys
    }
    failed = [e.check_name for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    assert failed == []

    with duckdb.connect(str(database), read_only=True) as con:
        assert check_point_in_time(con, project, sample=None).passed
        assert con.execute("SELECT count(*) FROM features.customer_features").fetchall()[0][0] == sum(
            len(frames["subscriptions"]) for _, frames in deliveries
        )


TELCO_CSV = Path("/work/shared/datasets/telco_customer_churn.csv")


@pytest.mark.skipif(not TELCO_CSV.exists(), reason="the shared Telco sample is not on this machine")
def test_real_telco_month_becomes_a_labelled_training_set():
    from churn_assets.source.ingest import read_telco_csv, telco_to_delivery

    telco = read_telco_csv(TELCO_CSV)
    delivery = telco_to_delivery(telco, "2024-06", str(TELCO_CSV))
    con = warehouse_with([("2024-06-01", delivery)])
    build_models(con)
    training = frame_of(con, "features.training_set")
    assert len(training) == len(telco) == 7043
    assert training["churned"].sum() == (telco["Churn"] == "Yes").sum() == 1869
    by_customer = training.set_index("customer_id")
    source = telco.set_index("customerID")
    expected_tenure = source.loc[by_customer.index, "tenure"].astype(int).to_numpy()
    assert (by_customer["tenure_months"].to_numpy() == expected_tenure).all()
    # The eleven blank TotalCharges (tenure 0) are filled with 0 and flagged.
    assert by_customer["total_charges_imputed"].sum() == 11
    assert (by_customer.loc[by_customer["total_charges_imputed"], "total_charges"] == 0).all()
    assert check_point_in_time(con, SQL_DIR, sample=500).passed
