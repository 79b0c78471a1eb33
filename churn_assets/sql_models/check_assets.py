"""The SQL tests as Dagster asset checks: one multi-asset check per model's YAML tests and one
per singular test, evaluated on DuckDB or, with ``engine: spark``, as Spark SQL
(``checks.py`` builds the failing-rows queries both engines run)."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from churn_assets.core.warehouse import WAREHOUSE_POOL
from churn_assets.sql_models import checks, spark_models
from churn_assets.sql_models.checks import CheckPlan, model_check_plans, singular_check_plans
from churn_assets.sql_models.loader import SingularTest, SqlModel


def evaluate_checks(warehouse, plans: Sequence[CheckPlan], engine=None) -> list[dg.AssetCheckResult]:
    """Each check's verdict from DuckDB, or from Spark SQL when ``engine`` (the EnginePolicy)
    is spark: the tables the checks read are Spark's then."""
    from churn_assets.core.warehouse import WarehouseMissingError

    if engine is not None and engine.on_spark:
        spark_warehouse = engine.spark_warehouse()
        return [spark_models.evaluate_check(spark_warehouse, plan) for plan in plans]
    try:
        with warehouse.read() as con:
            return [checks.evaluate_check(con, plan) for plan in plans]
    except WarehouseMissingError as error:
        return [
            dg.AssetCheckResult(
                asset_key=plan.asset_key,
                check_name=plan.name,
                passed=False,
                severity=plan.dagster_severity,
                description=str(error),
            )
            for plan in plans
        ]


def _check_definition_name(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in label)


def build_checks_definition(name: str, plans: Sequence[CheckPlan], description: str) -> dg.AssetChecksDefinition:
    """One multi-asset check evaluating whichever of ``plans`` are selected."""
    plans_by_key = {plan.check_key: plan for plan in plans}

    @dg.multi_asset_check(
        name=_check_definition_name(name),
        specs=[plan.spec() for plan in plans],
        description=description,
        can_subset=True,
        required_resource_keys={"warehouse", "engine_policy"},
        # A read-only DuckDB connection cannot open while another process writes, so checks
        # queue with the writers instead of timing out behind them.
        pool=WAREHOUSE_POOL,
    )
    def _sql_checks(context):
        selected = [plans_by_key[key] for key in plans_by_key if key in context.selected_asset_check_keys]
        yield from evaluate_checks(context.resources.warehouse, selected, context.resources.engine_policy)

    return _sql_checks


def build_model_checks(model: SqlModel) -> dg.AssetChecksDefinition | None:
    plans = model_check_plans(model)
    if not plans:
        return None
    return build_checks_definition(
        f"{model.schema}__{model.name}__tests", plans, f"YAML tests of {model.relation}"
    )


def build_singular_checks(test: SingularTest) -> dg.AssetChecksDefinition:
    return build_checks_definition(
        f"{test.schema}__test__{test.name}", singular_check_plans(test), f"Singular test {test.path}"
    )
