"""Times the point-in-time (leakage) check: sampled customers vs every month recomputed in full.

Builds the feature layer (staging, features.customer_features for every month, labels,
training_set) on synthetic data from the embedded generator (bench_features.generate),
through the loader's project like the code location does, then runs the check on
features.customer_features twice with its defaults (4 months, 500 sampled customers each):

- the project's way: the model declares `row_depends_on: {entity: customer_id}`, so only
  the sampled customers are recomputed (every source truncated at the cutoff and restricted
  to them), plus a separate count(*) of the recomputed month for the row counts;
- the full recompute (`full_recompute=True`), the way before the declaration: each checked
  month recomputed in full from the truncated raw tables, sampled rows compared.

Both must agree (the same verdict; no mismatches on the built-in models). The count is
timed on its own too, so its share of the sampled check shows. A third run checks a leaking
model (the fixture of the tests: support calls with no upper time bound, declared per
customer) the sampled way: it must fail.

    uv run python benchmarks/bench_leakage.py --quick             # 20k customers x 12 months
    uv run python benchmarks/bench_leakage.py                     # 100k and 1M x 24 months
    uv run python benchmarks/bench_leakage.py --sizes 100000 --memory-limit 8GB
    uv run python benchmarks/bench_leakage.py --data-dir /tmp/pit  # keep (and reuse) the builds

Every check is timed on a new connection to the built warehouse, as the asset check runs:
DuckDB's buffers start empty (the operating system's file cache may be warm).

CPU seconds are the process's (DuckDB's threads summed); on a shared machine they are the
steadier figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from bench_features import SQL_DIR, create_raw_tables, generate  # noqa: E402

MODEL = "features.customer_features"
LEAKY_SQL = (
    "SELECT s.customer_id, s.snapshot_month, count(e.event_id) AS support_calls_ever\n"
    "FROM staging.subscriptions AS s\n"
    "LEFT JOIN staging.events AS e\n"
    "  ON e.customer_id = s.customer_id AND e.event_type = 'support_call'\n"
    "WHERE s.snapshot_month >= $partition_start AND s.snapshot_month < $partition_end\n"
    "GROUP BY s.customer_id, s.snapshot_month\n"
)
LEAKY_YAML = """models:
  - name: leaky_features
    config:
      materialized: incremental
      partition_by: snapshot_month
      row_depends_on: {entity: customer_id}
    tests:
      - unique: {columns: [customer_id, snapshot_month]}
