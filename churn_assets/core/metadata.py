"""Metadata helpers every layer shares: standard table metadata, Markdown tables, check verdicts.

Standard table metadata for materializations:

Dagster 1.13 no longer exports ``TableMetadataSet`` from the top-level package, but the UI
still reads its namespaced keys (``dagster/column_schema``, ``dagster/row_count``, ...).
This helper writes exactly those keys through public metadata types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import dagster as dg


def table_metadata(
    *,
    column_schema: dg.TableSchema | None = None,
    column_lineage: dg.TableColumnLineage | None = None,
    row_count: int | None = None,
    partition_row_count: int | None = None,
    table_name: str | None = None,
) -> dict[str, dg.MetadataValue]:
    entries: dict[str, dg.MetadataValue] = {}
    if column_schema is not None:
        entries["dagster/column_schema"] = dg.MetadataValue.table_schema(column_schema)
    if column_lineage is not None:
        entries["dagster/column_lineage"] = dg.MetadataValue.column_lineage(column_lineage)
    if row_count is not None:
        entries["dagster/row_count"] = dg.MetadataValue.int(int(row_count))
    if partition_row_count is not None:
        entries["dagster/partition_row_count"] = dg.MetadataValue.int(int(partition_row_count))
    if table_name is not None:
        entries["dagster/table_name"] = dg.MetadataValue.text(table_name)
    return entries


def add_partition_metadata(context: dg.AssetExecutionContext,
                           by_partition: Mapping[str, Mapping[str, Any]],
                           asset_key: dg.AssetKey | None = None) -> None:
    """Attach each partition's own metadata to its own materialization. A single-run backfill
    step materializes many months at once, and metadata on its result is copied to every one
    of them: each month would show the last month's figures, and plots by partition draw flat."""
    for partition_key, entries in by_partition.items():
        context.add_asset_metadata(dict(entries), asset_key=asset_key, partition_key=partition_key)


def partition_row_counts(context: dg.AssetExecutionContext, rows_by_month: Mapping[str, int],
                         asset_key: dg.AssetKey | None = None) -> None:
    """``dagster/partition_row_count`` for every month the step materialized (0 for a month
    with no rows), from ``{"YYYY-MM" or partition key: rows}``."""
    counts = {str(key)[:7]: int(n) for key, n in rows_by_month.items()}
    add_partition_metadata(context, {
        key: {"dagster/partition_row_count": dg.MetadataValue.int(counts.get(key[:7], 0))}
        for key in context.partition_keys
    }, asset_key)


# What a check function returns before it becomes a Dagster AssetCheckResult: passed, the
# severity of a failure ("WARN" / "ERROR", None when it passed) and metadata with a
# "description" line.
CheckVerdict = tuple[bool, "str | None", dict[str, Any]]


def markdown_cell(value: Any) -> str:
    """A value as a Markdown table cell: floats to 4 decimals, NaN and None empty, dates as dates."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
    if hasattr(value, "strftime"):
        midnight = not any(getattr(value, part, 0) for part in ("hour", "minute", "second"))
        return value.strftime("%Y-%m-%d" if midnight else "%Y-%m-%d %H:%M:%S")
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: Sequence[str], rows: Iterable[Mapping[str, Any] | Sequence[Any]],
                   cell: Callable[[Any], str] = markdown_cell) -> str:
    """A Markdown table of ``rows`` (mappings looked up by column, or sequences in column order)."""
    lines = ["| " + " | ".join(str(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        values = [row.get(c) for c in columns] if isinstance(row, Mapping) else list(row)
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines)


def described_schema(columns: Mapping[str, tuple[str, str]]) -> dg.TableSchema:
    """``table_schema`` of ``{column: (DuckDB type, description)}``, the shape the Python-written
    tables declare their columns in."""
    return table_schema({name: kind for name, (kind, _) in columns.items()},
                        {name: text for name, (_, text) in columns.items()})


def table_schema(columns: Mapping[str, str], descriptions: Mapping[str, str] | None = None) -> dg.TableSchema:
    """A Dagster table schema from ``{column: DuckDB type [NOT NULL]}`` and descriptions."""
    return dg.TableSchema(columns=[
        dg.TableColumn(
            name=name,
            type=kind.replace(" NOT NULL", "").replace(" PRIMARY KEY", ""),
            description=(descriptions or {}).get(name),
            constraints=dg.TableColumnConstraints(nullable="NOT NULL" not in kind and "PRIMARY KEY" not in kind,
                                                  unique="PRIMARY KEY" in kind),
        )
        for name, kind in columns.items()
    ])


def layer_assets(assets, *, owner: str, layer: str):
    """``assets`` with their layer's owner and a ``layer`` tag (one place per layer): the UI
    filters and groups by both, and alerts can be routed to the owner."""
    return dg.map_asset_specs(lambda spec: spec.merge_attributes(owners=[owner], tags={"layer": layer}), assets)


def silenced_backfill_warning(build: Callable[[], Any]) -> Any:
    """Build an asset with a single-run backfill policy without Dagster's beta notice.

    The policy is what the design asks for; the notice would otherwise print every time a
    module defining such an asset is imported.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
        return build()
