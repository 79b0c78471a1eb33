"""The monthly_scoring job for one month: launched (as a schedule, sensor or the UI does) beside
the same run in one Python process, from the same built CHURN_HOME in the same run.

- in process: one `python` process imports the code location and calls
  `execute_in_process` (the figure a launched run is measured against); "warm" is a second
  run of the same month in that process, without the imports;
- launched: `dagster job execute` in a new process, as the run launcher starts one for a
  schedule, a sensor or the UI, with the project's run executor (`project.run_executor`):
  in_process (the default) and multiprocess (a process per step).

Every figure is wall seconds from the process's start (imports and code location included),
the median (mean) of two runs of the latest delivered month.

    uv run python benchmarks/bench_jobs.py --churn-home ~/.churn   # a home built by churn demo
    uv run python benchmarks/bench_jobs.py --quick                 # builds a small demo first
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = "monthly_scoring"
REPEATS = 2

IN_PROCESS = """
import sys, time, json
started = time.perf_counter()
from churn_assets.cli.runner import get_instance
from churn_assets.definitions import defs
job = defs.resolve_job_def({job!r})
instance = get_instance()
result = job.execute_in_process(instance=instance, partition_key={month!r})
cold = time.perf_counter() - started
started = time.perf_counter()
job.execute_in_process(instance=instance, partition_key={month!r})
print(json.dumps({{"cold": cold, "warm": time.perf_counter() - started, "success": result.success}}))
"""


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} failed:\n{done.stderr[-2000:]}")
    return seconds


def latest_month(home: Path) -> str:
    import duckdb

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return str(con.execute("SELECT max(snapshot_month) FROM features.customer_features").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--churn-home", type=Path, help="a CHURN_HOME built by `churn demo`")
    parser.add_argument("--quick", action="store_true", help="build a small demo (1,500 x 8) in a temporary home")
    args = parser.parse_args()
    if not args.churn_home and not args.quick:
        parser.error("give --churn-home DIR (built by `churn demo`) or --quick")

    temporary = tempfile.TemporaryDirectory() if not args.churn_home else None
    home = (args.churn_home or Path(temporary.name)).expanduser().resolve()
    env = {**os.environ, "CHURN_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("CHURN_POLICIES", None)
    if temporary:
        print(f"building a small demo in {home} ...", file=sys.stderr)
        timed(["uv", "run", "churn", "demo", "--customers", "1500", "--months", "8"], env)
    month = latest_month(home)
    load = os.getloadavg()
    print(f"{JOB} for {month[:7]} from {home}; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start\n")

    in_process = [json.loads(subprocess.run(
        [sys.executable, "-c", IN_PROCESS.format(job=JOB, month=month)], env=env, cwd=ROOT,
        capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]) for _ in range(REPEATS)]
    reference = statistics.median(run["cold"] for run in in_process)
    rows = [("in process (one python process, imports included)", reference),
            ("in process, warm (a second run in that process)", statistics.median(r["warm"] for r in in_process))]
    launch = [sys.executable, "-m", "dagster", "job", "execute", "-m", "churn_assets.definitions", "-a", "defs", "-j", JOB,
              "--tags", json.dumps({"dagster/partition": month})]
    with tempfile.TemporaryDirectory() as folder:
        for executor in ("in_process", "multiprocess"):
            policies = Path(folder) / f"{executor}.yaml"
            policies.write_text(f"project:\n  run_executor: {executor}\n")
            runs = [timed(launch, {**env, "CHURN_POLICIES": str(policies)}) for _ in range(REPEATS)]
            default = " (the default)" if executor == "in_process" else ""
            rows.append((f"launched, run_executor: {executor}{default}", statistics.median(runs)))

    print("| run | wall s | vs in process |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / reference:.2f}x |")
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")
    if temporary:
        temporary.cleanup()


if __name__ == "__main__":
    main()
