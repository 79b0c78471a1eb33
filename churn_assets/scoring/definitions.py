"""The scoring layer's Definitions: monthly predictions and explanations, the HTTP service's
snapshot and score log, and the scoring and serving policies."""

import dagster as dg

from churn_assets.core.metadata import layer_assets
from churn_assets.scoring.assets import scoring_assets
from churn_assets.scoring.batch import ScoringPolicy
from churn_assets.scoring.serving import ServingPolicy

# Who answers for this layer's assets (shown in the UI, for routing alerts).
OWNER = "team:ml"

defs = dg.Definitions(assets=layer_assets(scoring_assets, owner=OWNER, layer="scoring"),
                      resources={"scoring_policy": ScoringPolicy(), "serving_policy": ServingPolicy()})
