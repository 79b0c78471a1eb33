"""The same features and batch scoring on DuckDB and on Spark local[2], in one run.

For each size the embedded generator writes the monthly deliveries once
(``source/YYYY-MM/<table>.parquet``, as `churn demo` does); then each engine, in its own
process, does what the assets do:

- land: every delivery into raw.<table> (DuckDB: the raw layer's
  ``load_months_into_warehouse``, pandas' contract checks, one transaction; Spark:
  ``land_deliveries_on_spark``, the contract as Spark aggregates, dynamic partition overwrite);
- features: the seven SQL models of the feature layer (staging x4, customer_features for
  every month in one window, labels, training_set) - DuckDB through the assets' own write
  functions, Spark through ``spark_models.run_model`` (the same SQL through sqlglot);
- scoring: every month of features.customer_features scored by one XGBoost model of the demo
  champion's size (109 trees of depth 6, trained here, untimed, on a 20k sample of DuckDB's
  training set and saved in a registry folder): DuckDB's ``write_predictions``, Spark's
  ``write_predictions_on_spark`` (the folder broadcast, mapInArrow).

Wall, CPU and peak memory are of the engine's whole process tree (for Spark: the Python
driver, the JVM and its Python workers), sampled from /proc every 0.1 s; CPU seconds are
user + system of every process in the tree. The Spark session start is its own row. The row
counts of both engines are compared before the table is printed.

    uv run python benchmarks/bench_engines.py --quick        # 20k customers x 12 months
    uv run python benchmarks/bench_engines.py                # 100k and 1M customers x 24 months
    uv run python benchmarks/bench_engines.py --sizes 100000 --spark-memory 6g
    uv run python benchmarks/bench_engines.py --data-dir /tmp/engines   # keep (and reuse) the data

Needs the spark extra (`uv sync --extra spark`) and Java 17.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from bench_features import MODELS, SQL_DIR  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
BOOSTER = {"params": {"eta": 0.1, "max_depth": 6}, "rounds": 109, "sample": 20_000}


# --- the engines (each runs in its own process: `--worker duckdb|spark|train`) -------------------


def _phase(name: str) -> None:
    print(f"PHASE {name}", flush=True)


def _months(source: Path) -> list[str]:
    from churn_assets.source.deliveries import available_months

    return available_months(source)


def _project_models():
    from churn_assets.source.raw_assets import RAW_ASSET_KEYS
    from churn_assets.sql_models import load_sql_project

    models = {m.relation: m for m in load_sql_project(SQL_DIR, RAW_ASSET_KEYS, use_cache=False).models}
    return [models[name] for name in MODELS]


def _window(months: list[str]):
    import datetime as dt

    first, last = dt.date.fromisoformat(months[0]), dt.date.fromisoformat(months[-1])
    return first, dt.date(last.year + last.month // 12, last.month % 12 + 1, 1)


def worker_duckdb(folder: Path, stage: str) -> dict:
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.scoring.batch import write_predictions
    from churn_assets.sql_models.assets import _write_incremental
    from churn_assets.sql_models.checks import quote_identifier, quote_relation
    from churn_assets.source.raw_assets import load_months_into_warehouse

    months = _months(folder / "source")
    warehouse = Warehouse(path=str(folder / "duckdb" / "warehouse.duckdb"), temp_directory=str(folder / "duckdb" / "tmp"))
    counts = {}
    if stage == "build":
        shutil.rmtree(folder / "duckdb", ignore_errors=True)
        (folder / "duckdb").mkdir()
        _phase("land")
        with warehouse.write() as con:
            load_months_into_warehouse(con, folder / "source", months)
        _phase("features")
        start, end = _window(months)
        for model in _project_models():
            with warehouse.write() as con:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(model.schema)}")
                if model.config.is_incremental:
                    con.execute(f"DROP TABLE IF EXISTS {quote_relation(model.key)}")
                    _write_incremental(con, model, start, end)
                else:
                    con.execute(f"CREATE OR REPLACE TABLE {quote_relation(model.key)} AS\n{model.sql}")
        with warehouse.read() as con:
            for name in MODELS:
                counts[name] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    else:
        from churn_assets.training.registry import load_model_folder

        saved = json.loads((folder / "model.json").read_text())
        model = load_model_folder(Path(saved["path"]), saved["version"], saved["manifest_sha256"])
        _phase("scoring")
        with warehouse.write() as con:
            write_predictions(con, model, months)
            counts["ml.predictions"] = con.execute("SELECT count(*) FROM ml.predictions").fetchone()[0]
    _phase("done")
    return counts


def worker_spark(folder: Path, memory: str, partitions: int) -> dict:
    from churn_assets.core.spark_warehouse import SparkWarehouse
    from churn_assets.scoring.spark_scoring import write_predictions_on_spark
    from churn_assets.source.spark_landing import land_deliveries_on_spark
    from churn_assets.sql_models.spark_models import run_model

    months = _months(folder / "source")
    shutil.rmtree(folder / "spark", ignore_errors=True)
    warehouse = SparkWarehouse(master="local[2]", location=str(folder / "spark" / "warehouse"),
                               driver_memory=memory, shuffle_partitions=partitions,
                               conf={"spark.local.dir": str(folder / "spark" / "tmp")})
    _phase("session start")
    warehouse.session()
    _phase("land")
    land_deliveries_on_spark(warehouse, folder / "source", months)
    _phase("features")
    start, end = _window(months)
    for model in _project_models():
        if model.config.is_incremental:
            run_model(warehouse, model, start, end)
        else:
            run_model(warehouse, model)
    counts = {name: int(warehouse.sql(f"SELECT count(*) AS n FROM {name}").first()["n"]) for name in MODELS}
    saved = json.loads((folder / "model.json").read_text())
    _phase("scoring")
    write_predictions_on_spark(warehouse, Path(saved["path"]), saved["version"], months,
                               manifest_sha256=saved["manifest_sha256"])
    counts["ml.predictions"] = int(warehouse.sql("SELECT count(*) AS n FROM ml.predictions").first()["n"])
    _phase("done")
    warehouse.stop()
    return counts


def worker_train(folder: Path) -> dict:
    """The scored model (untimed): XGBoost of the demo champion's size on a 20k sample of
    DuckDB's training set, saved in a registry folder both engines load."""
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.training.candidates.tuned_xgboost import train_xgboost
    from churn_assets.training.columns import build_feature_spec, duckdb_types_of_frame, infer_roles
    from churn_assets.training.model import evaluate
    from churn_assets.training.registry import save_model
    from churn_assets.training.split import SplitSettings, split_training_set

    warehouse = Warehouse(path=str(folder / "duckdb" / "warehouse.duckdb"))
    with warehouse.read() as con:
        frame = con.execute(f"SELECT * FROM features.training_set USING SAMPLE {BOOSTER['sample']} ROWS "
                            "(reservoir, 7) ORDER BY customer_id, snapshot_month").df()
    roles = infer_roles(duckdb_types_of_frame(frame))
    split = split_training_set(frame, roles, SplitSettings(seed=7))
    model = train_xgboost(split, build_feature_spec(split.train, roles), BOOSTER["params"],
                          max_rounds=BOOSTER["rounds"], early_stopping_rounds=1000, nthread=2)
    shutil.rmtree(folder / "artifacts", ignore_errors=True)
    saved = save_model(model, folder / "artifacts", split=split, metrics=evaluate(model, split),
                       training_data_version="bench-engines", code_version="bench-engines")
    record = {"path": str(saved.path), "version": saved.version, "manifest_sha256": saved.manifest_sha256}
    (folder / "model.json").write_text(json.dumps(record))
    return record


