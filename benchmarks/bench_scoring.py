"""Batch scoring: the project's `write_predictions` beside the limit pipeline, same data, same run.

The limit is the least a scorer of these rows must do, in one pass with nothing else: one
query with the category codes and float casts in SQL -> one Arrow table -> one float32 numpy
matrix -> XGBoost's `inplace_predict` -> the calibration -> one INSERT that computes the risk
band, version and timestamp. The project does the same work in chunks of `batch_rows`, with
its checks (probabilities finite and in [0, 1], row counts), the DELETE of the months it
replaces and the statistics query.

Cases, each on a fresh DuckDB file of synthetic feature rows (the columns of
features.customer_features, generated in SQL) and one XGBoost model of the demo champion's
size (109 trees of depth 6 over 43 features), trained on a 20k sample:
- the demo shape: 24 months of 10,300 customers, every month requested at once;
- one month of 100k rows and one of 1M rows (memory must not grow with the rows).
Each figure is the median of three runs after a warm-up; CPU seconds are the process's
(DuckDB's and XGBoost's threads summed); peak memory is the resident set above the level
before the run, sampled every 10 ms.

    uv run python benchmarks/bench_scoring.py            # 100k and 1M rows, demo shape
    uv run python benchmarks/bench_scoring.py --quick    # 20k and 200k rows, demo shape
    uv run python benchmarks/bench_scoring.py --churn-home ~/.churn   # also that champion
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_monitoring import feature_sql, peak_memory  # noqa: E402

DEMO_MONTHS = 24
DEMO_CUSTOMERS = 10_300
REPEATS = 3


def months_sql(customers: int, months: int) -> str:
    parts = []
    for index in range(months):
        month = f"{2024 + index // 12}-{index % 12 + 1:02d}-01"
        parts.append(feature_sql(customers, month).replace("hash(i,", f"hash(i + {index * 7919},"))
    return "\nUNION ALL\n".join(parts)


def train_booster(con):
    """XGBoost of the demo champion's size on a 20k sample of the table."""
    from churn_assets.training.candidates.tuned_xgboost import train_xgboost
    from churn_assets.training.columns import RoleSettings, build_feature_spec, infer_roles
    from churn_assets.training.split import SplitSettings, split_training_set

    sample = con.execute("SELECT * FROM features.customer_features USING SAMPLE 20000 ROWS (reservoir, 7)").df()
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_schema = 'features' AND table_name = 'customer_features'").fetchall())
    roles = infer_roles(types, RoleSettings())
    split = split_training_set(sample, roles, SplitSettings(seed=7))
    spec = build_feature_spec(split.train, roles)
    model = train_xgboost(split, spec, {"eta": 0.1, "max_depth": 6}, max_rounds=109,
                          early_stopping_rounds=1000, nthread=2)
    model.version = "xgboost-0000000000000000"
    return model


def limit_pipeline(con, model, months: list[str]) -> int:
    """The one-pass scorer the project is measured against (see the module docstring)."""
    import numpy as np
    import pyarrow as pa

    from churn_assets.scoring.batch import RiskBands, _columns_of, matrix_select
    from churn_assets.training.model import apply_calibration

    expressions, dtype = matrix_select(model, _columns_of(con, "features.customer_features"))
    wanted = ", ".join(f"DATE '{m}'" for m in months)
    table = con.sql(f"SELECT customer_id, snapshot_month, {', '.join(expressions)} "
                        f"FROM features.customer_features WHERE snapshot_month IN ({wanted})").to_arrow_table()
    matrix = np.column_stack([table.column(i).to_numpy() for i in range(2, table.num_columns)])
    probabilities = apply_calibration(model.calibration, model.estimator.inplace_predict(matrix))
    scored = pa.table({"customer_id": table.column(0), "snapshot_month": table.column(1),
                       "churn_probability": probabilities})
    con.register("scored", scored)
    con.execute(f"INSERT INTO limit_predictions SELECT customer_id, snapshot_month, churn_probability, "
                f"{RiskBands().sql('churn_probability')}, $version, now()::TIMESTAMP FROM scored",
                {"version": model.version})
    con.unregister("scored")
    return table.num_rows


