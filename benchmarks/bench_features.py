"""Times the feature layer in DuckDB (the sql/ models) against the same features in pandas.

The layer = staging (4 tables) + features.customer_features for every month (one
set-based backfill) + features.labels + features.training_set. Both engines start from the
same raw data (the embedded synthetic generator) and run in their own subprocess, so the
peak memory (max RSS) of each is its own. The pandas result is compared with DuckDB's
before the table is printed, so the two really compute the same thing; the comparison
runs in DuckDB (a join on customer_id and snapshot_month), so it does not need both
results in memory as DataFrames.

pandas holds everything in memory: about 8.7 GB peak RSS at 100k customers x 24 months,
so about 85 GB at 1M, more than a 24 GB machine has. Every feature row depends only on
its own customer's raw rows, plus one global value (the latest observed month, which the
labels need), so the pandas engine can run customer by customer: the raw data is read
into Arrow tables (compact strings), split into N customer shards, and each shard is
converted to pandas, run through the same pandas_layer (given the global observed month)
and written as its own Parquet part before the next one starts. The result is the same
as one run over all data (events are deduplicated by event_id within a shard, which
assumes an event id never moves between customers; the generator numbers events
globally); the peak memory is about one shard's plus the raw data in Arrow. The default
(auto) is 1 shard (all at once) up to 200k customers, else one shard per 100k
customers; the engine column names the shard count. The sharded time includes the split
and the conversion of each shard to pandas, not the Parquet reads and writes.

    uv run python benchmarks/bench_features.py                 # 100k and 1M customers
    uv run python benchmarks/bench_features.py --sizes 100000 --months 24
    uv run python benchmarks/bench_features.py --sizes 1000000 --pandas-shards 20
    uv run python benchmarks/bench_features.py --sizes 1000000 --engines duckdb

An engine that fails (e.g. pandas killed for memory with too few shards on a small
machine) is reported as failed in the table instead of stopping the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = ROOT / "sql"
MODELS = [
    "staging.customers",
    "staging.subscriptions",
    "staging.events",
    "staging.cancellations",
    "features.customer_features",
    "features.labels",
    "features.training_set",
]
RAW = ("customers", "subscriptions", "events", "cancellations")


def generate(folder: Path, customers: int, months: int, seed: int) -> dict[str, int]:
    """Raw tables as one Parquet file each (with delivery_month), from the synthetic generator."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churn_assets.source.contract import RAW_TABLES
    from churn_assets.source.synthetic import GeneratorConfig, generate_months

    arrow_types = {"VARCHAR": pa.string(), "DATE": pa.timestamp("ns"), "TIMESTAMP": pa.timestamp("ns"),
                   "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_()}
    schemas = {
        name: pa.schema([(c.name, arrow_types[c.dtype]) for c in RAW_TABLES[name].columns]
                        + [("delivery_month", pa.timestamp("ns"))])
        for name in RAW
    }
    writers: dict[str, pq.ParquetWriter] = {}
    counts = dict.fromkeys(RAW, 0)
    config = GeneratorConfig(customers=customers, months=months, seed=seed)
    for month, frames in generate_months(config):
        for name in RAW:
            frame = frames[name][RAW_TABLES[name].column_names].copy()
            frame["delivery_month"] = pd.Timestamp(month)
            for column in RAW_TABLES[name].columns:
                if column.dtype in ("DATE", "TIMESTAMP"):
                    frame[column.name] = pd.to_datetime(frame[column.name])
            table = pa.Table.from_pandas(frame, schema=schemas[name], preserve_index=False)
            if name not in writers:
                writers[name] = pq.ParquetWriter(folder / f"{name}.parquet", schemas[name])
            writers[name].write_table(table)
            counts[name] += len(frame)
    for writer in writers.values():
        writer.close()
    return counts


def _duckdb_settings(folder: Path) -> dict:
    """The Warehouse resource's settings (its default memory_limit unless the benchmark was
    given one), spilling into the benchmark's folder."""
    from churn_assets.core.warehouse import default_memory_limit

    return {"memory_limit": os.environ.get("BENCH_DUCKDB_MEMORY_LIMIT") or default_memory_limit(),
            "temp_directory": str(folder / "duckdb_tmp")}


def load_raw(folder: Path, database: str):
    """A DuckDB file with the raw tables typed as the raw layer types them (not timed)."""
    import duckdb

    con = duckdb.connect(str(folder / database), config=_duckdb_settings(folder))
    create_raw_tables(con, folder)
    con.execute("CHECKPOINT")
    return con


def create_raw_tables(con, folder: Path) -> None:
    """raw.<table> from the generated ``<table>.parquet`` files, typed by the raw contract."""
    from churn_assets.source.contract import RAW_TABLES

    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    for name in RAW:
        casts = ", ".join(f"CAST({c.name} AS {c.dtype}) AS {c.name}" for c in RAW_TABLES[name].columns)
        con.execute(
            f"CREATE OR REPLACE TABLE raw.{name} AS SELECT {casts}, CAST(delivery_month AS DATE) AS delivery_month "
            f"FROM read_parquet('{folder / name}.parquet')"
        )


def run_duckdb(folder: Path, leakage_check: bool = True) -> dict:
    """The project's feature layer as its assets build it: the loader's models in order,
    tables as CREATE OR REPLACE TABLE, the incremental customer_features through the same
    write function the asset uses (one transaction over every month)."""
    from churn_assets.source.raw_assets import RAW_ASSET_KEYS
    from churn_assets.sql_models import load_sql_project
    from churn_assets.sql_models.assets import _write_incremental
    from churn_assets.sql_models.checks import quote_identifier, quote_relation

    con = load_raw(folder, "bench.duckdb")
    project = load_sql_project(SQL_DIR, RAW_ASSET_KEYS, use_cache=False)
    models = {model.relation: model for model in project.models}
    assert set(MODELS) <= set(models), f"the benchmark's models {MODELS} are not all in {sorted(models)}"
    started, cpu_started = time.perf_counter(), time.process_time()
    passes = {}
    for name in MODELS:
        model = models[name]
        pass_started, pass_cpu = time.perf_counter(), time.process_time()
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(model.schema)}")
        con.execute("BEGIN TRANSACTION")
        if model.config.is_incremental:
            first, last = con.execute(
                "SELECT min(snapshot_month), CAST(max(snapshot_month) + INTERVAL 1 MONTH AS DATE) FROM staging.subscriptions"
            ).fetchall()[0]
            con.execute(f"DROP TABLE IF EXISTS {quote_relation(model.key)}")
            _write_incremental(con, model, first, last)
        else:
            con.execute(f"CREATE OR REPLACE TABLE {quote_relation(model.key)} AS\n{model.sql}")
        con.execute("COMMIT")
        passes[name] = (time.perf_counter() - pass_started, time.process_time() - pass_cpu)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    rows = con.execute("SELECT count(*) FROM features.customer_features").fetchall()[0][0]
    training = con.execute("SELECT count(*) FROM features.training_set").fetchall()[0][0]
    con.execute(f"COPY features.customer_features TO '{folder / 'duckdb_features.parquet'}'")
    result = {"seconds": seconds, "cpu_seconds": cpu_seconds, "feature_rows": rows, "training_rows": training,
              "passes": passes, "memory_limit": _duckdb_settings(folder)["memory_limit"]}
    if leakage_check:
        # The blocking point-in-time check runs after every feature materialization: its
        # cost (default: 4 months x 500 rows) matters as much as the build's.
        from churn_assets.sql_models.leakage import check_point_in_time

        started = time.perf_counter()
        leakage = check_point_in_time(con, SQL_DIR)
        result["leakage_check_seconds"] = time.perf_counter() - started
        result["leakage_check"] = leakage.summary()
    con.close()
    return result