"""


@contextmanager
def timed(into: dict, name: str):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into[name] = (time.perf_counter() - wall, time.process_time() - cpu)


def leaky_project(folder: Path) -> Path:
    """A copy of sql/ with the leaking fixture model added."""
    sql_dir = folder / "sql_leaky"
    if not sql_dir.exists():
        shutil.copytree(SQL_DIR, sql_dir)
        (sql_dir / "features" / "leaky_features.sql").write_text(LEAKY_SQL)
        (sql_dir / "features" / "leaky_features.yml").write_text(LEAKY_YAML)
    return sql_dir


def build(con, folder: Path, sql_dir: Path, only: set[str] | None = None) -> None:
    """Raw tables from the generated Parquet, then the project's models in dependency
    order (incremental ones in one window over every month)."""
    from churn_assets.source.raw_assets import RAW_ASSET_KEYS
    from churn_assets.sql_models import load_sql_project

    if only is None:
        create_raw_tables(con, folder)
    for model in load_sql_project(sql_dir, RAW_ASSET_KEYS, use_cache=False).models:
        if only is not None and model.relation not in only:
            continue
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {model.schema}")
        if model.config.is_incremental:
            first, last = con.execute(
                "SELECT min(snapshot_month), max(snapshot_month) + INTERVAL 1 MONTH FROM staging.subscriptions"
            ).fetchall()[0]
            con.execute(f"DROP TABLE IF EXISTS {model.relation}")
            con.execute(f"CREATE TABLE {model.relation} AS {model.sql}",
                        {"partition_start": first, "partition_end": last.date()})
        else:
            con.execute(f"CREATE OR REPLACE TABLE {model.relation} AS {model.sql}")


def month_count_seconds(con, months: list[str]) -> tuple[float, float]:
    """The sampled check's row-count query alone: count(*) of each checked month over the
    model with its direct inputs truncated and the joins that cannot change it dropped."""
    import datetime as dt

    from churn_assets.sql_models.leakage import count_sql, point_in_time_sql

    sql = count_sql(point_in_time_sql(SQL_DIR, MODEL, inline_upstream_models=False)[0], "snapshot_month")
    wall, cpu = time.perf_counter(), time.process_time()
    for month in months:
        start = dt.date.fromisoformat(month)
        end = dt.date(start.year + start.month // 12, start.month % 12 + 1, 1)
        query = f"SELECT count(*) FROM ({sql}) WHERE snapshot_month >= $partition_start AND snapshot_month < $partition_end"
        params = {"partition_start": start, "partition_end": end, "pit_cutoff": end}
        con.execute(query, {k: v for k, v in params.items() if f"${k}" in query}).fetchall()
    return time.perf_counter() - wall, time.process_time() - cpu


def run_size(size: int, months: int, seed: int, memory_limit: str | None, data_dir: Path | None,
             threads: int | None) -> dict:
    import duckdb

    from churn_assets.sql_models.leakage import check_point_in_time

    keep = data_dir is not None
    folder = (data_dir / f"{size}x{months}_seed{seed}") if keep else Path(tempfile.mkdtemp(prefix="bench_leakage_"))
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "bench.duckdb"
    config = {"temp_directory": str(folder / "duckdb_tmp")}
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads:
        config["threads"] = threads
    result: dict = {"size": size, "months": months}
    try:
        built = database.exists() and (folder / "built").exists()
        if not built:
            started = time.perf_counter()
            counts = generate(folder, size, months, seed)
            print(f"{size:,} customers x {months} months: raw rows {counts} "
                  f"(generated in {time.perf_counter() - started:.0f}s)", flush=True)
            database.unlink(missing_ok=True)
        con = duckdb.connect(str(database), config=config)
        if not built:
            started = time.perf_counter()
            build(con, folder, SQL_DIR)
            con.execute("CHECKPOINT")
            (folder / "built").touch()
            print(f"  feature layer built in {time.perf_counter() - started:.0f}s", flush=True)
            # The check runs as its own step on its own connection: timed on a fresh one, not
            # on the build's, whose buffers still hold the tables (19 s against 31-42 s at 1M).
            con.close()
            con = duckdb.connect(str(database), config=config)
        result["feature_rows"] = con.execute(f"SELECT count(*) FROM {MODEL}").fetchall()[0][0]
        leaky_sql = leaky_project(folder)
        if not con.execute("SELECT count(*) FROM information_schema.tables "
                           "WHERE table_schema = 'features' AND table_name = 'leaky_features'").fetchall()[0][0]:
            build(con, folder, leaky_sql, only={"features.leaky_features"})
        timings: dict = {}
        with timed(timings, "sampled"):
            sampled = check_point_in_time(con, SQL_DIR, MODEL)
        print(f"  sampled: {timings['sampled'][0]:.1f}s  {sampled.summary()}", flush=True)
        with timed(timings, "full"):
            full = check_point_in_time(con, SQL_DIR, MODEL, full_recompute=True)
        print(f"  full:    {timings['full'][0]:.1f}s  {full.summary()}", flush=True)
        timings["count"] = month_count_seconds(con, sampled.months)
        print(f"  row counts alone: {timings['count'][0]:.1f}s", flush=True)
        with timed(timings, "leaky"):
            leaky = check_point_in_time(con, leaky_sql, "features.leaky_features")
        print(f"  leaky fixture, sampled: {timings['leaky'][0]:.1f}s  {leaky.summary()}", flush=True)
        con.close()
        agree = (sampled.passed == full.passed and sampled.mismatches == full.mismatches
                 and sampled.months == full.months)
        result.update(timings=timings, sampled=sampled, full=full, leaky=leaky, agree=agree)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="customer counts, comma-separated")
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="20k customers x 12 months (under two minutes)")
    parser.add_argument("--memory-limit", help="DuckDB memory_limit, e.g. 8GB (it spills beyond it)")
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    parser.add_argument("--data-dir", type=Path,
                        help="keep the generated data and built warehouse here and reuse them next time")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.months = "20000", 12
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, not {args.sizes!r}")
    if any(s < 1 for s in sizes) or args.months < 2:
        parser.error("--sizes must be positive and --months at least 2")
    rows = [run_size(size, args.months, args.seed, args.memory_limit, args.data_dir, args.threads)
            for size in sizes]
    load = os.getloadavg()
    print()
    print(f"point-in-time check on {MODEL}, defaults (4 months x 500 customers); "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs")
    print()
    print("| customers x months | feature rows | sampled (project) wall s / CPU s | row counts alone wall s "
          "| full recompute wall s / CPU s | full / sampled wall | agree | leaky fixture (sampled) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["timings"]
        leaky = "fails (caught)" if not r["leaky"].passed else "PASSES (missed!)"
        print(f"| {r['size']:,} x {r['months']} | {r['feature_rows']:,} | {t['sampled'][0]:.1f} / {t['sampled'][1]:.1f} "
              f"| {t['count'][0]:.1f} | {t['full'][0]:.1f} / {t['full'][1]:.1f} "
              f"| {t['full'][0] / t['sampled'][0]:.1f}x | {'yes' if r['agree'] else 'NO'} "
              f"({'pass' if r['sampled'].passed else 'fail'}) | {leaky} |")


if __name__ == "__main__":
    main()
