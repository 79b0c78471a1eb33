"""The monitoring layer's Definitions: drift and realised performance, their checks, and the
drift and retraining policies."""

import dagster as dg

from churn_assets.monitoring.assets import monitoring_assets, monitoring_checks
from churn_assets.monitoring.drift import DriftPolicy
from churn_assets.monitoring.retraining import RetrainingPolicy

defs = dg.Definitions(
    assets=monitoring_assets,
    asset_checks=monitoring_checks,
    resources={"drift_policy": DriftPolicy(), "retraining_policy": RetrainingPolicy()},
)