# The limit: the passes the layer cannot do without, as bare SQL on the same raw data in the
# same kind of DuckDB file, with none of the project's rules (no trimming, no window checks,
# no fan-out of events into the trailing windows, no CASE logic). Each writes what a later
# pass or the user reads, as the project does: staging tables, the features (as many columns
# as the project writes), labels and the training set. The project's figure is within 2x of
# this one when its SQL costs at most as much again as the bare passes.
LIMIT_PASSES = {
    "dedup": [
        # Finding the keys that repeat is the least a dedup can do: one group-by per table.
        "CREATE TEMP TABLE rep_subscriptions AS SELECT customer_id, snapshot_month FROM raw.subscriptions "
        "GROUP BY ALL HAVING count(*) > 1",
        "CREATE TEMP TABLE rep_events AS SELECT event_id FROM raw.events GROUP BY ALL HAVING count(*) > 1",
        "CREATE TEMP TABLE rep_customers AS SELECT customer_id FROM raw.customers GROUP BY ALL HAVING count(*) > 1",
    ],
    "group-by over events": [
        "CREATE TEMP TABLE event_months AS SELECT customer_id, CAST(date_trunc('month', event_time) AS DATE) AS month, "
        "count(*) FILTER (WHERE event_type = 'plan_change') AS plan_changes, "
        "sum(value) FILTER (WHERE event_type = 'usage') AS usage_gb, "
        "count(*) FILTER (WHERE event_type = 'support_call') AS support_calls, "
        "sum(value) FILTER (WHERE event_type = 'support_call') AS support_minutes, "
        "count(*) FILTER (WHERE event_type = 'late_payment') AS late_payments, "
        "sum(value) FILTER (WHERE event_type = 'late_payment') AS overdue_amount, "
        "count(*) FILTER (WHERE event_type = 'outage') AS outages, "
        "sum(value) FILTER (WHERE event_type = 'outage') AS outage_hours, "
        "max(event_time) FILTER (WHERE event_type = 'support_call') AS last_support_call_at, "
        "max(event_time) FILTER (WHERE event_type = 'late_payment') AS last_late_payment_at, "
        "max(event_time) FILTER (WHERE event_type = 'outage') AS last_outage_at "
        "FROM raw.events GROUP BY ALL",
    ],
    "lag windows": [
        "CREATE TEMP TABLE snapshot_lags AS SELECT customer_id, snapshot_month, "
        + ", ".join(f"lag({c}, {k}) OVER w AS {c}_{k}" for k in (1, 2, 3)
                    for c in ("snapshot_month", "monthly_charges", "contract", "internet_service"))
        + ", lag(total_charges, 1) OVER w AS total_charges_1 "
        "FROM raw.subscriptions WINDOW w AS (PARTITION BY customer_id ORDER BY snapshot_month)",
        "CREATE TEMP TABLE event_lags AS SELECT *, "
        + ", ".join(f"lag({c}, {k}) OVER w AS {c}_{k}" for k in (1, 2) for c in ("month", "plan_changes", "usage_gb"))
        + ", " + ", ".join(f"max({c}) OVER (w ROWS UNBOUNDED PRECEDING) AS {c}_running"
                           for c in ("last_support_call_at", "last_late_payment_at", "last_outage_at"))
        + " FROM event_months WINDOW w AS (PARTITION BY customer_id ORDER BY month)",
    ],
    # The joins build the outputs in memory; "write" then stores the seven tables the layer
    # stores (four staging tables, features, labels, training set) in the database file,
    # which on DuckDB is the dearest part of the layer (its column compression and blocks).
    "join": [
        "CREATE TEMP TABLE features AS SELECT s.*, c.* EXCLUDE (customer_id), l.* EXCLUDE (customer_id, snapshot_month), "
        "e.* EXCLUDE (customer_id, month) FROM raw.subscriptions AS s "
        "LEFT JOIN raw.customers AS c ON c.customer_id = s.customer_id "
        "LEFT JOIN snapshot_lags AS l ON l.customer_id = s.customer_id AND l.snapshot_month = s.snapshot_month "
        "LEFT JOIN event_lags AS e ON e.customer_id = s.customer_id AND e.month = s.snapshot_month",
        "CREATE TEMP TABLE labels AS SELECT s.customer_id, s.snapshot_month, c.customer_id IS NOT NULL AS churned "
        "FROM raw.subscriptions AS s LEFT JOIN (SELECT DISTINCT customer_id, "
        "CAST(date_trunc('month', cancel_date) - INTERVAL 1 MONTH AS DATE) AS snapshot_month FROM raw.cancellations) AS c "
        "ON c.customer_id = s.customer_id AND c.snapshot_month = s.snapshot_month",
        "CREATE TEMP TABLE training_set AS SELECT f.*, l.churned FROM features AS f "
        "JOIN labels AS l ON l.customer_id = f.customer_id AND l.snapshot_month = f.snapshot_month",
    ],
    "write": [
        "CREATE SCHEMA IF NOT EXISTS lim",
        *(f"CREATE TABLE lim.{name} AS SELECT * FROM raw.{name}" for name in RAW),
        *(f"CREATE TABLE lim.{name} AS SELECT * FROM temp.{name}" for name in ("features", "labels", "training_set")),
    ],
}


