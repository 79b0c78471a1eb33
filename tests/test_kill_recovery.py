"""kill -9 at three points of `churn run`, with the warehouse pool limited to one slot: the next
`churn run` recovers (the dead runs are failed, their slots freed) and converges to the result of
an uninterrupted run: the same model versions and the same champion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest
import yaml

from conftest import FAST_CANDIDATE_PARAMS, FAST_TUNING

pytestmark = pytest.mark.slow

# Lines `churn run` prints when a step is done: kill right after each.
KILL_POINTS = ["done    features__training_set", "done    ml__model_versions", "done    ml__predictions"]


def _home(tmp_path, name: str) -> dict:
    from churn_assets.core.paths import source_dir
    from churn_assets.source.synthetic import GeneratorConfig, write_source

    home = tmp_path / name
    home.mkdir()
    write_source(source_dir(home), GeneratorConfig(customers=800, months=6, seed=3, drift_month=None))
    policies = tmp_path / "policies.yaml"
    policies.write_text(yaml.safe_dump({
        "tuning": {**FAST_TUNING, "n_trials": 3},
        # Fewer candidates keep the five runs short; the tuned XGBoost (its study) is the one
        # whose resumption matters.
        "training": {"candidates": ["logistic_regression", "xgboost"], "candidate_params": FAST_CANDIDATE_PARAMS},
        "promotion": {"bootstrap_samples": 100},
    }))
    env = {**os.environ, "CHURN_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "CHURN_POLICIES": str(policies), "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("CHURN_PROJECT", None)
    # The pool limited to one slot, as the instance file suggests: a slot a killed step held
    # would otherwise keep every later run waiting.
    subprocess.run([sys.executable, "-c", "from churn_assets.cli.runner import get_instance; "
                    "get_instance().event_log_storage.set_concurrency_slots('warehouse', 1)"],
                   env=env, check=True)
    return env


def _churn_run(env, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "churn_assets.cli.main", "run"], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _kill_after(env, marker: str) -> None:
    process = subprocess.Popen([sys.executable, "-m", "churn_assets.cli.main", "run"], env=env,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    for line in process.stderr:
        if marker in line or time.monotonic() > deadline:
            break
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _outcome(env) -> tuple[list[str], str]:
    con = duckdb.connect(os.path.join(env["CHURN_HOME"], "warehouse.duckdb"), read_only=True)
    try:
        latest = [r[0] for r in con.execute(
            "SELECT version FROM ml.model_versions WHERE last_trained_at = "
            "(SELECT max(last_trained_at) FROM ml.model_versions) ORDER BY version").fetchall()]
        champion = con.execute("SELECT version FROM ml.model_versions WHERE is_champion").fetchone()[0]
        scored = con.execute("SELECT count(*) FROM ml.predictions").fetchone()[0]
    finally:
        con.close()
    assert scored > 0
    return latest, champion


def test_killed_runs_recover_and_converge_to_the_uninterrupted_result(tmp_path):
    calm = _home(tmp_path, "uninterrupted")
    done = _churn_run(calm)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = _outcome(calm)

    killed = _home(tmp_path, "killed")
    for marker in KILL_POINTS:
        _kill_after(killed, marker)
    finished = _churn_run(killed)
    assert finished.returncode == 0, finished.stderr[-2000:]
    # The dead runs were found, failed and their slots freed before the run started.
    assert finished.stderr.count("died with its process") >= 1
    assert _outcome(killed) == expected
