"""Cost of loading the code location versus importing dagster alone.

Every Dagster run and step process imports the code location, so it must stay close to
`import dagster`. Prints a Markdown table (median of N fresh interpreters each).

    uv run python benchmarks/bench_import.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGETS = {
    "import dagster": "import dagster",
    "import churn_assets.definitions": "import churn_assets.definitions",
}


def wall(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    wall("import dagster")  # warm the file cache
    medians = {name: statistics.median(wall(code) for _ in range(args.repeat)) for name, code in TARGETS.items()}
    base = medians["import dagster"]
    print("| import | median wall (s) | ratio to dagster |")
    print("|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| `{name}` | {seconds:.2f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