def run_limit(folder: Path) -> dict:
    """LIMIT_PASSES, each timed (wall and CPU) in the same DuckDB settings as the project."""
    con = load_raw(folder, "limit.duckdb")
    passes = {}
    started, cpu_started = time.perf_counter(), time.process_time()
    for name, statements in LIMIT_PASSES.items():
        pass_started, pass_cpu = time.perf_counter(), time.process_time()
        for statement in statements:
            con.execute(statement)
        passes[name] = (time.perf_counter() - pass_started, time.process_time() - pass_cpu)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    rows = con.execute("SELECT count(*) FROM lim.features").fetchone()[0]
    columns = len(con.execute("DESCRIBE lim.features").fetchall())
    con.close()
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "feature_rows": rows, "feature_columns": columns,
            "passes": passes}


def pandas_layer(raw: dict, observed=None, first_full_month=None) -> tuple:
    """The same staging, features, labels and training set as sql/, in pandas.

    ``observed`` (a monthly pd.Period) is the latest month with any raw row, which the
    labels need; ``first_full_month`` is the first month the training set keeps (after the
    warm-up months; pd.Timestamp.min keeps all). Both are computed from ``raw`` when not given. A
    customer shard must be given the values over all raw data (see ``observed_month`` and
    ``training_start``)."""
    import numpy as np
    import pandas as pd

    def latest(frame, keys):
        return frame.sort_values("delivery_month", kind="stable").drop_duplicates(keys, keep="last")

    def strip(frame, columns):
        for column in columns:
            frame[column] = frame[column].str.strip()
        return frame

    customers = latest(strip(raw["customers"].copy(), ["customer_id", "gender"]), ["customer_id"])
    subs = raw["subscriptions"].copy()
    text = [c for c in subs.columns if subs[c].dtype == object]
    subs = strip(subs, text)
    subs["snapshot_month"] = subs["snapshot_month"].dt.to_period("M").dt.to_timestamp()
    subs = latest(subs, ["customer_id", "snapshot_month"])
    events = strip(raw["events"].copy(), ["event_id", "customer_id", "event_type"])
    events["event_type"] = events["event_type"].str.lower()
    events = latest(events, ["event_id"])
    cancellations = latest(strip(raw["cancellations"].copy(), ["customer_id", "reason"]), ["customer_id", "cancel_date"])

    s = subs.drop(columns="delivery_month").copy()
    s["month_end"] = s["snapshot_month"] + pd.DateOffset(months=1)
    history = subs[["customer_id", "snapshot_month", "contract", "internet_service", "monthly_charges", "total_charges"]]
    for k in (1, 2, 3):
        shifted = history.assign(snapshot_month=history["snapshot_month"] + pd.DateOffset(months=k))
        s = s.merge(shifted.add_suffix(f"_p{k}").rename(columns={f"customer_id_p{k}": "customer_id", f"snapshot_month_p{k}": "snapshot_month"}),
                    on=["customer_id", "snapshot_month"], how="left")

    e = events[["customer_id", "event_type", "event_time", "value"]].copy()
    e["event_month"] = e["event_time"].dt.to_period("M").dt.to_timestamp()
    fanned = pd.concat([e.assign(snapshot_month=e["event_month"] + pd.DateOffset(months=k)) for k in range(4)])
    fanned = fanned.merge(s[["customer_id", "snapshot_month", "month_end"]], on=["customer_id", "snapshot_month"])
    fanned = fanned[(fanned["event_time"] >= fanned["month_end"] - pd.Timedelta(days=90)) & (fanned["event_time"] < fanned["month_end"])]
    in_30 = fanned["event_time"] >= fanned["month_end"] - pd.Timedelta(days=30)
    window_columns = {}
    for kind, name, amount in (("support_call", "support_calls", "support_minutes_90d"),
                               ("late_payment", "late_payments", "overdue_amount_90d"),
                               ("outage", "outages", "outage_hours_90d")):
        is_kind = fanned["event_type"] == kind
        window_columns[f"{name}_30d"] = (is_kind & in_30).astype("int64")
        window_columns[f"{name}_90d"] = is_kind.astype("int64")
        window_columns[amount] = fanned["value"].where(is_kind, 0.0)
    trailing = pd.DataFrame(window_columns).assign(customer_id=fanned["customer_id"].to_numpy(), snapshot_month=fanned["snapshot_month"].to_numpy())
    trailing = trailing.groupby(["customer_id", "snapshot_month"], sort=False).sum().reset_index()

    e["plan_change"] = (e["event_type"] == "plan_change").astype("int64")
    e["usage_gb"] = e["value"].where(e["event_type"] == "usage", 0.0).fillna(0.0)
    for kind in ("support_call", "late_payment", "outage"):
        e[f"last_{kind}"] = e["event_time"].where(e["event_type"] == kind)
    monthly = e.groupby(["customer_id", "event_month"], sort=False).agg(
        plan_changes=("plan_change", "sum"), usage_gb=("usage_gb", "sum"),
        last_support_call=("last_support_call", "max"), last_late_payment=("last_late_payment", "max"),
        last_outage=("last_outage", "max"),
    ).reset_index().rename(columns={"event_month": "snapshot_month"})
    timeline = pd.concat([monthly, s[["customer_id", "snapshot_month"]]]).groupby(["customer_id", "snapshot_month"]).agg(
        plan_changes=("plan_changes", "sum"), usage_gb=("usage_gb", "sum"),
        last_support_call=("last_support_call", "max"), last_late_payment=("last_late_payment", "max"),
        last_outage=("last_outage", "max"),
    ).reset_index()
    for column in ("last_support_call", "last_late_payment", "last_outage"):
        # As integers NaT is the smallest value, so a running max skips it.
        as_ns = timeline[column].astype("datetime64[ns]").astype("int64")
        running = as_ns.groupby(timeline["customer_id"]).cummax()
        timeline[column] = pd.to_datetime(running.where(running != np.iinfo("int64").min))
    keyed = timeline.set_index(["customer_id", "snapshot_month"])
    for k in (1, 2):
        shifted = timeline[["customer_id", "snapshot_month", "plan_changes", "usage_gb"]].assign(
            snapshot_month=timeline["snapshot_month"] + pd.DateOffset(months=k)).set_index(["customer_id", "snapshot_month"])
        keyed = keyed.join(shifted.add_suffix(f"_m{k}"), how="left")
    keyed = keyed.reset_index()

    f = s.merge(customers.drop(columns="delivery_month"), on="customer_id", how="left")
    f = f.merge(trailing, on=["customer_id", "snapshot_month"], how="left").merge(keyed, on=["customer_id", "snapshot_month"], how="left")
    out = pd.DataFrame({"customer_id": f["customer_id"], "snapshot_month": f["snapshot_month"]})
    for column in ("gender", "senior_citizen", "partner", "dependents"):
        out[column] = f[column]
    signup_month = f["signup_date"].dt.to_period("M")
    out["tenure_months"] = (f["snapshot_month"].dt.to_period("M").astype("int64") - signup_month.astype("int64")).astype("Int32")
    for column in ("contract", "phone_service", "multiple_lines", "internet_service", "online_security", "online_backup",
                   "device_protection", "tech_support", "streaming_tv", "streaming_movies", "paperless_billing", "payment_method"):
        out[column] = f[column]
    from churn_assets.source.contract import INTERNET_ADDON_COLUMNS

    out["service_count"] = (f["phone_service"].fillna(False).astype(int) + (f["multiple_lines"] == "Yes")
                            + (f["internet_service"] != "No") + sum((f[c] == "Yes") for c in INTERNET_ADDON_COLUMNS)).astype("int32")
    mc = f["monthly_charges"]
    out["monthly_charges"] = mc
    out["total_charges"] = f["total_charges"].fillna(f["total_charges_p1"] + mc).fillna(0.0)
    out["total_charges_imputed"] = f["total_charges"].isna()
    out["charge_change_1m"] = mc - f["monthly_charges_p1"]
    out["charge_ratio_1m"] = mc / f["monthly_charges_p1"].replace(0, np.nan)
    out["charge_change_3m"] = mc - f["monthly_charges_p3"]
    out["charge_ratio_3m"] = mc / f["monthly_charges_p3"].replace(0, np.nan)
    rise1 = (mc > f["monthly_charges_p1"])
    out["price_rise_1m"] = rise1
    out["price_rise_3m"] = rise1 | (f["monthly_charges_p1"] > f["monthly_charges_p2"]) | (f["monthly_charges_p2"] > f["monthly_charges_p3"])
    plan_1m = f["plan_changes"].fillna(0)
    plan_3m = plan_1m + f["plan_changes_m1"].fillna(0) + f["plan_changes_m2"].fillna(0)
    out["plan_changes_1m"] = plan_1m.astype("int32")
    out["plan_changes_3m"] = plan_3m.astype("int32")

    def changed(a, b):
        return (f[f"contract{a}"].notna() & f[f"contract{b}"].notna() & (f[f"contract{a}"] != f[f"contract{b}"])) | (
            f[f"internet_service{a}"].notna() & f[f"internet_service{b}"].notna() & (f[f"internet_service{a}"] != f[f"internet_service{b}"]))

    out["plan_change_1m"] = (plan_1m > 0) | changed("", "_p1")
    out["plan_change_3m"] = (plan_3m > 0) | changed("", "_p1") | changed("_p1", "_p2") | changed("_p2", "_p3")
    for column in ("support_calls_30d", "support_calls_90d", "support_minutes_90d", "late_payments_30d", "late_payments_90d",
                   "overdue_amount_90d", "outages_30d", "outages_90d", "outage_hours_90d"):
        values = f[column].fillna(0)
        out[column] = values.astype("int32") if "minutes" not in column and "amount" not in column and "hours" not in column else values.astype("float64")
    last_day = f["month_end"] - pd.Timedelta(days=1)
    for column, name in (("last_support_call", "support_call"), ("last_late_payment", "late_payment"), ("last_outage", "outage")):
        days = (last_day - f[column].dt.normalize()).dt.days
        out[f"days_since_{name}"] = days.fillna(365).clip(upper=365).astype("int32")
    out["usage_gb_month"] = f["usage_gb"].fillna(0.0)
    out["usage_gb_prev_month"] = f["usage_gb_m1"].fillna(0.0)
    out["usage_gb_change_1m"] = out["usage_gb_month"] - out["usage_gb_prev_month"]
    out["usage_gb_3m_avg"] = (out["usage_gb_month"] + out["usage_gb_prev_month"] + f["usage_gb_m2"].fillna(0.0)) / 3

    if observed is None:
        observed = max(raw["subscriptions"]["snapshot_month"].max().to_period("M"),
                       raw["events"]["event_time"].max().to_period("M") if len(raw["events"]) else pd.Period("1900-01", "M"),
                       raw["cancellations"]["cancel_date"].max().to_period("M") if len(raw["cancellations"]) else pd.Period("1900-01", "M"))
    churners = cancellations.assign(snapshot_month=cancellations["cancel_date"].dt.to_period("M").dt.to_timestamp() - pd.DateOffset(months=1))
    churners = churners[["customer_id", "snapshot_month"]].drop_duplicates().assign(churned=1)
    labels = subs[["customer_id", "snapshot_month"]].merge(churners, on=["customer_id", "snapshot_month"], how="left")
    labels["churned"] = labels["churned"].fillna(0).astype("Int32")
    labels.loc[labels["snapshot_month"].dt.to_period("M") + 1 > observed, "churned"] = pd.NA
    training = out.merge(labels.dropna(subset=["churned"]), on=["customer_id", "snapshot_month"])
    if first_full_month is None:
        first_full_month = training_start(subs["snapshot_month"].drop_duplicates(), observed)
    training = training[training["snapshot_month"] >= first_full_month]
    return out, labels, training


