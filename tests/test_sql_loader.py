"""The SQL loader: sql/ files -> Dagster assets, YAML and singular tests -> asset checks.

Every test builds a small sql/ folder and a small DuckDB warehouse under tmp_path and
runs them through Dagster's own execution (dg.materialize).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from churn_assets.core.engine import EnginePolicy
from churn_assets.core.warehouse import Warehouse
from conftest import materialize
from churn_assets.sql_models import (
    SqlProjectError,
    TRANSPILE_DIALECTS,
    load_sql_project,
    transpile_model,
    transpile_report,
)
from churn_assets.sql_models import manifest as manifest_module
from churn_assets.sql_models.loader import RowDependency

RAW_KEYS = [dg.AssetKey(["raw", name]) for name in ("customers", "subscriptions", "events", "cancellations")]


def write_sql_dir(root: Path, files: dict[str, str]) -> Path:
    sql_dir = root / "sql"
    for relative, text in files.items():
        path = sql_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).strip() + "\n")
    return sql_dir


@pytest.fixture(autouse=True)
def churn_home(tmp_path, monkeypatch) -> Path:
    """Every load writes its parse cache under this test's own $CHURN_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("CHURN_HOME", str(home))
    return home


@pytest.fixture
def warehouse(tmp_path, churn_home) -> Warehouse:
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA raw")
    con.execute(
        "CREATE TABLE raw.customers AS SELECT * FROM (VALUES "
        "('c1', DATE '2023-06-01', 'Female'), ('c2', DATE '2023-08-15', 'Male'), "
        "('c3', DATE '2024-01-20', 'Male')) t(customer_id, signup_date, gender)"
    )
    # Three customers over three months; c3 joins in February.
    con.execute(
        "CREATE TABLE raw.subscriptions AS SELECT customer_id, snapshot_month, "
        "monthly_charges::DOUBLE AS monthly_charges FROM (VALUES "
        "('c1', DATE '2024-01-01', 50.0), ('c2', DATE '2024-01-01', 70.0), "
        "('c1', DATE '2024-02-01', 55.0), ('c2', DATE '2024-02-01', 70.0), ('c3', DATE '2024-02-01', 20.0), "
        "('c1', DATE '2024-03-01', 55.0), ('c3', DATE '2024-03-01', 25.0)"
        ") t(customer_id, snapshot_month, monthly_charges)"
    )
    con.close()
    return Warehouse(path=str(path), read_wait_s=2.0, write_wait_s=30.0)


def query(warehouse: Warehouse, sql: str) -> list[tuple]:
    with warehouse.read() as con:
        return con.execute(sql).fetchall()


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        evaluation.check_name: evaluation
        for evaluation in (
            event.event_specific_data
            for event in result.all_events
            if event.event_type_value == "ASSET_CHECK_EVALUATION"
        )
    }


def materializations(result: dg.ExecuteInProcessResult, key: list[str]) -> list:
    return result.asset_materializations_for_node("__".join(key))


def step_failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected a failed step"
    error = failures[0].event_specific_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


# --- dependency discovery and load-time errors -------------------------------------------


def test_dependencies_come_from_real_tables_only(tmp_path):
    sql_dir = write_sql_dir(
        tmp_path,
        {
            "staging/customers.sql": "SELECT * FROM raw.customers",
            "staging/Mixed.sql": 'SELECT 1 AS one FROM "raw"."subscriptions"',
            "features/wide.sql": """
                WITH recent AS (
                    SELECT * FROM raw.subscriptions WHERE snapshot_month > DATE '2024-01-01'
                ), numbers AS (SELECT * FROM range(3) r(i))
                SELECT c.customer_id, m.one, n.i, u.x
                FROM "staging"."customers" AS c
                JOIN recent USING (customer_id)
                LEFT JOIN staging.mixed AS m ON TRUE
                CROSS JOIN numbers AS n
                CROSS JOIN unnest([1, 2]) AS u(x)
                CROSS JOIN read_parquet('elsewhere.parquet') AS p
                WHERE EXISTS (SELECT 1 FROM raw.cancellations k WHERE k.customer_id = c.customer_id)
                  AND c.customer_id IN (SELECT customer_id FROM (SELECT customer_id FROM raw.events) e)
            """,
        },
    )
    project = load_sql_project(sql_dir, RAW_KEYS)
    wide = project.model("features.wide")
    assert set(wide.deps) == {
        dg.AssetKey(["staging", "customers"]),
        dg.AssetKey(["staging", "Mixed"]),
        dg.AssetKey(["raw", "subscriptions"]),
        dg.AssetKey(["raw", "cancellations"]),
        dg.AssetKey(["raw", "events"]),
    }
    assert project.model("staging.Mixed").deps == (dg.AssetKey(["raw", "subscriptions"]),)
    # Dependency order: staging models before the feature model that reads them.
    order = [m.relation for m in project.models]
    assert order.index("features.wide") > order.index("staging.customers")
    assert order.index("features.wide") > order.index("staging.Mixed")
    # The asset graph carries the same edges.
    defs = dg.Definitions(assets=project.assets, resources={"warehouse": Warehouse(), "engine_policy": EnginePolicy()})
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey(["staging", "customers"]) in graph.get(wide.key).parent_keys


