"""The landing folder and its sensor: files become deliveries; bad input never half-writes a month."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from churn_assets.automation.jobs import data_refresh_job, landing_sensor
from churn_assets.core.warehouse import Warehouse
from churn_assets.core.paths import landing_dir, source_dir
from churn_assets.source.deliveries import available_months
from churn_assets.source.landing import pending_items, process_item

TELCO = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "telco_customer_churn.csv"
needs_telco = pytest.mark.skipif(not TELCO.exists(), reason="shared Telco sample not present")


def _drop(name: str, text: str | None = None, source: Path | None = None) -> Path:
    landing = landing_dir()
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / name
    if source is not None:
        shutil.copy(source, target)
    else:
        target.write_text(text or "")
    return target


def _telco_sample(rows: int) -> str:
    lines = TELCO.read_text().splitlines()
    return "\n".join(lines[: rows + 1]) + "\n"


def _sensor_context(instance):
    return dg.build_sensor_context(instance=instance, resources={"warehouse": Warehouse()})


def _requests(result) -> list[dg.RunRequest]:
    return [result] if isinstance(result, dg.RunRequest) else list(result)


@needs_telco
def test_a_telco_file_becomes_a_delivery_and_a_run_request(churn_home):
    _drop("telco_2024-05.csv", _telco_sample(200))
    with dg.instance_for_test() as instance:
        result = landing_sensor(_sensor_context(instance))
    requests = _requests(result)
    assert [r.partition_key for r in requests] == ["2024-05-01"]
    assert requests[0].job_name == data_refresh_job.name  # no champion yet: data layers only
    assert available_months(source_dir()) == ["2024-05-01"]
    assert pending_items(landing_dir()) == []
    assert len(list((landing_dir() / "processed").iterdir())) == 1


@needs_telco
def test_the_same_delivery_twice_is_a_no_op(churn_home):
    _drop("telco_2024-05.csv", _telco_sample(50))
    assert process_item(landing_dir() / "telco_2024-05.csv", source_dir()).status == "delivered"
    before = sorted(p.stat().st_mtime_ns for p in (source_dir() / "2024-05").iterdir())
    _drop("again_2024-05.csv", _telco_sample(50))
    outcome = process_item(landing_dir() / "again_2024-05.csv", source_dir())
    assert outcome.status == "duplicate"
    assert sorted(p.stat().st_mtime_ns for p in (source_dir() / "2024-05").iterdir()) == before


@needs_telco
def test_different_content_for_a_delivered_month_is_rejected(churn_home):
    _drop("telco_2024-05.csv", _telco_sample(50))
    process_item(landing_dir() / "telco_2024-05.csv", source_dir())
    _drop("fixed_2024-05.csv", _telco_sample(60))
    outcome = process_item(landing_dir() / "fixed_2024-05.csv", source_dir())
    assert outcome.status == "rejected"
    assert "already delivered" in outcome.detail and "--replace" in outcome.detail
    assert len(__import__("pandas").read_parquet(source_dir() / "2024-05" / "subscriptions.parquet")) == 50


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("telco_2024-05.csv", "customerID,gender\nA,Female\n", "missing"),
        ("telco.csv", "customerID\n", "carries no month"),
        ("telco_2024-13.csv", "customerID\n", "month"),
        ("telco_2099-01.csv", "customerID\n", "has not begun"),
        ("telco_2024-05.csv", "", "empty"),
        ("notes.txt", "hello", "not a landing item"),
        ("telco_2024-05.xlsx", "PK", "not a landing item"),
    ],
)
def test_bad_files_are_rejected_with_the_reason_beside_them(churn_home, name, content, expected):
    _drop(name, content)
    with dg.instance_for_test() as instance:
        result = landing_sensor(_sensor_context(instance))
    assert isinstance(result, dg.SkipReason)
    assert available_months(source_dir()) == []
    assert not any(p.name.startswith(".") for p in source_dir().glob("*")) if source_dir().exists() else True
    rejected = landing_dir() / "rejected"
    errors = list(rejected.glob("*.error.txt"))
    assert len(errors) == 1
    assert expected in errors[0].read_text().lower()


def test_a_contract_folder_with_a_missing_table_is_rejected(churn_home, make_delivery):
    folder = landing_dir() / "2024-02"
    folder.mkdir(parents=True)
    for name, frame in make_delivery("2024-02-01").items():
        if name != "events":
            frame.to_parquet(folder / f"{name}.parquet")
    outcome = process_item(folder, source_dir())
    assert outcome.status == "rejected" and "events.parquet" in outcome.detail
    assert available_months(source_dir()) == []


def test_a_garbage_parquet_file_is_rejected_naming_it(churn_home, make_delivery):
    folder = landing_dir() / "2024-02"
    folder.mkdir(parents=True)
    for name, frame in make_delivery("2024-02-01").items():
        frame.to_parquet(folder / f"{name}.parquet")
    (folder / "events.parquet").write_bytes(b"not parquet at all")
    outcome = process_item(folder, source_dir())
    assert outcome.status == "rejected" and "events.parquet: not a readable Parquet file" in outcome.detail


def test_a_gzipped_telco_file_is_a_landing_item(churn_home):
    import gzip

    path = landing_dir() / "telco_2024-05.csv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b"customerID\n"))
    assert path in pending_items(landing_dir())
    outcome = process_item(path, source_dir())
    assert outcome.status == "rejected" and "not a landing item" not in outcome.detail


def test_a_contract_folder_is_delivered(churn_home, make_delivery):
    folder = landing_dir() / "2024-02"
    folder.mkdir(parents=True)
    for name, frame in make_delivery("2024-02-01").items():
        frame.to_parquet(folder / f"{name}.parquet")
    assert process_item(folder, source_dir()).status == "delivered"
    assert available_months(source_dir()) == ["2024-02-01"]


def test_run_keys_do_not_repeat_for_an_unchanged_delivery(churn_home, make_delivery):
    from churn_assets.source.deliveries import write_delivery

    write_delivery(source_dir(), "2024-02-01", make_delivery("2024-02-01"))
    with dg.instance_for_test() as instance:
        first = _requests(landing_sensor(_sensor_context(instance)))
        second = _requests(landing_sensor(_sensor_context(instance)))
    assert [r.run_key for r in first] == [r.run_key for r in second]


def test_several_waiting_months_run_as_one_range(churn_home, make_delivery):
    from churn_assets.source.deliveries import write_delivery

    for month in ("2024-01-01", "2024-02-01", "2024-03-01"):
        write_delivery(source_dir(), month, make_delivery(month))
    with dg.instance_for_test() as instance:
        (request,) = _requests(landing_sensor(_sensor_context(instance)))
    assert request.partition_key is None
    assert request.tags["dagster/asset_partition_range_start"] == "2024-01-01"
    assert request.tags["dagster/asset_partition_range_end"] == "2024-03-01"


def test_months_become_partitions_on_delivery_and_the_schedule_scores_only_delivered_months(churn_home,
                                                                                           make_delivery):
    from datetime import datetime, timezone

    from churn_assets.automation.jobs import monthly_scoring_schedule
    from churn_assets.core.partitions import delivered_months, register_months
    from churn_assets.source.deliveries import write_delivery

    for month in ("2024-02-01", "2024-03-01"):
        write_delivery(source_dir(), month, make_delivery(month))
    with dg.instance_for_test() as instance:
        assert delivered_months(instance) == []
        landing_sensor(_sensor_context(instance))
        assert delivered_months(instance) == ["2024-02-01", "2024-03-01"]
        # History delivered late still sorts first (ranges follow the partitions' order), but
        # not while a run is in flight: its range would gain the month mid-run.
        from dagster._core.storage.dagster_run import DagsterRun

        running = DagsterRun(job_name="full_refresh", run_id="r1", status=dg.DagsterRunStatus.STARTED)
        instance.add_run(running)
        assert register_months(instance, ["2023-12-01"]) == ["2023-12-01"]
        assert instance.get_dynamic_partitions("months") == ["2024-02-01", "2024-03-01", "2023-12-01"]
        instance.report_run_failed(running)
        assert register_months(instance, ["2024-01-01"]) == ["2024-01-01"]
        assert instance.get_dynamic_partitions("months") == ["2023-12-01", "2024-01-01", "2024-02-01", "2024-03-01"]
        with pytest.raises(ValueError, match="not month partition keys"):
            register_months(instance, ["2024-05"])

        def tick(year: int, month: int):
            when = datetime(year, month, 2, 6, tzinfo=timezone.utc)
            return monthly_scoring_schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=when))

        request = tick(2024, 4)
        assert isinstance(request, dg.RunRequest) and request.partition_key == "2024-03-01"
        skipped = tick(2024, 5)
        assert isinstance(skipped, dg.SkipReason) and "No delivery for 2024-04" in skipped.skip_message
        assert tick(2024, 1).partition_key == "2023-12-01"
