"""The package asks OpenMP (XGBoost, LightGBM, scikit-learn) to wait passively unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys


def _policy_seen(env: dict[str, str]) -> str:
    code = "import churn_assets, os; print(os.environ.get('OMP_WAIT_POLICY'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_openmp_threads_wait_passively_by_default():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_seen(env) == "PASSIVE"


def test_an_explicit_openmp_wait_policy_wins():
    assert _policy_seen({**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