def test_unknown_raw_table_becomes_an_external_asset(tmp_path):
    sql_dir = write_sql_dir(
        tmp_path, {"staging/extra.sql": "SELECT * FROM raw.crm_notes JOIN raw.customers USING (customer_id)"}
    )
    project = load_sql_project(sql_dir, RAW_KEYS)
    assert project.external_asset_keys == (dg.AssetKey(["raw", "crm_notes"]),)
    specs = [a for a in project.assets if isinstance(a, dg.AssetSpec)]
    assert [s.key for s in specs] == [dg.AssetKey(["raw", "crm_notes"])]
    dg.Definitions(
        assets=[*project.assets, *(dg.AssetSpec(k) for k in RAW_KEYS)], resources={"warehouse": Warehouse(), "engine_policy": EnginePolicy()}
    ).resolve_asset_graph()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"staging/a.sql": "SELECT * FROM staging.nope"},
            ["staging/a.sql", "unknown table staging.nope"],
        ),
        (
            {"staging/a.sql": "SELECT * FROM staging.customrs", "staging/customers.sql": "SELECT 1 AS x"},
            ["staging/a.sql", "did you mean staging.customers"],
        ),
        (
            {"staging/a.sql": "SELECT * FROM customers"},
            ["staging/a.sql", "not schema-qualified"],
        ),
        (
            {
                "staging/a.sql": "SELECT * FROM staging.b",
                "staging/b.sql": "WITH x AS (SELECT * FROM staging.c) SELECT * FROM x",
                "staging/c.sql": "SELECT * FROM staging.a",
            },
            ["cycle", "staging/a.sql", "staging/b.sql", "staging/c.sql"],
        ),
        (
            {"staging/t.sql": "SELECT 1 AS x", "staging/old/t.sql": "SELECT 2 AS x"},
            ["defined twice", "staging/t.sql", "staging/old/t.sql"],
        ),
        (
            {"staging/t.sql": "SELECT 1 AS x; SELECT 2 AS x"},
            ["staging/t.sql", "exactly one SELECT"],
        ),
        (
            {"staging/t.sql": "SELEC 1 FROM"},
            ["staging/t.sql"],
        ),
        (
            {"staging/t.sql": "SELECT * FROM raw.subscriptions WHERE snapshot_month >= $partition_start"},
            ["staging/t.sql", "only incremental models"],
        ),
        (
            {"raw/customers.sql": "SELECT 1 AS x"},
            ["raw/customers.sql", "already produced by a Python asset"],
        ),
    ],
    ids=["unknown", "typo", "unqualified", "cycle", "duplicate", "two-statements", "parse", "params", "shadows-raw"],
)
def test_inconsistent_projects_fail_at_load_naming_files(tmp_path, files, expected):
    sql_dir = write_sql_dir(tmp_path, files)
    with pytest.raises(SqlProjectError) as error:
        load_sql_project(sql_dir, RAW_KEYS)
    for fragment in expected:
        assert fragment in str(error.value)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("models:\n  - name: t\n    columns:\n      - name: x\n        tests: [not_nul]", "unknown test type 'not_nul'"),
        ("models:\n  - name: t\n    config: {materialized: incremental}", "needs `partition_by`"),
        ("models:\n  - name: t\n    config: {materialized: tabel}", "materialized must be one of"),
        ("models:\n  - name: ghost", "no SQL file staging/ghost.sql"),
        ("models:\n  - name: t\n    columns:\n      - name: x\n        tests: [{range: {}}]", "range needs"),
        ("models:\n  - name: t\n    tests: [{expression: {expression: 'x >>> ('}}]", "does not parse"),
        (
            "models:\n  - name: t\n    columns:\n      - name: x\n        tests: [not_null, not_null]",
            "two tests named 'not_null_x'",
        ),
        ("models:\n  - name: t\n    description: 42", "`description` must be text"),
        ("models:\n  - name: t\n    columns:\n      - name: x\n        description: [a]", "column 'x': `description` must be text"),
    ],
    ids=[
        "test-type", "partition-by", "materialized", "ghost", "range", "expression", "dup-name",
        "description", "column-description",
    ],
)
def test_invalid_yaml_fails_naming_the_file(tmp_path, yaml_text, expected):
    sql_dir = write_sql_dir(tmp_path, {"staging/t.sql": "SELECT 1 AS x"})
    (sql_dir / "staging" / "_models.yml").write_text(yaml_text)
    with pytest.raises(SqlProjectError) as error:
        load_sql_project(sql_dir, RAW_KEYS)
    assert "_models.yml" in str(error.value)
    assert expected in str(error.value)


def test_model_described_in_two_yaml_files_is_rejected(tmp_path):
    sql_dir = write_sql_dir(
        tmp_path,
        {
            "staging/t.sql": "SELECT 1 AS x",
            "staging/_models.yml": "models:\n  - name: t\n    description: one",
            "staging/t.yml": "models:\n  - name: t\n    description: two",
        },
    )
    with pytest.raises(SqlProjectError, match="described twice") as error:
        load_sql_project(sql_dir, RAW_KEYS)
    assert "_models.yml" in str(error.value) and "t.yml" in str(error.value)


# --- asset definitions ---------------------------------------------------------------------


def test_asset_definition_properties(tmp_path):
    sql_dir = write_sql_dir(
        tmp_path,
        {
            "features/monthly.sql": """
                SELECT customer_id, snapshot_month, monthly_charges FROM raw.subscriptions
                WHERE snapshot_month >= $partition_start AND snapshot_month < $partition_end
            """,
            "features/_models.yml": """
                models:
                  - name: monthly
                    description: Charges per customer per month.
                    config: {materialized: incremental, partition_by: snapshot_month}
                    columns:
                      - name: customer_id
                        description: Who.
            """,
        },
    )
    project = load_sql_project(sql_dir, RAW_KEYS)
    (asset,) = [a for a in project.assets if isinstance(a, dg.AssetsDefinition)]
    spec = asset.specs_by_key[dg.AssetKey(["features", "monthly"])]
    assert spec.group_name == "features"
    assert spec.kinds == {"duckdb", "sql"}
    assert spec.description == "Charges per customer per month."
    assert spec.code_version == project.models[0].code_version
    assert asset.partitions_def is not None and asset.backfill_policy == dg.BackfillPolicy.single_run()
    assert asset.op.pool == "warehouse"
    assert "raw.subscriptions" in spec.metadata["sql"].value
    assert spec.metadata["path"].value.endswith("features/monthly.sql")
    assert spec.metadata["dagster/table_name"].value == "features.monthly"
    assert spec.metadata["dagster/column_schema"].schema.columns[0].description == "Who."


