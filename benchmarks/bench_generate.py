"""Time the synthetic generator and the raw layer: simulate, write Parquet deliveries, load them.

Each size runs in its own child process so peak RSS is that size's alone. Prints two
Markdown tables: generation (rows written, wall and CPU seconds, rows/s, peak RSS, size on
disk) and raw materialization (every month validated and loaded into raw.* in one
transaction, as the raw asset's single-run backfill does).

    uv run python benchmarks/bench_generate.py                   # 10k, 100k, 1M x 24 months
    uv run python benchmarks/bench_generate.py --sizes 10000,100000 --months 24
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(customers: int, months: int, seed: int) -> dict:
    """Generate into a temporary folder in this process; returns the measurements."""
    import resource
    import time

    # Import cost is not generation cost (and without a bytecode cache it is seconds).
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.source.raw_assets import load_months_into_warehouse
    from churn_assets.source.synthetic import GeneratorConfig, write_source

    config = GeneratorConfig(customers=customers, months=months, seed=seed)
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as folder:
        source = Path(folder) / "source"
        started, cpu_started = time.perf_counter(), time.process_time()
        keys = write_source(source, config)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        rows = {}
        for path in source.glob("*/*.parquet"):
            rows[path.stem] = rows.get(path.stem, 0) + pq.ParquetFile(path).metadata.num_rows
        disk = sum(p.stat().st_size for p in source.glob("*/*.parquet"))
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        warehouse = Warehouse(path=str(Path(folder) / "warehouse.duckdb"))
        started, cpu_started = time.perf_counter(), time.process_time()
        with warehouse.write() as con:
            load_months_into_warehouse(con, source, keys)
        load_wall, load_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        load_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "customers": customers,
        "months": len(keys),
        "rows": sum(rows.values()),
        "rows_by_table": rows,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mib": peak_kib / 1024,
        "disk_mib": disk / 2**20,
        "load_wall_s": load_wall,
        "load_cpu_s": load_cpu,
        # Peak of the whole process: at least the generation's peak.
        "load_peak_rss_mib": load_peak_kib / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the synthetic data generator.")
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated initial customer counts")
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.months, args.seed)))
        return

    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    results = []
    for customers in sizes:
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(customers), "--months", str(args.months),
             "--seed", str(args.seed)],
            capture_output=True, text=True,
        )
        if child.returncode != 0:
            sys.exit(f"generation of {customers:,} customers failed:\n{child.stderr}")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"# {customers:,} customers done in {r['wall_s']:.1f}s; rows by table: {r['rows_by_table']}",
              file=sys.stderr)

    # CPU seconds next to wall seconds: on a shared machine wall time includes waiting.
    print("| initial customers | months | rows written | wall s | CPU s | rows/s (wall) | peak RSS MiB | Parquet MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['customers']:,} | {r['months']} | {r['rows']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
            f"{r['rows'] / r['wall_s']:,.0f} | {r['peak_rss_mib']:,.0f} | {r['disk_mib']:,.1f} |"
        )
    print()
    print("| raw materialization: initial customers | rows loaded | wall s | CPU s | rows/s (wall) | peak RSS MiB (process) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['customers']:,} | {r['rows']:,} | {r['load_wall_s']:.1f} | {r['load_cpu_s']:.1f} | "
            f"{r['rows'] / r['load_wall_s']:,.0f} | {r['load_peak_rss_mib']:,.0f} |"
        )


if __name__ == "__main__":
    main()
