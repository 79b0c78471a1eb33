"""The source layer's Definitions: the built-in project's raw deliveries multi-asset, or a
dataset project's export as ``raw/<table>``."""

import dagster as dg

from churn_assets.core.metadata import layer_assets
from churn_assets.core.project import Project
from churn_assets.source.export import DELIVERY_MONTH_COLUMN, SourcePolicy


# Who answers for this layer's assets (shown in the UI, for routing alerts).
OWNER = "team:data-engineering"


def raw_asset_keys(project: Project, source: SourcePolicy) -> list[dg.AssetKey]:
    """The raw tables this project's SQL reads as produced by the source layer."""
    if source.from_export:
        return [dg.AssetKey(["raw", source.table_name])]
    from churn_assets.source.raw_assets import RAW_ASSET_KEYS

    return list(RAW_ASSET_KEYS)


def raw_time_columns(project: Project, source: SourcePolicy) -> dict[str, str]:
    """Raw relation -> the column dating its rows, for the point-in-time check."""
    if source.from_export:
        return {source.table.lower(): DELIVERY_MONTH_COLUMN}
    from churn_assets.source.contract import RAW_TABLES

    return {f"raw.{name}": table.time_column for name, table in RAW_TABLES.items()}


def definitions_for(project: Project, source: SourcePolicy, engine: str = "duckdb") -> dg.Definitions:
    if source.from_export:
        if project.root is None:
            raise ValueError("source.file needs a dataset project folder (`churn init`)")
        from churn_assets.source.export import export_asset

        return dg.Definitions(assets=layer_assets([export_asset(source, project.root, engine)], owner=OWNER,
                                                  layer="source"))
    from churn_assets.source.raw_assets import raw_deliveries_asset

    return dg.Definitions(assets=layer_assets([raw_deliveries_asset(engine)], owner=OWNER, layer="source"))