def test_code_version_follows_sql_and_config_only(tmp_path):
    files = {
        "staging/t.sql": "SELECT 1 AS x",
        "staging/_models.yml": "models:\n  - name: t\n    description: first",
    }
    first = load_sql_project(write_sql_dir(tmp_path / "a", files), RAW_KEYS).models[0].code_version
    described = load_sql_project(
        write_sql_dir(tmp_path / "b", {**files, "staging/_models.yml": "models:\n  - name: t\n    description: other"}),
        RAW_KEYS,
    ).models[0].code_version
    changed_sql = load_sql_project(
        write_sql_dir(tmp_path / "c", {**files, "staging/t.sql": "SELECT 2 AS x"}), RAW_KEYS
    ).models[0].code_version
    changed_config = load_sql_project(
        write_sql_dir(
            tmp_path / "d",
            {**files, "staging/_models.yml": "models:\n  - name: t\n    config: {materialized: table}"},
        ),
        RAW_KEYS,
    ).models[0].code_version
    # row_depends_on only informs the point-in-time check: the model computes the same.
    declared = load_sql_project(
        write_sql_dir(
            tmp_path / "e",
            {**files, "staging/_models.yml": "models:\n  - name: t\n    config: {row_depends_on: {entity: x}}"},
        ),
        RAW_KEYS,
    ).models[0]
    assert declared.config.row_depends_on == RowDependency("x")
    assert first == described == declared.code_version
    assert len({first, changed_sql, changed_config}) == 3


@pytest.mark.parametrize(
    ("row_depends_on", "message"),
    [
        ("customer_id", "`row_depends_on` must be a mapping"),
        ("{entity: customer_id, global: [x]}", r"unknown `row_depends_on` key\(s\) \['global'\]"),
        ("{globals: [raw.x]}", "`row_depends_on.entity` must be a column name, got None"),
        ("{entity: 'customer id'}", "`row_depends_on.entity` must be a column name"),
        ("{entity: customer_id, globals: raw.x}", "`row_depends_on.globals` must be a list"),
        ("{entity: customer_id, globals: [a.b.c]}", "entries are a relation \\(schema.table\\) or a CTE name"),
        ("{entity: customer_id, globals: [observed, OBSERVED]}", "lists a name twice"),
    ],
)
def test_row_depends_on_is_validated(tmp_path, row_depends_on, message):
    files = {
        "staging/t.sql": "SELECT 1 AS customer_id",
        "staging/_models.yml": f"models:\n  - name: t\n    config: {{row_depends_on: {row_depends_on}}}",
    }
    with pytest.raises(SqlProjectError, match=message) as error:
        load_sql_project(write_sql_dir(tmp_path, files), RAW_KEYS, use_cache=False)
    assert "_models.yml: model 't'" in str(error.value) and "\n" not in str(error.value)


# --- materialization -----------------------------------------------------------------------

INCREMENTAL_FILES = {
    "features/monthly.sql": """
        WITH current_month AS (
            SELECT * FROM raw.subscriptions
            WHERE snapshot_month >= $partition_start AND snapshot_month < $partition_end
        )
        SELECT s.customer_id, s.snapshot_month, s.monthly_charges * 12 AS yearly_charges, c.gender
        FROM current_month AS s JOIN staging.customers AS c USING (customer_id)
    """,
    "features/_models.yml": """
        models:
          - name: monthly
            config: {materialized: incremental, partition_by: snapshot_month, time_column: snapshot_month}
            columns:
              - name: yearly_charges
                description: Twelve times the monthly charge.
    """,
    "staging/customers.sql": "SELECT customer_id, gender FROM raw.customers",
    "staging/_models.yml": "models:\n  - name: customers\n    config: {materialized: table}",
}


def _materialize(project, warehouse, **kwargs) -> dg.ExecuteInProcessResult:
    return materialize(
        project.assets + project.asset_checks, resources={"warehouse": warehouse, "engine_policy": EnginePolicy()}, **kwargs
    )


def test_incremental_partition_is_idempotent_and_leaves_other_months(tmp_path, warehouse):
    project = load_sql_project(write_sql_dir(tmp_path, INCREMENTAL_FILES), RAW_KEYS)
    customers = dg.AssetSelection.assets(dg.AssetKey(["staging", "customers"]))
    monthly = dg.AssetSelection.assets(dg.AssetKey(["features", "monthly"]))
    assert _materialize(project, warehouse, selection=customers).success

    for month in ("2024-01-01", "2024-02-01"):
        assert _materialize(project, warehouse, selection=monthly, partition_key=month).success
    table = "SELECT customer_id, snapshot_month, yearly_charges FROM features.monthly ORDER BY ALL"
    before = query(warehouse, table)
    assert len(before) == 5

    result = _materialize(project, warehouse, selection=monthly, partition_key="2024-02-01")
    assert query(warehouse, table) == before
    (materialization,) = materializations(result, ["features", "monthly"])
    metadata = materialization.metadata
    assert metadata["dagster/partition_row_count"].value == 3
    assert metadata["dagster/row_count"].value == 5
    assert metadata["rows_deleted"].value == 3

    # The raw month changes: re-running February replaces February only.
    with warehouse.write() as con:
        con.execute("DELETE FROM raw.subscriptions WHERE customer_id = 'c3'")
    _materialize(project, warehouse, selection=monthly, partition_key="2024-02-01")
    after = query(warehouse, table)
    assert [r for r in after if str(r[1]) == "2024-01-01"] == [r for r in before if str(r[1]) == "2024-01-01"]
    assert sorted(r[0] for r in after if str(r[1]) == "2024-02-01") == ["c1", "c2"]


