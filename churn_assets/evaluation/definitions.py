"""The evaluation layer's Definitions: the evaluation report and SHAP summary, their checks,
and the evaluation policy."""

import dagster as dg

from churn_assets.core.metadata import layer_assets
from churn_assets.evaluation.assets import evaluation_asset_checks, evaluation_assets
from churn_assets.evaluation.metrics import EvaluationPolicy

# Who answers for this layer's assets (shown in the UI, for routing alerts).
OWNER = "team:ml"

defs = dg.Definitions(
    assets=layer_assets(evaluation_assets, owner=OWNER, layer="evaluation"),
    asset_checks=evaluation_asset_checks,
    resources={"evaluation_policy": EvaluationPolicy()},
)