# --- measuring a process tree ---------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    # After the command: state, ppid, ..., utime (14th field overall), stime, cutime, cstime.
    return int(fields[1]), sum(int(value) for value in fields[11:15]) / TICKS


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


class TreeSampler:
    """Peak resident memory and CPU seconds of a process and all its descendants."""

    def __init__(self, root: int, every: float = 0.1) -> None:
        self.root, self.every = root, every
        self.cpu_seen: dict[int, float] = {}
        self.peak = 0
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> dict[int, float]:
        """CPU seconds of each process in the tree now, from one scan of /proc."""
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _stat(int(entry))
                if stat is not None:
                    stats[int(entry)] = stat
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in stats.items():
            children.setdefault(parent, []).append(pid)
        tree, frontier = {self.root}, [self.root]
        while frontier:
            for child in children.get(frontier.pop(), []):
                if child not in tree:
                    tree.add(child)
                    frontier.append(child)
        return {pid: stats[pid][1] for pid in tree if pid in stats}

    def sample(self) -> None:
        cpu = self._tree()
        rss = sum(_rss(pid) for pid in cpu)
        with self._lock:
            for pid, seconds in cpu.items():
                self.cpu_seen[pid] = max(self.cpu_seen.get(pid, 0.0), seconds)
            self.peak = max(self.peak, rss)

    def _run(self) -> None:
        while not self._done.is_set():
            self.sample()
            time.sleep(self.every)

    def cpu(self) -> float:
        with self._lock:
            return sum(self.cpu_seen.values())

    def take_peak(self) -> int:
        """The peak since the last call (the phase that just ended), then start again."""
        self.sample()
        with self._lock:
            peak, self.peak = self.peak, 0
        return peak

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def run_engine(args: list[str]) -> tuple[dict[str, dict], dict]:
    """Run one engine's worker; returns its phases (wall, CPU, peak MiB, load) and its counts."""
    process = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    sampler = TreeSampler(process.pid)
    phases: dict[str, dict] = {}
    current, started, cpu_started = None, time.perf_counter(), 0.0
    result: dict = {}
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("PHASE "):
            now, cpu, peak = time.perf_counter(), sampler.cpu(), sampler.take_peak()
            if current is not None:
                phases[current] = {"wall": now - started, "cpu": cpu - cpu_started, "peak_mib": peak / 2**20,
                                   "load": os.getloadavg()[0]}
            current, started, cpu_started = line.split(" ", 1)[1].strip(), now, cpu
        elif line.startswith("RESULT "):
            result = json.loads(line.split(" ", 1)[1])
        else:
            sys.stderr.write(line)
    code = process.wait()
    sampler.stop()
    if code != 0:
        raise SystemExit(f"the {args[0]} worker failed (exit {code}); its output is above")
    return phases, result