def test_partition_range_backfill_runs_once_over_the_whole_window(tmp_path, warehouse):
    project = load_sql_project(write_sql_dir(tmp_path, INCREMENTAL_FILES), RAW_KEYS)
    _materialize(project, warehouse, selection=dg.AssetSelection.assets(dg.AssetKey(["staging", "customers"])))
    result = _materialize(
        project,
        warehouse,
        selection=dg.AssetSelection.assets(dg.AssetKey(["features", "monthly"])),
        tags={
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-03-01",
        },
    )
    assert result.success
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert steps == {"features__monthly"}
    materialized = materializations(result, ["features", "monthly"])
    assert sorted(m.partition for m in materialized) == ["2024-01-01", "2024-02-01", "2024-03-01"]
    # Each month's materialization carries its own row count, not the step's total.
    counts = {m.partition: m.metadata["dagster/partition_row_count"].value for m in materialized}
    assert counts == {"2024-01-01": 2, "2024-02-01": 3, "2024-03-01": 2}
    assert all(m.metadata["dagster/row_count"].value == 7 for m in materialized)
    assert query(warehouse, "SELECT count(*) FROM features.monthly") == [(7,)]


def test_materialization_metadata_has_schema_lineage_and_row_count(tmp_path, warehouse):
    project = load_sql_project(write_sql_dir(tmp_path, INCREMENTAL_FILES), RAW_KEYS)
    _materialize(project, warehouse, selection=dg.AssetSelection.assets(dg.AssetKey(["staging", "customers"])))
    result = _materialize(
        project, warehouse, selection=dg.AssetSelection.assets(dg.AssetKey(["features", "monthly"])),
        partition_key="2024-01-01",
    )
    (materialization,) = materializations(result, ["features", "monthly"])
    metadata = materialization.metadata
    standard = {key: type(value) for key, value in metadata.items() if key.startswith("dagster/")}
    assert standard == {
        "dagster/column_schema": dg.TableSchemaMetadataValue,
        "dagster/column_lineage": dg.TableColumnLineageMetadataValue,
        "dagster/row_count": dg.IntMetadataValue,
        "dagster/partition_row_count": dg.IntMetadataValue,
        "dagster/table_name": dg.TextMetadataValue,
    }
    assert metadata["dagster/partition_row_count"].value == 2
    schema = metadata["dagster/column_schema"].schema
    assert [(c.name, c.type) for c in schema.columns] == [
        ("customer_id", "VARCHAR"),
        ("snapshot_month", "DATE"),
        ("yearly_charges", "DOUBLE"),
        ("gender", "VARCHAR"),
    ]
    assert schema.columns[2].description == "Twelve times the monthly charge."
    lineage = metadata["dagster/column_lineage"].value.deps_by_column
    raw_subscriptions = dg.AssetKey(["raw", "subscriptions"])
    assert lineage["yearly_charges"] == [dg.TableColumnDep(asset_key=raw_subscriptions, column_name="monthly_charges")]
    assert lineage["gender"] == [
        dg.TableColumnDep(asset_key=dg.AssetKey(["staging", "customers"]), column_name="gender")
    ]
    assert dg.TableColumnDep(asset_key=raw_subscriptions, column_name="customer_id") in lineage["customer_id"]
    assert metadata["dagster/row_count"].value == 2
    # The same lineage, readable in open-source Dagster (which does not draw column lineage).
    readable = metadata["column_lineage_table"].value
    assert "| yearly_charges | raw.subscriptions.monthly_charges |" in readable
    assert "| gender | staging.customers.gender |" in readable


def test_sql_error_names_the_file_and_keeps_the_previous_table(tmp_path, warehouse):
    files = {"staging/customers.sql": "SELECT customer_id, gender FROM raw.customers",
             "staging/_models.yml": "models:\n  - name: customers\n    config: {materialized: table}"}
    project = load_sql_project(write_sql_dir(tmp_path / "good", files), RAW_KEYS)
    assert _materialize(project, warehouse).success
    before = query(warehouse, "SELECT * FROM staging.customers ORDER BY ALL")

    broken = load_sql_project(
        write_sql_dir(tmp_path / "bad", {**files, "staging/customers.sql": "SELECT customer_id, no_such_column FROM raw.customers"}),
        RAW_KEYS,
    )
    result = _materialize(broken, warehouse, raise_on_error=False)
    assert not result.success
    message = step_failure_message(result)
    assert "bad/sql/staging/customers.sql" in message
    assert "no_such_column" in message
    assert query(warehouse, "SELECT * FROM staging.customers ORDER BY ALL") == before


