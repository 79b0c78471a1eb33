"""The monitoring layer's Definitions: drift and realised performance, their checks, and the
drift and retraining policies."""

import dagster as dg

from churn_assets.core.metadata import layer_assets
from churn_assets.monitoring.assets import monitoring_assets, monitoring_checks
from churn_assets.monitoring.drift import DriftPolicy
from churn_assets.monitoring.retraining import RetrainingPolicy

# Who answers for this layer's assets (shown in the UI, for routing alerts).
OWNER = "team:ml-ops"

defs = dg.Definitions(
    assets=layer_assets(monitoring_assets, owner=OWNER, layer="monitoring"),
    asset_checks=monitoring_checks,
    resources={"drift_policy": DriftPolicy(), "retraining_policy": RetrainingPolicy()},
)
