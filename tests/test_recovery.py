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