def test_failed_incremental_run_keeps_the_previous_partition(tmp_path, warehouse):
    project = load_sql_project(write_sql_dir(tmp_path / "good", INCREMENTAL_FILES), RAW_KEYS)
    _materialize(project, warehouse, selection=dg.AssetSelection.assets(dg.AssetKey(["staging", "customers"])))
    monthly = dg.AssetSelection.assets(dg.AssetKey(["features", "monthly"]))
    _materialize(project, warehouse, selection=monthly, partition_key="2024-02-01")
    before = query(warehouse, "SELECT * FROM features.monthly ORDER BY ALL")

    # Forgets the window filter: would write rows of other months into February.
    leaky = {**INCREMENTAL_FILES, "features/monthly.sql": """
        SELECT s.customer_id, s.snapshot_month, s.monthly_charges * 12 AS yearly_charges, c.gender
        FROM raw.subscriptions AS s JOIN staging.customers AS c USING (customer_id)
    """}
    # Fails inside DuckDB (division of a string).
    failing = {**INCREMENTAL_FILES, "features/monthly.sql": """
        SELECT customer_id, snapshot_month, customer_id / 2 AS yearly_charges, 'x' AS gender
        FROM raw.subscriptions
        WHERE snapshot_month >= $partition_start AND snapshot_month < $partition_end
    """}
    for name, files, expected in (("leaky", leaky, "outside the window"), ("failing", failing, "DuckDB failed")):
        broken = load_sql_project(write_sql_dir(tmp_path / name, files), RAW_KEYS)
        result = _materialize(broken, warehouse, selection=monthly, partition_key="2024-02-01", raise_on_error=False)
        assert not result.success
        message = step_failure_message(result)
        assert f"{name}/sql/features/monthly.sql" in message and expected in message
        assert query(warehouse, "SELECT * FROM features.monthly ORDER BY ALL") == before


def test_incremental_write_refuses_changed_columns_and_a_missing_partition_column(tmp_path, warehouse):
    """The rows go straight into the table (no staged copy), so these refusals come from the
    model's described columns before anything is written, and leave the table as it was."""
    project = load_sql_project(write_sql_dir(tmp_path / "good", INCREMENTAL_FILES), RAW_KEYS)
    _materialize(project, warehouse, selection=dg.AssetSelection.assets(dg.AssetKey(["staging", "customers"])))
    monthly = dg.AssetSelection.assets(dg.AssetKey(["features", "monthly"]))
    _materialize(project, warehouse, selection=monthly, partition_key="2024-02-01")
    before = query(warehouse, "SELECT * FROM features.monthly ORDER BY ALL")

    renamed = {**INCREMENTAL_FILES, "features/monthly.sql": """
        SELECT customer_id, snapshot_month, monthly_charges * 12 AS annual_charges, 'x' AS gender
        FROM raw.subscriptions
        WHERE snapshot_month >= $partition_start AND snapshot_month < $partition_end
    """}
    unpartitioned = {**INCREMENTAL_FILES, "features/monthly.sql": """
        SELECT customer_id, monthly_charges * 12 AS yearly_charges, 'x' AS gender
        FROM raw.subscriptions
        WHERE snapshot_month >= $partition_start AND snapshot_month < $partition_end
    """}
    for name, files, expected in (
        ("renamed", renamed, "no longer match features.monthly (new: ['annual_charges'], gone: ['yearly_charges'])"),
        ("unpartitioned", unpartitioned, "partition_by column 'snapshot_month' is not among"),
    ):
        broken = load_sql_project(write_sql_dir(tmp_path / name, files), RAW_KEYS)
        result = _materialize(broken, warehouse, selection=monthly, partition_key="2024-02-01", raise_on_error=False)
        assert not result.success
        message = step_failure_message(result)
        assert f"{name}/sql/features/monthly.sql" in message and expected in message, message
        assert query(warehouse, "SELECT * FROM features.monthly ORDER BY ALL") == before


def test_window_guard_names_a_row_outside_the_window_and_writes_nothing(tmp_path, warehouse):
    # The first write creates the table: the guard holds for CREATE TABLE ... AS as well.
    leaky = {**INCREMENTAL_FILES, "features/monthly.sql": """
        SELECT s.customer_id, s.snapshot_month, s.monthly_charges * 12 AS yearly_charges, c.gender
        FROM raw.subscriptions AS s JOIN staging.customers AS c USING (customer_id)
        WHERE s.snapshot_month < $partition_end
    """}
    project = load_sql_project(write_sql_dir(tmp_path, leaky), RAW_KEYS)
    _materialize(project, warehouse, selection=dg.AssetSelection.assets(dg.AssetKey(["staging", "customers"])))
    monthly = dg.AssetSelection.assets(dg.AssetKey(["features", "monthly"]))
    result = _materialize(project, warehouse, selection=monthly, partition_key="2024-02-01", raise_on_error=False)
    assert not result.success
    message = step_failure_message(result)
    assert "rows have snapshot_month outside the window [2024-02-01, 2024-03-01) (e.g. 2024-01-01)" in message
    assert "$partition_start / $partition_end" in message
    with warehouse.read() as con:
        assert not con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'monthly'"
        ).fetchone()[0]


# --- asset checks --------------------------------------------------------------------------

CHECKED_FILES = {
    "staging/people.sql": """
        SELECT * FROM (VALUES
            ('p1', 'Female', 30, 'c1'),
            ('p2', 'Male', 45, 'c2'),
            ('p3', 'Other', -4, 'c9'),
            ('p3', NULL, 200, NULL),
            (NULL, 'Male', 50, 'c1')
        ) t(person_id, gender, age, customer_id)
    """,
    "staging/customers.sql": "SELECT customer_id FROM raw.customers",
    "staging/_models.yml": """
        models:
          - name: people
            description: Crafted rows, each test type failing on a known number of them.
            config: {materialized: table}
            columns:
              - name: person_id
                tests:
                  - not_null                                      # 1 failing (NULL id)
                  - unique                                        # 1 duplicated value (p3)
              - name: gender
                tests:
                  - accepted_values: {values: [Female, Male, "Won't say"]}  # 1 failing (Other)
                  - not_null: {severity: warn}                    # 1 failing, warn only
              - name: age
                tests:
                  - range: {min: 0, max: 120}                     # 2 failing (-4, 200)
                  - range: {min: -10, name: age_not_absurd}       # passes
              - name: customer_id
                tests:
                  - relationships: {to: staging.customers, field: customer_id}   # 1 failing (c9)
            tests:
              - unique: {columns: [person_id, gender]}            # passes
              - expression: {expression: "age < 100", severity: warn}          # 1 failing
          - name: customers
            config: {materialized: view}
    """,
    "staging/tests/people_without_customer.sql": """
        SELECT p.* FROM staging.people p WHERE p.customer_id IS NULL
    """,
    "staging/tests/customers_exist.sql": """
        -- severity: warn
        SELECT 1 AS missing FROM staging.customers HAVING count(*) = 0
    """,
    "features/adults.sql": "SELECT * FROM staging.people WHERE age >= 18",
}