def measure(con, action) -> dict:
    """Median wall, CPU and peak memory of REPEATS runs of ``action`` (after one warm-up), each
    in a transaction rolled back afterwards so every run writes into the same tables."""
    def once():
        figures: dict = {}
        con.execute("BEGIN TRANSACTION")
        cpu = time.process_time()
        with peak_memory(figures):
            figures["rows"] = action()
        figures["cpu"] = time.process_time() - cpu
        con.execute("ROLLBACK")
        return figures

    once()
    runs = [once() for _ in range(REPEATS)]
    return {key: statistics.median(run[key] for run in runs) for key in ("seconds", "cpu", "peak_mib", "rows")}


def run_case(label: str, table_sql: str, model_for=None, churn_model=None, attach: Path | None = None) -> dict:
    import duckdb

    from churn_assets.scoring.batch import DEFAULT_BATCH_ROWS, ensure_predictions_table, write_predictions

    with tempfile.TemporaryDirectory() as folder:
        con = duckdb.connect(str(Path(folder) / "bench.duckdb"), config={"threads": 2})
        con.execute("CREATE SCHEMA features")
        if attach:
            con.execute(f"ATTACH '{attach}' AS source (READ_ONLY)")
        con.execute(f"CREATE TABLE features.customer_features AS {table_sql}")
        if attach:
            con.execute("DETACH source")
        ensure_predictions_table(con)
        con.execute("CREATE TABLE limit_predictions AS SELECT * FROM ml.predictions LIMIT 0")
        months = [m for (m,) in con.execute("SELECT DISTINCT strftime(snapshot_month, '%Y-%m-%d') "
                                            "FROM features.customer_features ORDER BY 1").fetchall()]
        model = churn_model or model_for(con)
        stats = {}

        def project():
            stats["last"] = write_predictions(con, model, months, batch_rows=DEFAULT_BATCH_ROWS)
            return stats["last"].rows

        result = {"case": label, "project": measure(con, project)}
        result["path"], result["chunks"] = stats["last"].path, stats["last"].batches
        result["limit"] = measure(con, lambda: limit_pipeline(con, model, months)) if stats["last"].path == "matrix" else None
        con.close()
    return result


def champion_case(home: Path) -> dict:
    """The champion of a built CHURN_HOME on a copy of its own features (every month)."""
    import duckdb

    from churn_assets.training.registry import load_champion

    source = home / "warehouse.duckdb"
    with duckdb.connect(str(source), read_only=True) as con:
        model = load_champion(home / "artifacts", con)
    return run_case(f"champion of {home} ({model.version}), every month",
                    "SELECT * FROM source.features.customer_features", churn_model=model, attach=source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="rows of the one-month cases, comma-separated")
    parser.add_argument("--quick", action="store_true", help="one-month cases of 20k and 200k rows")
    parser.add_argument("--churn-home", type=Path, help="also score this built home's champion on its features")
    args = parser.parse_args()
    sizes = [20_000, 200_000] if args.quick else [int(s) for s in args.sizes.split(",")]

    # XGBoost's OpenMP threads spin while waiting by default; on a shared 2-core machine a
    # neighbour then slows them down several times.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    load = os.getloadavg()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} at the start\n")
    models = {}

    def shared_model(con):
        if "booster" not in models:
            models["booster"] = train_booster(con)
        return models["booster"]

    cases = [run_case(f"demo shape: {DEMO_MONTHS} months x {DEMO_CUSTOMERS:,}",
                      months_sql(DEMO_CUSTOMERS, DEMO_MONTHS), shared_model)]
    cases += [run_case(f"one month of {rows:,} rows", feature_sql(rows, "2024-06-01"), shared_model)
              for rows in sizes]
    if args.churn_home:
        cases.append(champion_case(args.churn_home.expanduser()))

    print("| case | rows | path, chunks | project wall s / CPU s / peak MiB | "
          "limit wall s / CPU s / peak MiB | ratio wall / CPU |")
    print("|---|---:|---|---|---|---|")
    for case in cases:
        p, limit = case["project"], case["limit"]
        project = f"{p['seconds']:.2f} / {p['cpu']:.2f} / {p['peak_mib']:.0f}"
        if limit:
            bound = f"{limit['seconds']:.2f} / {limit['cpu']:.2f} / {limit['peak_mib']:.0f}"
            ratio = f"{p['seconds'] / limit['seconds']:.2f}x / {p['cpu'] / limit['cpu']:.2f}x"
        else:
            bound, ratio = "n/a (not a tree booster: scored on the frame path)", ""
        print(f"| {case['case']} | {int(p['rows']):,} | {case['path']}, {case['chunks']} | {project} | {bound} | {ratio} |")
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")


if __name__ == "__main__":
    main()
