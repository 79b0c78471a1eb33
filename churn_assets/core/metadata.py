"""Standard table metadata for materializations.

Dagster 1.13 no longer exports ``TableMetadataSet`` from the top-level package, but the UI
still reads its namespaced keys (``dagster/column_schema``, ``dagster/row_count``, ...).
This helper writes exactly those keys through public metadata types.
"""

from __future__ import annotations

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