def training_start(snapshot_months, observed):
    """The first month features.training_set keeps: three months after the first snapshot
    month when a labelled month exists from then on, else None (keep every month)."""
    import pandas as pd

    months = pd.to_datetime(pd.Series(snapshot_months)).dt.to_period("M").dt.to_timestamp()
    first_full = months.min() + pd.DateOffset(months=3)
    labelled_later = ((months >= first_full) & (months.dt.to_period("M") + 1 <= observed)).any()
    return first_full if labelled_later else pd.Timestamp.min


def as_frames(raw: dict) -> dict:
    """The raw frames with the column types pandas_layer expects."""
    import pandas as pd

    for frame in raw.values():
        frame["delivery_month"] = pd.to_datetime(frame["delivery_month"])
    raw["subscriptions"]["snapshot_month"] = pd.to_datetime(raw["subscriptions"]["snapshot_month"])
    raw["customers"]["signup_date"] = pd.to_datetime(raw["customers"]["signup_date"])
    raw["cancellations"]["cancel_date"] = pd.to_datetime(raw["cancellations"]["cancel_date"])
    return raw


def observed_month(tables: dict):
    """pandas_layer's ``observed`` over all raw data (Arrow tables), the one value a
    customer shard cannot compute from its own rows. An empty table counts as 1900-01."""
    import pandas as pd
    import pyarrow.compute as pc

    months = []
    for name, column in (("subscriptions", "snapshot_month"), ("events", "event_time"), ("cancellations", "cancel_date")):
        latest = pc.max(tables[name][column]).as_py()
        months.append(pd.Timestamp(latest).to_period("M") if latest is not None else pd.Period("1900-01", "M"))
    return max(months)


