"""The source layer's Definitions: the raw deliveries multi-asset."""

import dagster as dg

from churn_assets.source.raw_assets import raw_deliveries

defs = dg.Definitions(assets=[raw_deliveries])
