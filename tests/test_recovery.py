"""After a kill: the next `churn` command marks the dead run failed and frees its pool slots."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun

from churn_assets.cli.runner import HOST_TAG, PROCESS_TAG, get_instance, recover_dead_runs


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _started_run(instance, pid: int) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                tags={PROCESS_TAG: str(pid), HOST_TAG: socket.gethostname()}))
    return run_id


def test_a_run_whose_process_died_is_failed_and_its_slot_freed(churn_home):
    instance = get_instance()
    storage = instance.event_log_storage
    storage.set_concurrency_slots("warehouse", 1)
    dead = _started_run(instance, _dead_pid())
    alive = _started_run(instance, os.getppid())  # a live process: left alone
    claim = storage.claim_concurrency_slot("warehouse", dead, "raw_deliveries")
    assert claim.is_claimed and storage.get_pool_limits()

    assert recover_dead_runs(instance) == [dead]
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
    assert storage.get_concurrency_info("warehouse").active_slot_count == 0
    assert recover_dead_runs(instance) == []  # nothing left to recover


def test_a_killed_tuning_trial_is_failed_and_the_study_completes(tmp_path):
    import optuna

    from churn_assets.training.candidates.tuned_xgboost import tune_xgboost
    from churn_assets.training.columns import build_feature_spec, duckdb_types_of_frame, infer_roles
    from churn_assets.training.sample_data import synthetic_training_frame
    from churn_assets.training.split import split_training_set
    from churn_assets.training.tuning import TuningSettings, storage_url_for, study_name_for

    frame = synthetic_training_frame(n_customers=200, n_months=4, seed=9)
    roles = infer_roles(duckdb_types_of_frame(frame))
    split = split_training_set(frame, roles)
    spec = build_feature_spec(split.train, roles)
    settings = TuningSettings(n_trials=3, timeout_s=None, max_rounds=20, early_stopping_rounds=5, nthread=1)
    storage = storage_url_for(tmp_path)
    # What a kill -9 during a trial leaves behind: the study with one trial RUNNING forever.
    study = optuna.create_study(study_name=study_name_for("data-v1", settings), storage=storage,
                                direction="maximize")
    study.ask()
    result = tune_xgboost(split, spec, settings, training_data_version="data-v1", storage_url=storage)
    states = [t["state"] for t in result.trials]
    assert states.count("FAIL") == 1 and "RUNNING" not in states
    assert states.count("COMPLETE") + states.count("PRUNED") == 3


BLOCKED_RUN = """
import dagster as dg
from churn_assets.cli.runner import materialize

@dg.asset(pool="warehouse")
def needs_the_warehouse():
    return 1

materialize(dg.Definitions(assets=[needs_the_warehouse]))
"""


def test_a_run_blocked_on_a_pool_slot_says_why_and_stops_on_sigterm(churn_home):
    import select
    import signal
    import time

    instance = get_instance()
    storage = instance.event_log_storage
    storage.set_concurrency_slots("warehouse", 1)
    holder = _started_run(instance, os.getpid())  # a live run holding the only slot
    assert storage.claim_concurrency_slot("warehouse", holder, "features__customer_features").is_claimed

    child = subprocess.Popen([sys.executable, "-c", BLOCKED_RUN], stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "DAGSTER_HOME": os.environ["DAGSTER_HOME"]})
    try:
        started = time.monotonic()
        first = ""
        while "waiting" not in first and select.select([child.stderr], [], [], 30)[0]:  # no line in 30 s: fail
            first = child.stderr.readline()
        assert f"waiting  needs_the_warehouse: the 'warehouse' pool's 1 slot(s) are held by run {holder[:8]} " \
               "(features__customer_features)" in first, first
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 130
        rest = child.stderr.read()
    finally:
        child.kill()
    assert "Interrupted while needs_the_warehouse waited for a slot in the 'warehouse' pool" in rest
    assert time.monotonic() - started < 60
    (blocked,) = [r for r in instance.get_runs() if r.run_id != holder]
    assert blocked.status == dg.DagsterRunStatus.CANCELED
    info = storage.get_concurrency_info("warehouse")
    assert info.active_run_ids == {holder} and {p.run_id for p in info.pending_steps} == {holder}


def test_a_cli_run_launches_the_named_job_and_prints_its_progress(churn_home):
    from churn_assets.automation.jobs import FULL_REFRESH_JOB, RUN_LOGGING
    from churn_assets.cli.runner import materialize

    @dg.asset
    def orders() -> None:
        pass

    defs = dg.Definitions(assets=[orders], jobs=[
        dg.define_asset_job(FULL_REFRESH_JOB, selection=dg.AssetSelection.all(), config=RUN_LOGGING)])
    lines: list[str] = []
    result = materialize(defs, progress=lines.append)
    assert result.success and any("done    orders" in line for line in lines)
    assert get_instance().get_run_by_id(result.run_id).job_name == FULL_REFRESH_JOB