def shard_numbers(tables: dict, shards: int) -> dict:
    """Shard number of every raw row (one Arrow int32 array per table): the position of
    its stripped customer_id among all distinct stripped ids, sorted, modulo ``shards``.
    Ids are stripped with str.strip as pandas_layer does, so every spelling of one customer
    lands in one shard; a row without customer_id goes to shard 0."""
    import pyarrow as pa
    import pyarrow.compute as pc

    spellings = pc.unique(pa.concat_arrays([pc.unique(table["customer_id"]) for table in tables.values()])).drop_null()
    stripped = [value.strip() for value in spellings.to_pylist()]
    position = {customer: i for i, customer in enumerate(sorted(set(stripped)))}
    shard_of_spelling = pa.array([position[customer] % shards for customer in stripped], pa.int32())
    return {name: pc.take(shard_of_spelling, pc.index_in(table["customer_id"], value_set=spellings)).fill_null(0)
            for name, table in tables.items()}


def run_pandas(folder: Path, shards: int = 1) -> dict:
    """pandas_layer over all raw data at once (shards=1), or customer by customer in
    ``shards`` parts; either way the features go to pandas_features/part-NNN.parquet."""
    import gc

    import pandas as pd

    out = folder / "pandas_features"
    out.mkdir(exist_ok=True)
    if shards == 1:
        raw = as_frames({name: pd.read_parquet(folder / f"{name}.parquet") for name in RAW})
        started, cpu_started = time.perf_counter(), time.process_time()
        features, labels, training = pandas_layer(raw)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        features.to_parquet(out / "part-000.parquet", index=False)
        return {"seconds": seconds, "cpu_seconds": cpu_seconds, "feature_rows": len(features),
                "training_rows": len(training), "shards": 1}

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    # The raw data stays in Arrow (compact strings); only one shard at a time is a set of
    # pandas frames. The timed part includes the split and the conversion to pandas, which
    # the unsharded run does not need, but not the Parquet reads and writes.
    tables = {name: pq.read_table(folder / f"{name}.parquet") for name in RAW}
    started, cpu_started = time.perf_counter(), time.process_time()
    observed = observed_month(tables)
    first_full_month = training_start(
        pc.unique(tables["subscriptions"]["snapshot_month"]).drop_null().to_pandas(), observed)
    numbers = shard_numbers(tables, shards)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    feature_rows = training_rows = 0
    for shard in range(shards):
        started, cpu_started = time.perf_counter(), time.process_time()
        raw = as_frames({name: table.filter(pc.equal(numbers[name], shard)).to_pandas() for name, table in tables.items()})
        features, labels, training = pandas_layer(raw, observed, first_full_month)
        seconds += time.perf_counter() - started
        cpu_seconds += time.process_time() - cpu_started
        features.to_parquet(out / f"part-{shard:03d}.parquet", index=False)
        feature_rows += len(features)
        training_rows += len(training)
        del raw, features, labels, training
        gc.collect()
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "feature_rows": feature_rows,
            "training_rows": training_rows, "shards": shards}


