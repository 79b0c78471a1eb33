"""`churn check`: runs checks only, prints a table, writes JUnit XML, exits on error-level failures."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import dagster as dg
import pytest

from churn_assets.cli import main as cli


def _defs(*, warn_fails: bool = False, error_fails: bool = False, crash: bool = False):
    materialized = []

    @dg.asset(group_name="raw", kinds={"duckdb"})
    def orders() -> None:
        materialized.append("orders")

    @dg.asset_check(asset=orders, blocking=True, description="orders are never negative")
    def orders_non_negative() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            passed=not error_fails, metadata={"failing_rows": 3 if error_fails else 0}
        )

    @dg.asset_check(asset=orders, description="few late orders")
    def orders_few_late() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            passed=not warn_fails,
            severity=dg.AssetCheckSeverity.WARN,
            description="12% late" if warn_fails else None,
        )

    checks = [orders_non_negative, orders_few_late]
    if crash:

        @dg.asset_check(asset=orders)
        def orders_query_works() -> dg.AssetCheckResult:
            raise RuntimeError("table raw.orders does not exist")

        checks.append(orders_query_works)
    return dg.Definitions(assets=[orders], asset_checks=checks), materialized


@pytest.fixture
def use_defs(churn_home, monkeypatch):
    def install(**kwargs):
        defs, materialized = _defs(**kwargs)
        monkeypatch.setattr(cli, "_load_defs", lambda: defs)
        return materialized

    return install


def test_all_passing_exits_zero_without_materializing(use_defs, capsys):
    materialized = use_defs()
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "2 checks: 2 passed" in out
    assert materialized == []


def test_a_warning_is_reported_but_does_not_fail(use_defs, capsys):
    use_defs(warn_fails=True)
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "orders_few_late" in out and "FAILED" in out and "1 warned" in out


def test_an_error_level_failure_exits_one(use_defs, capsys):
    use_defs(error_fails=True)
    assert cli.main(["check"]) == 1
    assert "1 failed (error)" in capsys.readouterr().out


def test_a_crashing_check_fails_the_build(use_defs, capsys):
    use_defs(crash=True)
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "ERRORED" in out and "does not exist" in out


def test_junit_xml(use_defs, tmp_path):
    use_defs(warn_fails=True, error_fails=True, crash=True)
    junit = tmp_path / "reports" / "checks.xml"
    assert cli.main(["check", "--junit", str(junit)]) == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.attrib["tests"] == "3"
    assert suite.attrib["failures"] == "1"
    assert suite.attrib["errors"] == "1"
    cases = {case.attrib["name"]: case for case in suite.findall("testcase")}
    assert set(cases) == {"orders_non_negative", "orders_few_late", "orders_query_works"}
    assert cases["orders_non_negative"].attrib["classname"] == "orders"
    failure = cases["orders_non_negative"].find("failure")
    assert "failing_rows: 3" in failure.text
    assert cases["orders_few_late"].find("failure") is None
    assert "WARNING: 12% late" in cases["orders_few_late"].find("system-out").text
    assert "does not exist" in cases["orders_query_works"].find("error").attrib["message"]


def test_a_partitioned_check_judges_each_month_and_names_the_failing_ones(churn_home, monkeypatch, capsys):
    from churn_assets.core.partitions import monthly_partitions

    measured = {"2024-01-01": 0.1, "2024-02-01": 0.9, "2024-03-01": 0.2}

    @dg.asset(partitions_def=monthly_partitions)
    def drift() -> None:
        pass

    @dg.multi_asset_check(specs=[dg.AssetCheckSpec("psi", asset=drift, partitions_def=monthly_partitions)],
                          can_subset=True)
    def psi_by_month(context):
        for month in context.partition_keys:
            if month in measured:
                yield dg.AssetCheckEvaluation(asset_key=drift.key, check_name="psi", passed=measured[month] < 0.5,
                                              partition=month, description=f"psi {measured[month]}")

    from churn_assets.cli.runner import get_instance
    from churn_assets.core.partitions import register_months

    monkeypatch.setattr(cli, "_load_defs", lambda: dg.Definitions(assets=[drift], asset_checks=[psi_by_month]))
    assert cli.main(["check"]) == 0
    assert "no month has been delivered yet" in capsys.readouterr().out
    register_months(get_instance(), [*measured, "2024-04-01"])  # April delivered, not measured
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "1 of 3 months failed (error: 2024-02); 2024-02: psi 0.9" in out

    measured["2024-02-01"] = 0.3
    assert cli.main(["check"]) == 0
    assert "3 months passed; latest 2024-03: psi 0.2" in capsys.readouterr().out
    # The instance holds one evaluation per month, so the UI shows each month's own result.
    # A check that crashes is an error, not "nothing measured" (its op is not named like it).
    measured.clear()
    measured["2024-01-01"] = "not a number"
    assert cli.main(["check"]) == 1
    assert "ERROR    | ERRORED" in capsys.readouterr().out
    records = get_instance().event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(drift.key, "psi"), limit=500)
    judged = sorted((r.partition, r.status.value) for r in records if r.status.value in ("SUCCEEDED", "FAILED"))
    assert judged == [("2024-01-01", "SUCCEEDED"), ("2024-01-01", "SUCCEEDED"), ("2024-02-01", "FAILED"),
                      ("2024-02-01", "SUCCEEDED"), ("2024-03-01", "SUCCEEDED"), ("2024-03-01", "SUCCEEDED")]
