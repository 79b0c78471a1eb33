"""The evaluation layer's Definitions: the evaluation report and SHAP summary, their checks,
and the evaluation policy."""

import dagster as dg

from churn_assets.evaluation.assets import evaluation_asset_checks, evaluation_assets
from churn_assets.evaluation.metrics import EvaluationPolicy

defs = dg.Definitions(
    assets=evaluation_assets,
    asset_checks=evaluation_asset_checks,
    resources={"evaluation_policy": EvaluationPolicy()},
)
