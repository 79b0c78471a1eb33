"""The code location: one Definitions object with every asset, check, sensor and resource."""

import dagster as dg

from churn_assets.resources import default_resources
from churn_assets.source.raw_assets import raw_deliveries

defs = dg.Definitions(
    assets=[raw_deliveries],
    resources=default_resources(),
)
