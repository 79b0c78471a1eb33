"""The raw layer: deliveries -> raw.* tables, per partition, idempotent and atomic."""

from __future__ import annotations

import pytest

from churn_assets.core.engine import EnginePolicy
from churn_assets.core.warehouse import Warehouse
from churn_assets.core.paths import source_dir
from churn_assets.source.deliveries import ContractError, available_months, write_delivery
from churn_assets.source.raw_assets import raw_deliveries
from conftest import materialize


def _materialize(warehouse: Warehouse, *months: str, raise_on_error: bool = True):
    tags = {}
    if len(months) > 1:
        tags = {
            "dagster/asset_partition_range_start": months[0],
            "dagster/asset_partition_range_end": months[-1],
        }
    return materialize(
        [raw_deliveries],
        resources={"warehouse": warehouse, "engine_policy": EnginePolicy()},
        partition_key=months[0] if len(months) == 1 else None,
        tags=tags,
        raise_on_error=raise_on_error,
    )


def _counts(warehouse: Warehouse) -> dict[str, list[tuple]]:
    with warehouse.read() as con:
        return {
            table: con.execute(
                f"SELECT strftime(delivery_month, '%Y-%m'), count(*) FROM raw.{table} "
                "GROUP BY 1 ORDER BY 1"
            ).fetchall()
            for table in ("customers", "subscriptions", "events", "cancellations")
        }


def test_month_loads_with_metadata(churn_home, make_delivery):
    write_delivery(source_dir(), "2024-01-01", make_delivery("2024-01-01", customers=30))
    warehouse = Warehouse()
    result = _materialize(warehouse, "2024-01-01")
    assert result.success
    assert _counts(warehouse)["subscriptions"] == [("2024-01", 30)]
    materializations = {
        m.asset_key.path[-1]: m for m in result.asset_materializations_for_node("raw_deliveries")
    }
    subs = materializations["subscriptions"].metadata
    assert subs["dagster/row_count"].value == 30
    assert subs["rows_loaded"].value == 30
    schema = subs["dagster/column_schema"].schema
    assert [c.name for c in schema.columns][:3] == ["customer_id", "snapshot_month", "contract"]
    assert materializations["subscriptions"].partition == "2024-01-01"


def test_rematerializing_a_partition_is_idempotent(churn_home, make_delivery):
    source = source_dir()
    write_delivery(source, "2024-01-01", make_delivery("2024-01-01", customers=30))
    write_delivery(source, "2024-02-01", make_delivery("2024-02-01", customers=25, seed=1))
    warehouse = Warehouse()
    assert _materialize(warehouse, "2024-01-01", "2024-02-01").success
    before = _counts(warehouse)
    assert _materialize(warehouse, "2024-02-01").success
    assert _materialize(warehouse, "2024-02-01").success
    assert _counts(warehouse) == before
    assert before["subscriptions"] == [("2024-01", 30), ("2024-02", 25)]


def test_a_bad_delivery_leaves_the_warehouse_unchanged(churn_home, make_delivery):
    source = source_dir()
    write_delivery(source, "2024-01-01", make_delivery("2024-01-01", customers=30))
    warehouse = Warehouse()
    assert _materialize(warehouse, "2024-01-01").success
    before = _counts(warehouse)
    # Corrupt February's delivery after it was written: the raw layer validates again.
    write_delivery(source, "2024-02-01", make_delivery("2024-02-01", customers=25))
    broken = make_delivery("2024-02-01", customers=25)["subscriptions"]
    broken.loc[3, "contract"] = "Three year"
    broken.to_parquet(source / "2024-02" / "subscriptions.parquet")
    result = _materialize(warehouse, "2024-01-01", "2024-02-01", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.cause.message
    assert "subscriptions.parquet" in message and "contract" in message and "row 4" in message
    # The range ran in one transaction: January was not even deleted and re-inserted.
    assert _counts(warehouse) == before


def test_missing_delivery_is_a_clear_error(churn_home):
    result = _materialize(Warehouse(), "2024-03-01", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "No delivery for 2024-03" in str(failure.event_specific_data.error.cause.message)


def test_write_delivery_validates_and_refuses_duplicates(churn_home, make_delivery):
    source = source_dir()
    frames = make_delivery("2024-01-01")
    frames["subscriptions"] = frames["subscriptions"].drop(columns=["payment_method"])
    with pytest.raises(ContractError, match="missing column.*payment_method"):
        write_delivery(source, "2024-01-01", frames)
    assert not (source / "2024-01").exists()
    write_delivery(source, "2024-01-01", make_delivery("2024-01-01"))
    with pytest.raises(FileExistsError, match="2024-01"):
        write_delivery(source, "2024-01-01", make_delivery("2024-01-01"))
    assert [p.name for p in source.iterdir()] == ["2024-01"]


def test_a_delivery_must_describe_its_own_month(churn_home, make_delivery):
    source = source_dir()
    other_month = make_delivery("2024-03-01")
    with pytest.raises(ContractError, match="dated 2024-03, not the delivery month 2024-11"):
        write_delivery(source, "2024-11-01", other_month)
    future = make_delivery("2024-03-01")
    future["events"].loc[0, "event_time"] = "2099-01-01"
    with pytest.raises(ContractError, match="events.event_time are dated after the delivery month 2024-03"):
        write_delivery(source, "2024-03-01", future)
    next_month_cancel = make_delivery("2024-03-01")
    next_month_cancel["cancellations"] = next_month_cancel["cancellations"].head(1).assign(cancel_date="2024-04-30")
    far_cancel = make_delivery("2024-03-01")
    far_cancel["cancellations"] = far_cancel["cancellations"].head(1).assign(cancel_date="2099-01-01")
    with pytest.raises(ContractError, match="cancellations.cancel_date are dated after the month following the "
                                            "delivery month 2024-03 .*up to 2024-04-30"):
        write_delivery(source, "2024-03-01", far_cancel)
    assert not source.exists() or not any(source.iterdir())
    write_delivery(source, "2024-03-01", next_month_cancel)
    assert available_months(source) == ["2024-03-01"]


def test_months_are_delivered_without_gaps(churn_home, make_delivery):
    source = source_dir()
    write_delivery(source, "2024-08-01", make_delivery("2024-08-01"))
    with pytest.raises(ContractError, match="no delivery for 2024-09"):
        write_delivery(source, "2024-10-01", make_delivery("2024-10-01"))
    write_delivery(source, "2024-09-01", make_delivery("2024-09-01"))
    write_delivery(source, "2024-10-01", make_delivery("2024-10-01"))