def child(engine: str, folder: Path, *options: str) -> dict | None:
    """Run one engine in a fresh process; its own wall time and peak RSS come back
    (None when it fails)."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--engine", engine, "--folder", str(folder), *options],
        stdout=subprocess.PIPE, cwd=ROOT,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        print(f"  {engine} failed: wait status {status}, peak RSS {usage.ru_maxrss / 1024:,.0f} MB", flush=True)
        return None
    result = json.loads(output.decode().strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


NUMERIC = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
           "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE"}


def compare(folder: Path) -> str:
    """DuckDB's features against pandas' (all parts), joined on (customer_id,
    snapshot_month) in DuckDB, so neither table has to fit in memory as a DataFrame.
    Each column is compared as the type DuckDB wrote, generalised: numbers as DOUBLE
    within rtol = atol = 1e-9 (NULL and NaN alike), dates and timestamps as TIMESTAMP (so a
    time of day in a pandas timestamp would show), everything else exactly as BOOLEAN or
    VARCHAR, NULL equal to NULL."""
    import duckdb

    con = duckdb.connect(config={"temp_directory": str(folder / "compare_tmp")})
    try:
        return _compare(con, folder)
    finally:
        con.close()


def _compare(con, folder: Path) -> str:
    con.execute(f"CREATE VIEW ours AS SELECT * FROM read_parquet('{folder / 'duckdb_features.parquet'}')")
    # union_by_name: a part may type a column differently (e.g. all NULL in that shard).
    con.execute(f"CREATE VIEW theirs AS SELECT * FROM read_parquet('{folder / 'pandas_features' / '*.parquet'}', union_by_name = true)")
    types = {row[0]: row[1] for row in con.execute("DESCRIBE ours").fetchall()}
    theirs = [row[0] for row in con.execute("DESCRIBE theirs").fetchall()]
    missing, extra = [c for c in types if c not in theirs], [c for c in theirs if c not in types]
    if missing or extra:
        return f"columns differ (missing in pandas: {missing}, only in pandas: {extra})"
    counts = [con.execute(f"SELECT count(*) FROM {side}").fetchone()[0] for side in ("ours", "theirs")]
    if counts[0] != counts[1]:
        return f"row counts differ ({counts[0]} vs {counts[1]})"

    def as_type(dtype: str) -> str:
        if dtype in NUMERIC or dtype.startswith("DECIMAL"):
            return "DOUBLE"
        if dtype == "DATE" or dtype.startswith("TIMESTAMP"):
            return "TIMESTAMP"
        return "BOOLEAN" if dtype == "BOOLEAN" else "VARCHAR"

    keys = ("customer_id", "snapshot_month")
    columns = [c for c in types if c not in keys]
    casts = ", ".join(f'CAST("{c}" AS {as_type(types[c])}) AS "{c}"' for c in types)

    def same(column: str) -> str:
        a, b = f'o."{column}"', f't."{column}"'
        if as_type(types[column]) == "DOUBLE":  # np.isclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True)
            return (f"((({a} IS NULL OR isnan({a})) AND ({b} IS NULL OR isnan({b}))) "
                    f"OR coalesce({a} = {b} OR abs({a} - {b}) <= 1e-9 + 1e-9 * abs({b}), false))")
        return f"({a} IS NOT DISTINCT FROM {b})"

    diffs = ", ".join(f'count(*) FILTER (WHERE o.present AND t.present AND NOT {same(c)})' for c in columns)
    row = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE o.present IS NULL OR t.present IS NULL), {diffs} "
        f"FROM (SELECT {casts}, true AS present FROM ours) AS o "
        f"FULL OUTER JOIN (SELECT {casts}, true AS present FROM theirs) AS t "
        f"ON o.customer_id = t.customer_id AND o.snapshot_month = t.snapshot_month"
    ).fetchone()
    joined, unmatched, per_column = row[0], row[1], row[2:]
    differing = []
    if unmatched or joined != counts[0]:
        # Equal counts, no unmatched row and as many joined rows as rows: a 1:1 match.
        differing.append(f"keys ({unmatched} rows unmatched, {joined} joined for {counts[0]})")
    differing += [f"{column} ({n} rows)" for column, n in zip(columns, per_column) if n]
    return "identical" if not differing else "differ: " + ", ".join(differing)


QUICK_SIZE = 20_000


def _ws(result: dict | None) -> str:
    return f"{result['seconds']:.1f} / {result['cpu_seconds']:.1f}" if result else "-"


def _ratio(a: dict | None, b: dict | None, key: str) -> str:
    return f"{a[key] / b[key]:.2f}x" if a and b and b[key] else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="customer counts, comma-separated")
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true",
                        help=f"one small size ({QUICK_SIZE:,} customers x 24 months), every engine; under two minutes")
    parser.add_argument("--engines", default="duckdb,limit,pandas", help="engines to run, comma-separated "
                        "(duckdb = the project's SQL, limit = the bare passes it needs, pandas)")
    parser.add_argument("--duckdb-memory-limit", help="DuckDB memory_limit, e.g. 8GB (it spills beyond it); "
                        "default: the Warehouse resource's default")
    parser.add_argument("--skip-leakage-check", action="store_true", help="do not time the point-in-time check")
    parser.add_argument("--pandas-shards", default="auto",
                        help="customer shards for pandas: an integer (1 = all data at once), or auto "
                             "(1 up to 200k customers, else one shard per 100k customers)")
    parser.add_argument("--engine", choices=["duckdb", "limit", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pandas_shards != "auto" and not (args.pandas_shards.isdigit() and int(args.pandas_shards) >= 1):
        parser.error(f"--pandas-shards must be auto or a positive integer, not {args.pandas_shards!r}")
    if args.engine:
        if args.engine == "duckdb":
            result = run_duckdb(args.folder, leakage_check=not args.skip_leakage_check)
        elif args.engine == "limit":
            result = run_limit(args.folder)
        else:
            result = run_pandas(args.folder, int(args.pandas_shards))
        print(json.dumps(result))
        return
    if args.duckdb_memory_limit:
        os.environ["BENCH_DUCKDB_MEMORY_LIMIT"] = args.duckdb_memory_limit
    sizes = [QUICK_SIZE] if args.quick else [int(s) for s in args.sizes.split(",")]
    engines = args.engines.split(",")
    unknown = set(engines) - {"duckdb", "limit", "pandas"}
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}")
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
            folder = Path(tmp)
            started = time.perf_counter()
            counts = generate(folder, size, args.months, args.seed)
            print(f"{size:,} customers x {args.months} months: raw rows {counts} "
                  f"(generated in {time.perf_counter() - started:.0f}s)", flush=True)
            results = {}
            for engine in ("duckdb", "limit", "pandas"):
                if engine not in engines:
                    results[engine] = None
                    continue
                options = []
                if engine == "pandas":
                    shards = (int(args.pandas_shards) if args.pandas_shards != "auto"
                              else 1 if size <= 200_000 else math.ceil(size / 100_000))
                    options = ["--pandas-shards", str(shards)]
                if engine == "duckdb" and args.skip_leakage_check:
                    options = ["--skip-leakage-check"]
                load = os.getloadavg()[0]
                results[engine] = child(engine, folder, *options)
                if results[engine] is not None:
                    results[engine]["load_before"] = load
                    results[engine]["load_after"] = os.getloadavg()[0]
                print(f"  {engine} {results[engine]}", flush=True)
            duck, pand = results["duckdb"], results["pandas"]
            verdict = compare(folder) if duck and pand else "not compared"
            if duck and pand and duck["training_rows"] != pand["training_rows"]:
                verdict += f"; training rows differ ({duck['training_rows']:,} vs {pand['training_rows']:,})"
            shards = pand["shards"] if pand else None
            rows.append((size, counts, results, verdict, shards))
    print()
    # CPU seconds are shown next to wall time because on a shared machine wall time also
    # measures the neighbours; DuckDB's CPU time sums all its threads. The load average
    # (1 minute, before and after each engine) says how shared the machine was.
    print("| customers x months | snapshot rows | project wall / CPU s | limit wall / CPU s | project / limit (wall, CPU) "
          "| pandas wall / CPU s | DuckDB vs pandas (wall, CPU) | peak RSS MB (project, limit, pandas) | load | results |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, counts, results, verdict, shards in rows:
        duck, lim, pand = results["duckdb"], results["limit"], results["pandas"]
        pandas_cell = _ws(pand) + (f" ({shards} shards)" if pand and shards != 1 else "")
        rss = ", ".join(f"{r['peak_rss_mb']:,.0f}" if r else "-" for r in (duck, lim, pand))
        loads = [f"{r['load_before']:.1f}-{r['load_after']:.1f}" for r in (duck, lim, pand) if r]
        print(f"| {size:,} x {args.months} | {counts['subscriptions']:,} | {_ws(duck)} | {_ws(lim)} | "
              f"{_ratio(duck, lim, 'seconds')}, {_ratio(duck, lim, 'cpu_seconds')} | {pandas_cell} | "
              f"{_ratio(pand, duck, 'seconds')}, {_ratio(pand, duck, 'cpu_seconds')} | {rss} | "
              f"{' / '.join(loads) or '-'} | {verdict} |")
    for size, _, results, _, _ in rows:
        for engine in ("duckdb", "limit"):
            result = results[engine]
            if result:
                passes = ", ".join(f"{name} {w:.2f}/{c:.2f}" for name, (w, c) in result["passes"].items())
                print(f"\n{size:,} {'project' if engine == 'duckdb' else 'limit'} passes (wall/CPU s): {passes}")
        duck = results["duckdb"]
        if duck:
            print(f"\n{size:,} customers: DuckDB memory_limit {duck['memory_limit']}")
            if "leakage_check_seconds" in duck:
                print(f"{size:,} customers: point-in-time check {duck['leakage_check_seconds']:.1f}s "
                      f"({duck['leakage_check']})")


if __name__ == "__main__":
    main()
