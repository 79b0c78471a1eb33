"""Drift computation time (batch scoring: bench_scoring.py, which uses this file's synthetic
feature rows and memory sampler).

    uv run python benchmarks/bench_monitoring.py [--drift-rows 100000]

Times drift for ``--drift-rows`` reference rows vs as many current rows over every
feature: PSI (numpy), Evidently's per-column tests, and Evidently's HTML report.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NUMERIC = [
    "tenure_months", "service_count", "monthly_charges", "total_charges", "charge_change_1m",
    "charge_ratio_1m", "charge_change_3m", "plan_changes_1m", "plan_changes_3m", "support_calls_30d",
    "support_calls_90d", "support_minutes_90d", "late_payments_30d", "late_payments_90d",
    "overdue_amount_90d", "outages_30d", "outages_90d", "outage_hours_90d", "days_since_support_call",
    "days_since_late_payment", "days_since_outage", "usage_gb_month", "usage_gb_prev_month",
    "usage_gb_change_1m", "usage_gb_3m_avg",
]
CATEGORICAL = [
    "gender", "senior_citizen", "partner", "dependents", "contract", "phone_service", "multiple_lines",
    "internet_service", "online_security", "online_backup", "device_protection", "tech_support",
    "streaming_tv", "streaming_movies", "paperless_billing", "payment_method", "price_rise_1m",
    "plan_change_1m",
]


def feature_sql(rows: int, month: str, shift: float = 0.0) -> str:
    """A month of synthetic feature rows, generated inside DuckDB (no Python row loop).
    ``shift`` moves charges and support calls, to give the drift step something to find."""
    r = lambda k: f"(hash(i, {k}) % 1000000) / 1000000.0"  # noqa: E731 - deterministic uniforms
    pick = lambda k, values: f"[{', '.join(repr(v) for v in values)}][1 + CAST(floor({r(k)} * {len(values)}) AS INTEGER)]"  # noqa: E731
    addon = ["Yes", "No", "No internet service"]
    return f"""
    SELECT
        'C' || lpad(CAST(i AS VARCHAR), 8, '0') AS customer_id,
        DATE '{month}' AS snapshot_month,
        {pick(1, ['Female', 'Male'])} AS gender,
        {r(2)} < 0.16 AS senior_citizen,
        {r(3)} < 0.5 AS partner,
        {r(4)} < 0.3 AS dependents,
        CAST(floor({r(5)} * 72) AS INTEGER) AS tenure_months,
        {pick(6, ['Month-to-month', 'One year', 'Two year'])} AS contract,
        {r(7)} < 0.9 AS phone_service,
        {pick(8, ['Yes', 'No', 'No phone service'])} AS multiple_lines,
        {pick(9, ['DSL', 'Fiber optic', 'No'])} AS internet_service,
        {pick(10, addon)} AS online_security, {pick(11, addon)} AS online_backup,
        {pick(12, addon)} AS device_protection, {pick(13, addon)} AS tech_support,
        {pick(14, addon)} AS streaming_tv, {pick(15, addon)} AS streaming_movies,
        {r(16)} < 0.6 AS paperless_billing,
        {pick(17, ['Electronic check', 'Mailed check', 'Bank transfer (automatic)', 'Credit card (automatic)'])} AS payment_method,
        CAST(floor({r(18)} * 9) AS INTEGER) AS service_count,
        round(20 + {r(19)} * 90 + {shift} * 10, 2) AS monthly_charges,
        round((20 + {r(19)} * 90) * floor({r(5)} * 72), 2) AS total_charges,
        round(({r(20)} - 0.5) * 10, 2) AS charge_change_1m,
        CASE WHEN {r(21)} < 0.05 THEN NULL ELSE 0.9 + {r(21)} * 0.2 END AS charge_ratio_1m,
        round(({r(22)} - 0.5) * 20, 2) AS charge_change_3m,
        {r(23)} < 0.1 AS price_rise_1m,
        CAST(floor({r(24)} * 2) AS INTEGER) AS plan_changes_1m,
        CAST(floor({r(25)} * 3) AS INTEGER) AS plan_changes_3m,
        {r(26)} < 0.1 AS plan_change_1m,
        CAST(floor({r(27)} * (2 + {shift} * 2)) AS INTEGER) AS support_calls_30d,
        CAST(floor({r(28)} * 5) AS INTEGER) AS support_calls_90d,
        round({r(29)} * 120, 1) AS support_minutes_90d,
        CAST(floor({r(30)} * 2) AS INTEGER) AS late_payments_30d,
        CAST(floor({r(31)} * 3) AS INTEGER) AS late_payments_90d,
        round({r(32)} * 200, 2) AS overdue_amount_90d,
        CAST(floor({r(33)} * 2) AS INTEGER) AS outages_30d,
        CAST(floor({r(34)} * 3) AS INTEGER) AS outages_90d,
        round({r(35)} * 24, 1) AS outage_hours_90d,
        CAST(floor({r(36)} * 366) AS INTEGER) AS days_since_support_call,
        CAST(floor({r(37)} * 366) AS INTEGER) AS days_since_late_payment,
        CAST(floor({r(38)} * 366) AS INTEGER) AS days_since_outage,
        round({r(39)} * 300, 1) AS usage_gb_month,
        round({r(40)} * 300, 1) AS usage_gb_prev_month,
        round(({r(39)} - {r(40)}) * 300, 1) AS usage_gb_change_1m,
        round({r(41)} * 300, 1) AS usage_gb_3m_avg,
        CAST({r(42)} < 1 / (1 + exp(-(-2.0 + 1.5 * (contract = 'Month-to-month')::INTEGER
            + 0.6 * (internet_service = 'Fiber optic')::INTEGER - 0.03 * tenure_months
            + 0.4 * support_calls_30d))) AS INTEGER) AS churned
    FROM range({rows}) AS t(i)
    """


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(result: dict):
    """Peak resident set size above the starting level while the block runs."""
    baseline = rss_bytes()
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    try:
        yield
    finally:
        result["seconds"] = time.perf_counter() - started
        done.set()
        thread.join()
        result["peak_mib"] = (max(peak[0], rss_bytes()) - baseline) / 2**20


def bench_drift(rows: int) -> list[dict]:
    import duckdb

    from churn_assets.monitoring.drift import (
        CATEGORICAL as CAT_KIND,
    )
    from churn_assets.monitoring.drift import (
        NUMERIC as NUM_KIND,
    )
    from churn_assets.monitoring.drift import (
        DriftSettings,
        evidently_column_drift,
        psi_by_feature,
        write_drift_report,
    )

    con = duckdb.connect(config={"threads": 2})
    reference = con.execute(feature_sql(rows, "2024-01-01")).df()
    current = con.execute(feature_sql(rows, "2024-06-01", shift=0.5).replace("hash(i,", "hash(i + 7919,")).df()
    con.close()
    started = time.perf_counter()
    import evidently  # noqa: F401 - timed on its own: every drift step pays it once

    import_seconds = time.perf_counter() - started
    results = [{"step": "import evidently", "rows": 0, "features": 0, "seconds": import_seconds}]

    started = time.perf_counter()
    psi = psi_by_feature(reference, current, NUMERIC, CATEGORICAL)
    results.append({"step": "PSI (numpy)", "rows": rows, "features": len(psi),
                    "seconds": time.perf_counter() - started})

    settings = DriftSettings()
    started = time.perf_counter()
    drifted = 0
    for name in NUMERIC:
        drifted += evidently_column_drift(reference[name], current[name], NUM_KIND, settings.numeric_method, None)["drifted"]
    for name in CATEGORICAL:
        drifted += evidently_column_drift(reference[name], current[name], CAT_KIND, settings.categorical_method, None)["drifted"]
    results.append({"step": f"Evidently tests ({drifted} drifted)", "rows": rows,
                    "features": len(NUMERIC) + len(CATEGORICAL), "seconds": time.perf_counter() - started})

    for report_rows in sorted({min(rows, 20_000), rows}):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            path = write_drift_report(reference.head(report_rows), current.head(report_rows), NUMERIC,
                                      CATEGORICAL, Path(folder) / "report.html", settings=settings)
            seconds = time.perf_counter() - started
            size = path.stat().st_size
        results.append({"step": f"Evidently HTML report ({size / 2**20:.1f} MiB)", "rows": report_rows,
                        "features": len(NUMERIC) + len(CATEGORICAL), "seconds": seconds})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drift-rows", type=int, default=100_000)
    parser.add_argument("--skip-drift", action="store_true")
    args = parser.parse_args()

    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    if not args.skip_drift:
        print(f"## Drift: {args.drift_rows:,} reference vs {args.drift_rows:,} current rows, "
              f"{len(NUMERIC)} numeric + {len(CATEGORICAL)} categorical features\n")
        print("| step | rows per side | features | seconds |")
        print("|---|---:|---:|---:|")
        for row in bench_drift(args.drift_rows):
            print(f"| {row['step']} | {row['rows']:,} | {row['features']} | {row['seconds']:.2f} |")


if __name__ == "__main__":
    main()