EXPECTED_CHECKS = {
    # check name: (passed, failing rows, severity)
    "not_null_person_id": (False, 1, "error"),
    "unique_person_id": (False, 1, "error"),
    "accepted_values_gender": (False, 1, "error"),
    "not_null_gender": (False, 1, "warn"),
    "range_age": (False, 2, "error"),
    "age_not_absurd": (True, 0, "error"),
    "relationships_customer_id__staging_customers": (False, 1, "error"),
    "unique_person_id__gender": (True, 0, "error"),
    "expression_age_100": (False, 1, "warn"),
    "people_without_customer": (False, 1, "error"),
    "customers_exist": (True, 0, "warn"),
}


def test_yaml_and_singular_tests_become_checks_with_failing_counts(tmp_path, warehouse):
    project = load_sql_project(write_sql_dir(tmp_path, CHECKED_FILES), RAW_KEYS)
    specs = {spec.name: spec for checks in project.asset_checks for spec in checks.check_specs}
    assert set(specs) == set(EXPECTED_CHECKS)
    for name, (_, _, severity) in EXPECTED_CHECKS.items():
        assert specs[name].blocking == (severity == "error"), name
    assert specs["relationships_customer_id__staging_customers"].additional_deps[0].asset_key == dg.AssetKey(["staging", "customers"])
    assert specs["customers_exist"].asset_key == dg.AssetKey(["staging", "customers"])

    result = _materialize(project, warehouse, raise_on_error=False)
    evaluations = check_evaluations(result)
    assert set(evaluations) == set(EXPECTED_CHECKS)
    for name, (passed, failing, severity) in EXPECTED_CHECKS.items():
        evaluation = evaluations[name]
        assert evaluation.passed is passed, name
        assert evaluation.metadata["failing_rows"].value == failing, name
        assert evaluation.severity == (
            dg.AssetCheckSeverity.ERROR if severity == "error" else dg.AssetCheckSeverity.WARN
        ), name
    sample = evaluations["range_age"].metadata["failing_sample"].value
    assert "| person_id | gender | age | customer_id |" in sample and "| p3 | Other | -4 | c9 |" in sample

    # Blocking: the error-level failures on staging.people stop its downstream model.
    assert not result.success
    assert materializations(result, ["staging", "people"])
    assert not materializations(result, ["features", "adults"])


def test_checks_run_alone_against_the_current_warehouse(tmp_path, warehouse):
    project = load_sql_project(write_sql_dir(tmp_path, CHECKED_FILES), RAW_KEYS)
    with warehouse.write() as con:
        con.execute("CREATE SCHEMA staging")
        con.execute(
            "CREATE TABLE staging.people AS SELECT * FROM (VALUES ('p1', 'Male', 40, 'c1')) "
            "t(person_id, gender, age, customer_id)"
        )
        con.execute("CREATE VIEW staging.customers AS SELECT customer_id FROM raw.customers")
    people = dg.AssetKey(["staging", "people"])
    result = _materialize(
        project, warehouse, selection=dg.AssetSelection.checks_for_assets(people), raise_on_error=False
    )
    assert result.success
    assert not result.get_asset_materialization_events()
    evaluations = check_evaluations(result)
    assert {n for n, e in evaluations.items()} == {
        name for name in EXPECTED_CHECKS if name != "customers_exist"
    }
    assert all(e.passed for e in evaluations.values())

    # One check alone, and a check whose table is missing fails with the DuckDB message.
    with warehouse.write() as con:
        con.execute("DROP TABLE staging.people")
    result = _materialize(
        project, warehouse, raise_on_error=False,
        selection=dg.AssetSelection.checks(dg.AssetCheckKey(people, "not_null_person_id")),
    )
    (evaluation,) = check_evaluations(result).values()
    assert not evaluation.passed
    assert "people" in evaluation.metadata["error"].value


# --- transpilation -------------------------------------------------------------------------


def test_transpile_to_other_engines_keeps_window_parameters(tmp_path):
    sql_dir = write_sql_dir(
        tmp_path,
        {
            "features/monthly.sql": """
                SELECT customer_id, date_trunc('month', snapshot_month) AS month,
                       list_value(1, 2) AS pair, monthly_charges::DOUBLE AS charges
                FROM raw.subscriptions
                WHERE snapshot_month >= $partition_start AND snapshot_month < $partition_end
            """,
            "features/_models.yml": "models:\n  - name: monthly\n    config: {materialized: incremental, partition_by: month}",
        },
    )
    spark = transpile_model(sql_dir, "features.monthly", "spark")
    snowflake = transpile_model(sql_dir, "monthly", "snowflake")
    bigquery = transpile_model(sql_dir, sql_dir / "features" / "monthly.sql", "bigquery")
    assert ":partition_start" in spark and "ARRAY(1, 2)" in spark
    assert ":partition_end" in snowflake and "DATE_TRUNC('MONTH'" in snowflake.upper()
    assert "@partition_start" in bigquery and "FLOAT64" in bigquery
    assert all("$partition" not in text for text in (spark, snowflake, bigquery))

    report = transpile_report(sql_dir)
    assert [(r.model, r.dialect, r.ok) for r in report] == [
        ("features.monthly", "spark", True),
        ("features.monthly", "snowflake", True),
        ("features.monthly", "bigquery", True),
    ]
    with pytest.raises(SqlProjectError, match="unknown SQL dialect"):
        transpile_model(sql_dir, "monthly", "cobol")
    with pytest.raises(SqlProjectError, match="no model 'nope'"):
        transpile_model(sql_dir, "nope", "spark")


