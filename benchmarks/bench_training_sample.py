"""Does the AUC hold when engine: spark trains on a sample of the training set?

The Spark engine pulls ``features.training_set`` to the driver whole up to
``training_sample_rows`` rows, and above that as a seeded sample stratified by the label, each
class keeping at least ``training_sample_min_class_rows`` (training/spark_sample.py). This
script builds the feature layer of one synthetic base on DuckDB, copies the training set to a
Spark warehouse (local[2]; the two engines' training sets are equal, tests/test_spark_engine.py),
and for each sample size pulls the sample with the engine's own ``pull_training_sample``,
trains the two candidates the parity tests use (the balanced logistic regression and XGBoost
of the demo champion's size: 109 trees of depth 6 at most, early stopping on the sample's
validation months) and scores them on **the whole training set's test months**, so every row
of the table is judged on the same customers.

Columns: the sample's rows and churners, seconds to pull it and to train XGBoost, test ROC-AUC
of both models, and XGBoost's mean predicted probability over the test months' churn rate
(calibration in the large), with the sample's odds mapped back to the training set's
(``model.correct_for_sampling``, as engine: spark's training does) and, in brackets, without:
the class floor enriches the sample with churners, and the calibration is fitted on the
sample's validation rows. Each size keeps the default rule's
class floor in proportion (50k of 2M rows: 2.5% of the sample per class); the last row drops
the floor (a purely proportional sample of the smallest size) to show what it buys.

    uv run python benchmarks/bench_training_sample.py                 # 50k customers x 24 months
    uv run python benchmarks/bench_training_sample.py --customers 10000 --months 12 --sizes 50000,10000

Needs the spark extra (`uv sync --extra spark`) and Java 17.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from bench_engines import BOOSTER, worker_duckdb  # noqa: E402

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # XGBoost beside Spark's JVM on 2 cores


def _load() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure(folder: Path, sizes: list[int], seed: int) -> list[dict]:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from churn_assets.core.engine import DEFAULT_MIN_CLASS_ROWS, DEFAULT_SAMPLE_ROWS
    from churn_assets.core.spark_warehouse import SparkWarehouse
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.training.candidates.logistic_regression import train_logistic_regression
    from churn_assets.training.candidates.tuned_xgboost import train_xgboost
    from churn_assets.training.columns import build_feature_spec, infer_roles
    from churn_assets.training.model import correct_for_sampling
    from churn_assets.training.spark_sample import pull_training_sample
    from churn_assets.training.split import SplitSettings, split_training_set
    from churn_assets.training.train import read_training_set

    with Warehouse(path=str(folder / "duckdb" / "warehouse.duckdb")).read() as con:
        whole_frame, column_types = read_training_set(con)
        arrow = con.sql("SELECT * FROM features.training_set").to_arrow_table()
    roles = infer_roles(column_types)
    keys, label = list(roles.key_columns), roles.label_column
    settings = SplitSettings(seed=seed)
    test = split_training_set(whole_frame, roles, settings).test
    test_months = sorted(set(test[roles.time_column]))
    churn_rate = float(test[label].mean())

    spark = SparkWarehouse(master="local[2]", location=str(folder / "spark"), driver_memory="4g",
                           shuffle_partitions=8, conf={"spark.local.dir": str(folder / "spark-tmp")})
    started = time.perf_counter()
    spark.write_table("features.training_set", arrow)
    print(f"  training set ({len(whole_frame):,} rows) copied to Spark in {time.perf_counter() - started:.0f}s",
          file=sys.stderr)

    # The default rule scaled to each size: the class floor keeps its ratio to the sample size
    # (50k of 2M), or a floor above every class would keep the whole set.
    plans = [(None, 0)] + [(size, round(size * DEFAULT_MIN_CLASS_ROWS / DEFAULT_SAMPLE_ROWS)) for size in sizes]
    plans.append((min(sizes), 0))
    rows = []
    for max_rows, min_class_rows in plans:
        started = time.perf_counter()
        sample = pull_training_sample(spark, keys, label, max_rows=max_rows or len(whole_frame),
                                      min_class_rows=min_class_rows, seed=seed)
        pulled = time.perf_counter() - started
        split = split_training_set(sample.frame, roles, settings)
        if sorted(set(split.test[roles.time_column])) != test_months:
            raise SystemExit("the sample's test months differ from the whole set's")
        spec = build_feature_spec(split.train, roles)
        started = time.perf_counter()
        booster = train_xgboost(split, spec, BOOSTER["params"], max_rounds=BOOSTER["rounds"],
                                early_stopping_rounds=20, nthread=2)
        boosted = time.perf_counter() - started
        baseline = train_logistic_regression(split, spec)
        raw_p = np.asarray(booster.predict_proba(test))
        # What train_candidates does with a sample's models on engine: spark.
        booster = correct_for_sampling(booster, sample.odds_factor)
        booster_p = np.asarray(booster.predict_proba(test))
        rows.append({
            "sample": "whole" if max_rows is None else f"{max_rows:,}, floor {min_class_rows:,}",
            "rows": len(sample.frame), "churners": int(sample.frame[label].sum()),
            "pull_s": pulled, "xgb_train_s": boosted,
            "lr_auc": roc_auc_score(test[label], baseline.predict_proba(test)),
            "xgb_auc": roc_auc_score(test[label], booster_p),
            "uncorrected": float(raw_p.mean()) / churn_rate,
            "calibration": float(booster_p.mean()) / churn_rate,
            "load": _load(),
        })
        print(f"  {rows[-1]['sample']}: {rows[-1]['rows']:,} rows, XGBoost AUC {rows[-1]['xgb_auc']:.4f}", file=sys.stderr)
    spark.stop()
    for row in rows:
        row["xgb_delta"] = row["xgb_auc"] - rows[0]["xgb_auc"]
        row["lr_delta"] = row["lr_auc"] - rows[0]["lr_auc"]
    print(f"\ntest months {', '.join(str(m)[:7] for m in test_months)}: {len(test):,} rows, churn rate {churn_rate:.4f}")
    return rows


def print_table(rows: list[dict], customers: int, months: int) -> None:
    print(f"\n{customers:,} customers x {months} months; every model scored on the whole set's test months\n")
    print("| sample (max rows) | rows | churners | pull s | XGBoost train s | LR test AUC (vs whole) "
          "| XGBoost test AUC (vs whole) | XGBoost mean p / churn rate (uncorrected) | load 1/5/15 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sample']} | {r['rows']:,} | {r['churners']:,} | {r['pull_s']:.1f} | {r['xgb_train_s']:.1f} "
              f"| {r['lr_auc']:.4f} ({r['lr_delta']:+.4f}) | {r['xgb_auc']:.4f} ({r['xgb_delta']:+.4f}) "
              f"| {r['calibration']:.2f} ({r['uncorrected']:.2f}) | {r['load']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--sizes", default="250000,100000,25000", help="sample sizes (max rows), comma-separated")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", help="keep (and reuse) the data here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    from churn_assets.source.synthetic import GeneratorConfig, write_source

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.data_dir or scratch)
        if not (folder / "source").exists():
            write_source(folder / "source", GeneratorConfig(customers=args.customers, months=args.months, seed=args.seed))
        if not (folder / "duckdb" / "warehouse.duckdb").exists():
            worker_duckdb(folder, "build")
        rows = measure(folder, sizes, args.seed)
    print_table(rows, args.customers, args.months)


if __name__ == "__main__":
    main()