def measure_size(folder: Path, customers: int, months: int, seed: int, spark_memory: str, partitions: int) -> list[dict]:
    from churn_assets.source.synthetic import GeneratorConfig, write_source

    source = folder / "source"
    if not source.exists():
        started = time.perf_counter()
        write_source(source, GeneratorConfig(customers=customers, months=months, seed=seed))
        print(f"  generated {customers:,} x {months} months in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    rows = []
    duck_build, duck_counts = run_engine(["--worker", "duckdb", "--folder", str(folder), "--stage", "build"])
    run_engine(["--worker", "train", "--folder", str(folder)])
    duck_score, score_counts = run_engine(["--worker", "duckdb", "--folder", str(folder), "--stage", "score"])
    spark_phases, spark_counts = run_engine(["--worker", "spark", "--folder", str(folder),
                                             "--spark-memory", spark_memory, "--partitions", str(partitions)])
    duck_counts.update(score_counts)
    differing = {name: (duck_counts[name], spark_counts.get(name)) for name in duck_counts
                 if duck_counts[name] != spark_counts.get(name)}
    if differing:
        raise SystemExit(f"the engines' row counts differ (DuckDB, Spark): {differing}")
    for engine, phases in (("duckdb", {**duck_build, **duck_score}), ("spark local[2]", spark_phases)):
        for phase, figures in phases.items():
            if phase != "done":
                rows.append({"customers": customers, "engine": engine, "phase": phase, **figures})
    rows.append({"customers": customers, "feature_rows": duck_counts["features.customer_features"],
                 "predictions": duck_counts["ml.predictions"]})
    return rows


def print_table(rows: list[dict]) -> None:
    print("\n| customers x months | engine | phase | wall s | CPU s | peak MiB | load (1 min) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "engine" in row:
            print(f"| {row['customers']:,} x {row['months']} | {row['engine']} | {row['phase']} | {row['wall']:.1f} | "
                  f"{row['cpu']:.1f} | {row['peak_mib']:,.0f} | {row['load']:.1f} |")
    print()
    for row in rows:
        if "feature_rows" in row:
            print(f"{row['customers']:,} customers: {row['feature_rows']:,} feature rows, {row['predictions']:,} "
                  "predictions, the same counts on both engines for all seven tables and ml.predictions")
    totals: dict[tuple, list[float]] = {}
    for row in rows:
        if "engine" in row and row["phase"] in ("land", "features", "scoring"):
            total = totals.setdefault((row["customers"], row["engine"]), [0.0, 0.0])
            total[0] += row["wall"]
            total[1] += row["cpu"]
    print("\nland + features + scoring (wall / CPU s): " + "; ".join(
        f"{customers:,} {engine} {wall:.0f} / {cpu:.0f}" for (customers, engine), (wall, cpu) in totals.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="customers, comma-separated")
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--quick", action="store_true", help="20k customers x 12 months")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--spark-memory", default="4g", help="Spark driver memory (local mode: the executors' too)")
    parser.add_argument("--partitions", type=int, default=8, help="spark.sql.shuffle.partitions")
    parser.add_argument("--data-dir", type=Path, help="keep the data here (reused when it exists)")
    parser.add_argument("--worker", choices=("duckdb", "spark", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=("build", "score"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.worker:
        if args.worker == "duckdb":
            result = worker_duckdb(args.folder, args.stage)
        elif args.worker == "spark":
            result = worker_spark(args.folder, args.spark_memory, args.partitions)
        else:
            result = worker_train(args.folder)
        print(f"RESULT {json.dumps(result)}", flush=True)
        return
    sizes = [20_000] if args.quick else [int(size) for size in args.sizes.split(",")]
    months = 12 if args.quick else args.months
    print(f"bench_engines: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, sizes {sizes} x {months} months",
          file=sys.stderr)
    rows = []
    for customers in sizes:
        base = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-engines-"))
        folder = base / f"{customers}x{months}"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            size_rows = measure_size(folder, customers, months, args.seed, args.spark_memory, args.partitions)
        finally:
            if args.data_dir is None:
                shutil.rmtree(base, ignore_errors=True)
        rows += [{**row, "months": months} for row in size_rows]
        print_table(rows)


if __name__ == "__main__":
    main()