def test_transpile_writes_out_named_windows(tmp_path):
    # sqlglot 30's BigQuery generator crashes on a WINDOW clause; written out, it transpiles.
    sql_dir = write_sql_dir(
        tmp_path,
        {
            "features/lagged.sql": """
                SELECT customer_id, lag(charges, 1) OVER by_month AS previous_charges,
                       sum(charges) OVER (by_month ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS charges_3m
                FROM raw.subscriptions
                WINDOW by_month AS (PARTITION BY customer_id ORDER BY snapshot_month NULLS FIRST)
            """,
        },
    )
    for dialect in TRANSPILE_DIALECTS:
        text = " ".join(transpile_model(sql_dir, "features.lagged", dialect, strict=True).split())
        assert "WINDOW" not in text.upper() and "by_month" not in text
        assert text.count("PARTITION BY customer_id ORDER BY snapshot_month") == 2
        assert "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW" in text


# --- parse cache ($CHURN_HOME/.cache/sql_manifest.json) ------------------------------------

CACHED_FILES = {
    **CHECKED_FILES,
    **INCREMENTAL_FILES,
    "staging/_models.yml": CHECKED_FILES["staging/_models.yml"],
    # YAML scalars JSON has no type for (dates) must come back as the same type.
    "staging/dated.sql": "SELECT DATE '2024-01-01' AS d, 'x' AS label FROM raw.crm_notes",
    "staging/dated.yml": """
        models:
          - name: dated
            description: "42"
            config:
              row_depends_on: {entity: label, globals: [raw.crm_notes]}
            columns:
              - name: d
                tests:
                  - accepted_values: {values: [2024-01-01, 2024-02-01T00:00:00]}
              - name: label
                tests:
                  - accepted_values: {values: [x, 3, 1.5, true, null], severity: warn}
    """,
}


@pytest.fixture
def count_parses(monkeypatch) -> list[Path]:
    """Records every real (sqlglot) parse the cached loader falls back to."""
    calls: list[Path] = []
    real_parse = manifest_module.parse_sql_project

    def counting_parse(sql_dir, external_assets):
        calls.append(Path(sql_dir))
        return real_parse(sql_dir, external_assets)

    monkeypatch.setattr(manifest_module, "parse_sql_project", counting_parse)
    return calls


def project_summary(project) -> dict:
    """Everything the loader derives from the files, as comparable values."""
    specs = {}
    for asset in project.assets:
        for spec in asset.specs if isinstance(asset, dg.AssetsDefinition) else [asset]:
            specs[spec.key] = (
                spec.description, spec.group_name, spec.code_version, spec.kinds,
                sorted(d.asset_key.to_user_string() for d in spec.deps),
                {k: v for k, v in spec.metadata.items()},
            )
    checks = {
        spec.key: (spec.description, spec.blocking, sorted(d.asset_key.to_user_string() for d in spec.additional_deps))
        for checks in project.asset_checks for spec in checks.check_specs
    }
    partitioned = {
        key: asset.partitions_def is not None
        for asset in project.assets if isinstance(asset, dg.AssetsDefinition) for key in asset.keys
    }
    return {
        "models": project.models,
        "singular_tests": project.singular_tests,
        "external": project.external_asset_keys,
        "specs": specs,
        "checks": checks,
        "partitioned": partitioned,
    }


def test_cached_load_gives_the_same_project_as_parsing(tmp_path, churn_home, count_parses):
    sql_dir = write_sql_dir(tmp_path, CACHED_FILES)
    uncached = load_sql_project(sql_dir, RAW_KEYS, use_cache=False)
    cold = load_sql_project(sql_dir, RAW_KEYS)
    assert (churn_home / ".cache" / "sql_manifest.json").is_file()
    warm = load_sql_project(sql_dir, RAW_KEYS)
    assert len(count_parses) == 2  # the uncached load and the cold one; the warm load hit

    assert project_summary(warm) == project_summary(cold) == project_summary(uncached)
    dated = warm.model("staging.dated")
    assert dated.description == "42"
    date_values, label_values = (t.args["values"] for t in dated.tests)
    assert [type(v).__name__ for v in date_values] == ["date", "datetime"]
    assert label_values == ["x", 3, 1.5, True, None]
    assert dated.config.row_depends_on == RowDependency("label", ("raw.crm_notes",))
    assert warm.external_asset_keys == (dg.AssetKey(["raw", "crm_notes"]),)
    assert dg.AssetKey(["staging", "customers"]) in dict(
        (t.check_name, t.to_key) for t in warm.model("staging.people").tests
    ).values()


