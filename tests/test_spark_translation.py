"""DuckDB -> Spark SQL translation (sql_models/transpile.py) without Spark: what the rewrites
write and what strict mode refuses. tests/test_spark_engine.py runs the results on Spark."""

from __future__ import annotations

import re

import pytest

from churn_assets.sql_models.transpile import UntranslatableError, transpile_sql


def spark(sql: str, **kwargs) -> str:
    """The translation on one line, without the pretty printer's spaces inside parentheses."""
    text = " ".join(transpile_sql(sql, "spark", strict=True, **kwargs).split())
    return re.sub(r"\( | \)", lambda m: m.group(0).strip(), text)


def test_qualify_over_a_star_leaves_its_helper_column_out():
    text = spark(
        "SELECT c.* FROM raw.customers AS c "
        "QUALIFY row_number() OVER (PARTITION BY c.customer_id ORDER BY c.delivery_month DESC) = 1"
    )
    assert text.startswith("SELECT * EXCEPT (_w) FROM (SELECT c.*, ROW_NUMBER() OVER")
    assert "WHERE _w = 1" in text


def test_range_in_from_is_sparks_range_table_function():
    assert "CROSS JOIN RANGE(1, 4) AS o(months_after)" in spark(
        "SELECT * FROM raw.customers CROSS JOIN range(1, 4) AS o(months_after)"
    )
    # generate_series' end is inclusive, Spark's range end exclusive.
    assert "FROM RANGE(1, 3 + 1) AS generate_series(generate_series)" in spark("SELECT * FROM generate_series(1, 3)")


def test_duckdb_interval_constructors_and_boundary_date_diffs_are_written_out():
    assert "MAKE_YM_INTERVAL(0, CAST(n AS INT))" in spark("SELECT d + to_months(n) FROM raw.t")
    text = spark("SELECT date_diff('month', a, b) FROM raw.t")
    assert text == "SELECT CAST(((YEAR(b) - YEAR(a)) * 12 + (MONTH(b) - MONTH(a))) AS BIGINT) FROM raw.t"


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        ("SELECT * FROM raw.a POSITIONAL JOIN raw.b", "POSITIONAL JOIN"),
        ("SELECT COLUMNS('charge.*') FROM raw.subscriptions", "COLUMNS('charge.*')"),
        ("SELECT date_diff('minute', a, b) FROM raw.t", "date_diff('minute', ...)"),
    ],
)
def test_strict_translation_refuses_what_spark_cannot_mean(sql, construct):
    with pytest.raises(UntranslatableError) as refused:
        spark(sql, source="model features.x (x.sql)")
    assert refused.value.construct == construct
    assert str(refused.value).startswith("model features.x (x.sql): cannot run on Spark: ")


def test_an_unknown_function_is_refused_only_when_the_engine_lacks_it():
    assert "BAR(x, 0, 1)" in spark("SELECT bar(x, 0, 1) FROM raw.t")  # nothing to judge it by
    with pytest.raises(UntranslatableError, match=r"bar\(\)"):
        spark("SELECT bar(x, 0, 1) FROM raw.t", function_exists=lambda name: name.lower() != "bar")
    assert "BAR(x, 0, 1)" in spark("SELECT bar(x, 0, 1) FROM raw.t", function_exists=lambda name: True)


def test_other_dialects_are_untouched_by_the_spark_rewrites():
    text = transpile_sql("SELECT date_diff('month', a, b) FROM raw.t", "snowflake", strict=True)
    assert "YEAR(" not in text.upper()
