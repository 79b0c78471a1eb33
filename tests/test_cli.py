"""The `churn` command's own behaviour (the pipeline itself is tested per stage)."""

from __future__ import annotations

import json

import pytest

from churn_assets.cli.main import main
from churn_assets.core.warehouse import Warehouse


@pytest.fixture
def warehouse(churn_home):
    warehouse = Warehouse()
    with warehouse.write() as con:
        con.execute("CREATE SCHEMA raw")
        con.execute("CREATE TABLE raw.t AS SELECT range AS n, 'x' || range AS label FROM range(3)")
    return warehouse


def test_sql_prints_a_table(warehouse, capsys):
    assert main(["sql", "select n, label from raw.t order by n"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["n", "|", "label"]
    assert out[-1] == "(3 rows)"


def test_sql_csv_and_json(warehouse, capsys):
    assert main(["sql", "select n, label from raw.t order by n", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n,label", "0,x0", "1,x1", "2,x2"]
    assert main(["sql", "select n from raw.t where n = 2", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 2}]


def test_sql_is_read_only(warehouse, capsys):
    assert main(["sql", "drop table raw.t"]) == 2
    assert "read-only: a drop statement is not run" in capsys.readouterr().err.lower()
    with warehouse.read() as con:
        assert con.execute("select count(*) from raw.t").fetchone()[0] == 3


def test_sql_reports_sql_errors(warehouse, capsys):
    assert main(["sql", "select nope from raw.t"]) == 1
    assert "nope" in capsys.readouterr().err


def test_sql_without_a_warehouse(churn_home, capsys):
    assert main(["sql", "select 1"]) == 3
    assert "churn demo" in capsys.readouterr().err


def test_run_without_deliveries(churn_home, capsys):
    assert main(["run"]) == 1
    assert "No deliveries" in capsys.readouterr().err


def test_demo_regenerate_refuses_to_leave_earlier_months_behind(churn_home, capsys):
    from churn_assets.core.paths import source_dir
    from churn_assets.source.deliveries import available_months
    from churn_assets.source.synthetic import GeneratorConfig, write_source

    write_source(source_dir(), GeneratorConfig(customers=200, months=3, seed=1))
    before = {p: p.read_bytes() for p in sorted(source_dir().rglob("*.parquet"))}
    assert main(["demo", "--regenerate", "--months", "2", "--customers", "200"]) == 2
    assert "2024-03" in capsys.readouterr().err
    assert available_months(source_dir()) == ["2024-01-01", "2024-02-01", "2024-03-01"]
    assert {p: p.read_bytes() for p in sorted(source_dir().rglob("*.parquet"))} == before


def test_a_bad_policy_file_is_one_line_and_exit_2(churn_home, monkeypatch, capsys):
    policies = churn_home / "policies.yaml"
    policies.write_text("drift:\n  psi_error: high\n")
    monkeypatch.setenv("CHURN_POLICIES", str(policies))
    assert main(["check"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "drift.psi_error: Input should be a valid number" in err


def test_ui_hands_dagster_the_repository_workspace():
    from churn_assets.core.paths import BUILTIN_SQL_DIR, WORKSPACE_FILE

    assert WORKSPACE_FILE.is_file() and "churn_assets.definitions" in WORKSPACE_FILE.read_text()
    assert BUILTIN_SQL_DIR.is_dir()


def test_sql_cannot_touch_files_extensions_or_its_own_configuration(warehouse, tmp_path, capsys):
    before = warehouse.db_path.read_bytes()
    hostile = [
        f"copy (select 42 as x) to '{warehouse.db_path}' (format csv)",
        f"export database '{tmp_path / 'dump'}'",
        f"attach '{tmp_path / 'other.duckdb'}' as other",
        "select * from read_csv('/etc/passwd')",
        "install httpfs",
        "load httpfs",
        "set enable_external_access = true",
    ]
    for query in hostile:
        # 2: refused before it runs (not a reading statement); 1: DuckDB's sandbox refused it.
        assert main(["sql", query]) in (1, 2), query
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.strip(), query
    assert warehouse.db_path.read_bytes() == before
    assert not (tmp_path / "dump").exists() and not (tmp_path / "other.duckdb").exists()


def test_sql_reads_the_spark_tables_behind_views_and_writes_nothing_there(warehouse, churn_home, tmp_path,
                                                                          monkeypatch, capsys):
    """On engine: spark the DuckDB views read the Spark warehouse's Parquet files: the sandbox
    keeps that folder readable, and nothing else; a COPY into it is refused before it runs."""
    import pandas as pd

    spark_tables = tmp_path / "spark-tables"
    (spark_tables / "features" / "f" / "snapshot_month=2024-01-01").mkdir(parents=True)
    pd.DataFrame({"n": [1, 2]}).to_parquet(spark_tables / "features" / "f" / "snapshot_month=2024-01-01" / "p.parquet")
    with warehouse.write() as con:
        con.execute("CREATE SCHEMA features")
        con.execute(f"CREATE VIEW features.f AS SELECT * FROM read_parquet('{spark_tables}/features/f/*/*.parquet', "
                    "hive_partitioning = true)")
    policies = churn_home / "policies.yaml"
    monkeypatch.setenv("CHURN_POLICIES", str(policies))
    query = "select sum(n) as total, min(snapshot_month) as m from features.f"

    policies.write_text("engine: duckdb\n")  # no folder opened: the view cannot read its files
    assert main(["sql", query]) == 1
    assert "Permission Error" in capsys.readouterr().err
    policies.write_text(f"engine:\n  name: spark\n  spark: {{location: '{spark_tables}'}}\n")
    assert main(["sql", query, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"total": 3, "m": "2024-01-01"}]

    before = sorted(p.name for p in spark_tables.rglob("*"))
    target = f"{spark_tables}/features/f/snapshot_month=2024-01-01/evil.parquet"
    (spark_tables / "evil.sql").write_text("select 1;")
    for query, refused in [
        (f"copy (select 1 as n) to '{target}'", "a COPY statement"),
        # EXPLAIN ANALYZE runs what it explains.
        (f"explain analyze copy (select 1 as n) to '{target}'", "an EXPLAIN of a COPY statement"),
        (f"pragma import_database('{spark_tables}')", "PRAGMA import_database"),
    ]:
        assert main(["sql", query]) == 2, query
        assert f"read-only: {refused} is not run" in capsys.readouterr().err
    (spark_tables / "evil.sql").unlink()
    assert main(["sql", "select * from read_csv('/etc/passwd')"]) == 1
    assert "Permission Error" in capsys.readouterr().err
    assert sorted(p.name for p in spark_tables.rglob("*")) == before


def test_sql_runs_exactly_one_statement(warehouse, capsys):
    assert main(["sql", "select 1; select 2"]) == 2
    assert "2 statements" in capsys.readouterr().err
    for empty in ("", "   ", "-- nothing"):
        assert main(["sql", empty]) == 2
        assert "No SQL given" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["check"], ["run"], ["sql", "select 1"]])
def test_a_churn_home_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys, argv):
    home = tmp_path / "not-a-folder"
    home.write_text("")
    monkeypatch.setenv("CHURN_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and len(err.strip().splitlines()) == 1


def test_a_damaged_warehouse_is_never_opened_or_written(churn_home, tmp_path, capsys):
    (churn_home / "warehouse.duckdb").write_bytes(b"")
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n")
    assert main(["ingest", str(table), "--table", "raw.t"]) == 2
    assert "is not a DuckDB database" in capsys.readouterr().err
    assert main(["sql", "select 1"]) == 2
    assert (churn_home / "warehouse.duckdb").read_bytes() == b""


def test_check_without_a_warehouse_and_bad_demo_arguments_are_one_line(churn_home, capsys):
    assert main(["check"]) == 1
    assert "No warehouse" in capsys.readouterr().err
    for bad in (["demo", "--customers", "0"], ["demo", "--months", "-5"], ["demo", "--customers", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            main(bad)
        assert exit_info.value.code == 2
        assert "Traceback" not in capsys.readouterr().err
    assert main(["demo", "--months", "400"]) == 2
    assert "after the current month" in capsys.readouterr().err
    assert not (churn_home / "source").exists()


def test_the_time_per_stage_groups_steps_by_their_layer():
    from churn_assets.cli.runner import stage_lines
    from churn_assets.definitions import defs

    steps = {"raw_deliveries": 3.0, "features__customer_features": 2.0, "features__customer_features__tests": 1.0,
             "ml__predictions": 1.5, "drift_checks": 0.5, "monitoring__drift": 2.0}
    lines = stage_lines(defs, steps, run_seconds=12.0, before=[("generate data", 4.0)])
    by_stage = {line.split()[0]: line for line in lines[1:]}
    assert lines[0] == "Time per stage:"
    assert "4.0s" in by_stage["generate"] and "3.0s" in by_stage["source"]
    assert "2 steps" in by_stage["sql"] and "3.0s" in by_stage["sql"]
    assert "1.5s" in by_stage["scoring"]
    assert "2 steps" in by_stage["monitoring"] and "2.5s" in by_stage["monitoring"]
    assert "2.0s" in by_stage["outside"]  # 12 s of run, 10 s in steps
    assert "total" in lines[-1] and "16.0s" in lines[-1]