def test_warm_cache_load_does_not_import_sqlglot(tmp_path, churn_home):
    sql_dir = write_sql_dir(tmp_path, CACHED_FILES)
    expected = load_sql_project(sql_dir, RAW_KEYS)
    script = textwrap.dedent(
        f"""
        import json, sys
        import dagster as dg
        from churn_assets.sql_models import load_sql_project
        keys = [dg.AssetKey(["raw", n]) for n in {[k.path[1] for k in RAW_KEYS]!r}]
        project = load_sql_project({str(sql_dir)!r}, keys)
        print(json.dumps({{
            "sqlglot": sorted(m for m in sys.modules if m.split(".")[0] == "sqlglot"),
            "models": [m.relation for m in project.models],
            "deps": {{m.relation: [d.to_user_string() for d in m.deps] for m in project.models}},
            "checks": len([k for c in project.asset_checks for k in c.check_keys]),
        }}))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "CHURN_HOME": str(churn_home)},
        capture_output=True, text=True, check=True, timeout=120,
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["sqlglot"] == []
    assert report["models"] == [m.relation for m in expected.models]
    assert report["deps"] == {m.relation: [d.to_user_string() for d in m.deps] for m in expected.models}
    assert report["checks"] == len(expected.check_keys)


def test_editing_a_file_or_the_external_keys_invalidates_the_cache(tmp_path, count_parses):
    sql_dir = write_sql_dir(tmp_path, INCREMENTAL_FILES)
    customers = dg.AssetKey(["staging", "customers"])
    assert load_sql_project(sql_dir, RAW_KEYS).model("staging.customers").deps == (
        dg.AssetKey(["raw", "customers"]),
    )
    load_sql_project(sql_dir, RAW_KEYS)
    assert len(count_parses) == 1

    (sql_dir / "staging" / "customers.sql").write_text(
        "SELECT c.customer_id, c.gender FROM raw.customers c JOIN raw.events e USING (customer_id)"
    )
    edited = load_sql_project(sql_dir, RAW_KEYS)
    assert len(count_parses) == 2
    assert set(edited.model("staging.customers").deps) == {
        dg.AssetKey(["raw", "customers"]), dg.AssetKey(["raw", "events"])
    }

    # A YAML edit counts too: the model becomes a view.
    yaml_path = sql_dir / "staging" / "_models.yml"
    yaml_path.write_text(yaml_path.read_text().replace("materialized: table", "materialized: view"))
    assert load_sql_project(sql_dir, RAW_KEYS).model(customers.path[1]).config.materialized == "view"
    assert len(count_parses) == 3

    # Without raw.events among the Python assets it becomes an ingested (external) table.
    fewer = [k for k in RAW_KEYS if k.path[1] != "events"]
    assert load_sql_project(sql_dir, fewer).external_asset_keys == (dg.AssetKey(["raw", "events"]),)
    assert len(count_parses) == 4


def test_validation_errors_are_raised_on_every_load(tmp_path, count_parses):
    sql_dir = write_sql_dir(tmp_path, INCREMENTAL_FILES)
    load_sql_project(sql_dir, RAW_KEYS)
    (sql_dir / "staging" / "customers.sql").write_text("SELECT * FROM staging.custmers")
    for _ in range(2):
        with pytest.raises(SqlProjectError, match="unknown table staging.custmers"):
            load_sql_project(sql_dir, RAW_KEYS)
    (sql_dir / "staging" / "customers.sql").write_text("SELECT * FROM features.monthly")
    with pytest.raises(SqlProjectError, match="cycle"):
        load_sql_project(sql_dir, RAW_KEYS)
    assert len(count_parses) == 4  # broken projects are never cached, so each load parsed
    # Back to the valid files: failed loads left the valid project's cache in place.
    (sql_dir / "staging" / "customers.sql").write_text(
        textwrap.dedent(INCREMENTAL_FILES["staging/customers.sql"]).strip() + "\n"
    )
    assert load_sql_project(sql_dir, RAW_KEYS).model("staging.customers").deps == (
        dg.AssetKey(["raw", "customers"]),
    )
    assert len(count_parses) == 4


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: "not json {",
        lambda text: text[: len(text) // 2],
        lambda text: json.dumps({**json.loads(text), "project": {"models": [{"key": 7}]}}),
        lambda text: "[]",
    ],
    ids=["garbage", "truncated", "wrong-shape", "not-a-mapping"],
)
def test_corrupt_cache_is_ignored_and_rewritten(tmp_path, churn_home, count_parses, damage):
    sql_dir = write_sql_dir(tmp_path, INCREMENTAL_FILES)
    expected = project_summary(load_sql_project(sql_dir, RAW_KEYS))
    manifest = churn_home / ".cache" / "sql_manifest.json"
    manifest.write_text(damage(manifest.read_text()))

    assert project_summary(load_sql_project(sql_dir, RAW_KEYS)) == expected
    assert len(count_parses) == 2
    assert json.loads(manifest.read_text())["project"]["models"]
    load_sql_project(sql_dir, RAW_KEYS)
    assert len(count_parses) == 2


def test_unwritable_cache_folder_falls_back_to_parsing(tmp_path, churn_home, count_parses):
    sql_dir = write_sql_dir(tmp_path, INCREMENTAL_FILES)
    churn_home.mkdir(parents=True)
    # A file where the .cache folder should be: creating it fails even for root.
    (churn_home / ".cache").write_text("in the way")
    first = load_sql_project(sql_dir, RAW_KEYS)
    second = load_sql_project(sql_dir, RAW_KEYS)
    assert len(count_parses) == 2
    assert project_summary(first) == project_summary(second)
    assert not [p for p in churn_home.iterdir() if p.name != ".cache"]


def test_moved_sql_folder_hits_the_cache_with_its_own_paths(tmp_path, count_parses):
    import shutil

    original = write_sql_dir(tmp_path / "a", INCREMENTAL_FILES)
    load_sql_project(original, RAW_KEYS)
    moved = tmp_path / "b" / "sql"
    shutil.copytree(original, moved)
    shutil.rmtree(original)
    project = load_sql_project(moved, RAW_KEYS)
    assert len(count_parses) == 1
    assert project.sql_dir == moved.resolve()
    monthly = project.model("features.monthly")
    assert monthly.path == moved.resolve() / "features" / "monthly.sql"
    assert monthly.yaml_path == moved.resolve() / "features" / "_models.yml"
    assert all(t.source.is_relative_to(moved.resolve()) for t in monthly.tests)
